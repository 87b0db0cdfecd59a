"""Reproducible plans: a machine is measured once (kept under FINEGPT_HOME/hardware), so the
same inputs give the same plan, byte for byte, and an unchanged pipeline re-run reuses it."""

from __future__ import annotations

import json

import pytest

from finegpt_pipeline.plan import planner
from finegpt_pipeline.plan.calibrate import calibrate_plan
from finegpt_pipeline.hardware import detect_cpu, machine_id, machine_identity

SAMPLE = {"train_tokens": 215_639, "val_tokens": 451}  # the shared sample's bins


def _measurement_files(home):
    return sorted((home / "hardware").glob("*/*.json"))


def test_the_cpu_is_measured_once_per_machine_and_remeasured_on_request(finegpt_home):
    first = detect_cpu()
    assert detect_cpu() == first  # was re-measured: 135.2 then 133.3 GFLOP/s
    [path] = _measurement_files(finegpt_home)
    assert path.parent.name == first.machine_id == machine_id(machine_identity())
    record = json.loads(path.read_text())
    assert record["result"]["flops"] == first.peak_flops
    assert record["result"]["measured_at"] == first.measured_at and first.measured_at.startswith("20")
    assert record["identity"]["cpu_count"] >= 1 and "measured_on" in record
    fresh = detect_cpu(remeasure=True)
    assert fresh.peak_flops != first.peak_flops  # a new measurement (timings never repeat exactly)
    assert detect_cpu() == fresh and _measurement_files(finegpt_home) == [path]


def test_the_machine_id_names_the_hardware_not_the_host(monkeypatch):
    import socket

    before = machine_id(machine_identity())
    monkeypatch.setattr(socket, "gethostname", lambda: "another-container")
    assert machine_id(machine_identity()) == before  # a new container keeps its measurements


def test_a_damaged_measurement_names_its_file_and_the_fix(finegpt_home):
    detect_cpu()
    [path] = _measurement_files(finegpt_home)
    path.write_text("{half")
    with pytest.raises(ValueError, match=f"{path}: unreadable hardware measurement .*--remeasure"):
        detect_cpu()
    assert detect_cpu(remeasure=True).peak_flops > 0
    assert detect_cpu().peak_flops == json.loads(path.read_text())["result"]["flops"]


def test_same_inputs_give_byte_identical_plans(finegpt_home):
    plans = [planner.make_plan("detect", SAMPLE["train_tokens"], val_tokens=SAMPLE["val_tokens"])
             for _ in range(2)]
    first, second = (json.dumps(p, sort_keys=True) for p in plans)
    assert first == second  # was: max_iters 37 -> 36, tokens/step 4,096 -> 3,072
    hw = plans[0]["report"]["hardware"]
    if hw["kind"] == "cpu":
        assert plans[0]["report"]["provenance"]["peak_flops"].startswith(f"measured {hw['measured_at']} on {hw['machine_id']}")


def test_calibration_reuses_this_machines_probes(finegpt_home):
    plan = planner.make_plan("cpu", 100_000, overrides=["n_layer=1", "n_head=1", "n_embd=32",
                                                        "block_size=16", "max_iters=20"])
    first = calibrate_plan(plan, device="cpu", steps=1)
    assert json.dumps(calibrate_plan(plan, device="cpu", steps=1), sort_keys=True) == json.dumps(
        first, sort_keys=True)
    when, machine = first["report"]["calibration"]["probes"][0]["measured_at"], machine_id(machine_identity())
    assert first["report"]["provenance"]["est_step_seconds"] == f"measured {when} on {machine}"
    assert first["report"]["measured"]["machine_id"] == machine
    fresh = calibrate_plan(plan, device="cpu", steps=1, remeasure=True)
    assert fresh["report"]["calibration"]["probes"][0]["fwd_bwd_seconds"] != first["report"]["calibration"]["probes"][0]["fwd_bwd_seconds"]


def test_an_unchanged_rerun_of_training_config_reuses_its_plan_file(finegpt_home):
    import dagster as dg

    from assets.planning import training_config
    from assets.resources import FineGPTHome

    @dg.asset(name="tokenized_bins")
    def tokenized_bins() -> dict:  # test-only stand-in for the data stage's output
        return {"dir": "/bins/sample", **SAMPLE}

    outputs = []
    for _ in range(2):
        result = dg.materialize([tokenized_bins, training_config], resources={"finegpt_home": FineGPTHome()},
                                run_config={"ops": {"training_config": {"config": {"gpu": "detect"}}}})
        outputs.append(result.output_for_node("training_config"))
    assert outputs[0] == outputs[1]
    assert len(list((finegpt_home / "plans").glob("plan-*.json"))) == 1  # same digest, same file
    assert outputs[0]["config"]["block_size"] + 1 <= SAMPLE["val_tokens"]


def test_training_config_shares_the_gpu_pool_with_training():
    from assets.planning import training_config
    from assets.training import trained_checkpoint

    assert training_config.op.pool == trained_checkpoint.op.pool == "gpu"


def test_calibration_probes_the_compiled_program_when_the_plan_compiles():
    """The trainer compiles when the plan says so (CUDA by default): the probe then times the
    compiled model, built by runtime.wrap_model, not an eager stand-in. Inductor's CPU backend
    runs it here on a tiny model."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from finegpt_pipeline.plan.calibrate import probe
    from finegpt_pipeline.config import TrainConfig

    cfg = TrainConfig(n_layer=1, n_head=1, n_embd=32, block_size=16, vocab_size=50304, compile="true")
    counters.clear()
    compiled = probe(cfg, "cpu", 2, steps=1)
    assert counters["stats"]["unique_graphs"] >= 1 and compiled["compile"] is True
    counters.clear()
    eager = probe(TrainConfig(**{**cfg.to_dict(), "compile": "auto"}), "cpu", 2, steps=1)  # CPU: eager
    assert counters["stats"]["unique_graphs"] == 0 and eager["compile"] is False
    torch._dynamo.reset()
