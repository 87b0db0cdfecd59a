"""The planner: exact counts, memory and time estimates, sizing within budgets, the CLI."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from finegpt_pipeline.plan import planner
from finegpt_pipeline.plan import inputs as plan_data
from finegpt_pipeline.plan import costs
from finegpt_pipeline.plan.costs import param_count
from finegpt_pipeline.config import TrainConfig
from finegpt_pipeline.hardware import CATALOG
from finegpt_pipeline.model import GPT, GPTConfig

REQUIRED_KEYS = ["n_layer", "n_head", "n_embd", "block_size", "vocab_size", "micro_batch", "grad_accum",
                 "tokens_per_step", "max_iters", "params", "flops_per_token", "peak_memory_bytes",
                 "memory_budget_bytes", "est_step_seconds", "est_hours", "epochs", "energy_kwh",
                 "peak_flops", "provenance", "warnings", "learning_rate", "min_lr", "warmup_iters",
                 "lr_decay_iters", "weight_decay", "beta1", "beta2", "dropout", "bias"]


def _has_required_keys(plan):
    """A plan file: every TrainConfig field in `config`, the estimates in `report`."""
    fields = set(TrainConfig().to_dict())
    return (plan["plan_version"] == 2 and set(plan["config"]) == fields
            and all(k in (plan["config"] if k in fields else plan["report"]) for k in REQUIRED_KEYS))


@pytest.mark.parametrize("n_layer, n_head, n_embd, block, vocab, bias", [
    (1, 1, 64, 32, 50257, False), (2, 2, 128, 64, 50304, True), (4, 4, 256, 128, 50304, False),
    (6, 6, 384, 1024, 50304, False), (12, 8, 512, 1024, 50257, False), (3, 5, 320, 256, 50304, True),
    (12, 12, 768, 1024, 50257, True), (12, 12, 768, 1024, 50304, True), (10, 10, 640, 1024, 50304, False),
])
def test_param_count_equals_the_trainers_model(n_layer, n_head, n_embd, block, vocab, bias):
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = GPT(GPTConfig(block_size=block, vocab_size=vocab, n_layer=n_layer, n_head=n_head,
                              n_embd=n_embd, bias=bias))
    cfg = TrainConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block, vocab_size=vocab, bias=bias)
    assert param_count(cfg) == model.get_num_params()


def test_gpt2_small_counts():
    gpt2 = dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, bias=True)
    assert param_count(TrainConfig(**gpt2, vocab_size=50257)) == 124_439_808
    assert param_count(TrainConfig(**gpt2, vocab_size=50304)) == 124_475_904
    plan = planner.make_plan("a100-80gb", 10**9, overrides=["n_layer=12", "n_head=12", "n_embd=768",
                                                             "bias=true", "vocab_size=50257"])
    assert plan["report"]["params"] == 124_439_808


def test_memory_grows_with_batch_and_width():
    hw = CATALOG["rtx4090"]
    base = TrainConfig(n_layer=6, n_head=6, n_embd=384, block_size=1024, micro_batch=4)
    by_batch = [costs.memory_estimate(TrainConfig(**{**base.to_dict(), "micro_batch": b}), hw)["total"]
                for b in (1, 2, 4, 8)]
    by_width = [costs.memory_estimate(TrainConfig(**{**base.to_dict(), "n_embd": d, "n_head": d // 64}),
                                        hw)["total"] for d in (256, 384, 512, 768)]
    assert by_batch == sorted(by_batch) and len(set(by_batch)) == 4
    assert by_width == sorted(by_width) and len(set(by_width)) == 4
    # fp32 on CPU stores twice the activation bytes of bf16 autocast on GPU
    cpu = costs.memory_estimate(base, CATALOG["cpu"])
    gpu = costs.memory_estimate(base, hw)
    assert cpu["activations"] == 2 * gpu["activations"]


@pytest.mark.parametrize("key", sorted(CATALOG))
def test_no_plan_exceeds_its_budget_and_plans_round_trip(key):
    for hours in (0.5, 12.0, 200.0):
        for tokens in (216_000, 10**9):
            plan = planner.make_plan(key, tokens, hours=hours)
            assert plan["report"]["peak_memory_bytes"] <= plan["report"]["memory_budget_bytes"] <= CATALOG[key].memory_bytes
            assert plan["report"]["tokens_per_step"] == plan["config"]["micro_batch"] * plan["config"]["grad_accum"] * plan["config"]["block_size"]
            assert plan["report"]["est_hours"] <= hours * 1.05
            assert plan["config"]["n_embd"] % 64 == 0 and plan["config"]["n_embd"] // plan["config"]["n_head"] == 64
            cfg = TrainConfig.from_plan(json.loads(json.dumps(plan)))
            assert cfg.max_iters == plan["config"]["max_iters"]
            assert cfg.peak_flops == (CATALOG[key].peak_flops if CATALOG[key].kind == "gpu" else 0)
            assert _has_required_keys(plan)


def test_more_time_or_memory_never_plans_a_smaller_model():
    small = planner.make_plan("rtx4070", 10**9, hours=2)
    long = planner.make_plan("rtx4070", 10**9, hours=48)
    big = planner.make_plan("h100-sxm", 10**9, hours=48)
    assert small["report"]["params"] <= long["report"]["params"] <= big["report"]["params"]
    assert small["report"]["params"] < big["report"]["params"]
    # a long budget reaches Chinchilla's ~20 tokens/param
    assert long["report"]["tokens_per_param"] >= 19


def test_gpt2_small_scale_uses_about_half_a_million_tokens_per_step():
    plan = planner.make_plan("h100-sxm", 10**10, hours=100,
                             overrides=["n_layer=12", "n_head=12", "n_embd=768"])
    assert 2**18 <= plan["report"]["tokens_per_step"] <= 2**20
    assert plan["config"]["learning_rate"] == pytest.approx(6e-4, rel=0.05)
    assert plan["config"]["min_lr"] == pytest.approx(plan["config"]["learning_rate"] / 10)
    assert plan["config"]["lr_decay_iters"] == plan["config"]["max_iters"]


def test_cpu_plan_is_a_tiny_model_that_trains_in_minutes():
    plan = planner.make_plan("cpu", 194_000)  # the 300-doc sample's train split, roughly
    assert plan["config"]["n_layer"] <= 4 and plan["config"]["n_embd"] <= 128 and plan["config"]["block_size"] <= 128
    assert plan["config"]["dtype"] == "float32" and plan["report"]["est_hours"] <= 3 / 60
    assert 10 <= plan["config"]["max_iters"] <= 500
    # the minutes are the plan's own arithmetic: its steps at its step time, plus the evals
    # (how well that step time matches a measured one is bench/plan_calibration.py's job, not a
    # timed test's)
    steps_s = plan["config"]["max_iters"] * plan["report"]["est_step_seconds"]
    assert steps_s <= plan["report"]["est_hours"] * 3600 <= 1.25 * steps_s


def test_overrides_are_honoured_and_over_budget_is_refused():
    plan = planner.make_plan("rtx4090", 10**9, overrides=["block_size=256", "n_layer=4", "max_iters=123"])
    assert (plan["config"]["block_size"], plan["config"]["n_layer"], plan["config"]["max_iters"]) == (256, 4, 123)
    with pytest.raises(ValueError, match="exceeds the budget"):
        planner.make_plan("rtx4070", 10**9, overrides=["n_layer=24", "n_embd=1024", "n_head=16",
                                                       "micro_batch=64"])
    with pytest.raises(ValueError, match="unknown config key"):
        planner.make_plan("cpu", 10**6, overrides=["n_layers=4"])


def test_epochs_beyond_four_warn():
    plan = planner.make_plan("cpu", 50_000, overrides=["max_iters=200"])
    assert plan["report"]["epochs"] > 4
    assert any("epochs" in w for w in plan["report"]["warnings"])


def test_long_runs_checkpoint_every_half_hour_unless_told():
    plan = planner.make_plan(preset="rtx4070-one-shard", strict=False)
    assert plan["config"]["max_iters"] == 250_000
    interval_s = plan["config"]["checkpoint_interval"] * plan["report"]["est_step_seconds"]
    assert 0.9 * costs.CHECKPOINT_EVERY_S <= interval_s <= costs.CHECKPOINT_EVERY_S
    told = planner.make_plan(preset="rtx4070-one-shard", overrides=["checkpoint_interval=5000"],
                             strict=False)
    assert told["config"]["checkpoint_interval"] == 5000
    short = planner.make_plan("cpu", 10**6)  # minutes long: five checkpoints, as before
    assert short["config"]["checkpoint_interval"] == -(-short["config"]["max_iters"] // 5)


def test_calibration_by_default_only_for_a_detected_gpu():
    from finegpt_pipeline.plan.calibrate import wants_calibration

    detected = {"report": {"hardware": {"kind": "gpu", "detected": True}}}
    assert wants_calibration(None, detected)
    assert not wants_calibration(None, {"report": {"hardware": {"kind": "gpu", "detected": False}}})
    assert not wants_calibration(None, {"report": {"hardware": {"kind": "cpu", "detected": True}}})
    assert not wants_calibration(False, detected)
    assert wants_calibration(True, planner.make_plan("cpu", 10**6))


def test_tokens_from_bins_reads_meta_and_names_bad_files(tmp_path):
    (tmp_path / "meta.json").write_text(json.dumps({"train_tokens": 1234, "val_tokens": 56}))
    assert plan_data.tokens_from_bins(tmp_path) == 1234
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing" / "meta.json")):
        plan_data.tokens_from_bins(tmp_path / "missing")
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(ValueError, match="meta.json: not valid JSON"):
        plan_data.tokens_from_bins(tmp_path)
    with pytest.raises(ValueError, match="train_tokens"):
        plan_data.tokens_from_meta({"val_tokens": 3})


def test_calibration_on_cpu_measures_step_time_only(finegpt_home):
    from finegpt_pipeline.plan.calibrate import calibrate_plan

    plan = planner.make_plan("cpu", 100_000, overrides=["n_layer=2", "n_head=1", "n_embd=64",
                                                        "block_size=32", "max_iters=20"])
    mb = plan["config"]["micro_batch"]
    calibrated = calibrate_plan(plan, device="cpu", steps=1)
    probes = calibrated["report"]["calibration"]["probes"]
    assert [p["micro_batch"] for p in probes] == [mb, 2 * mb]
    assert all(p["fwd_bwd_seconds"] > 0 and p["max_memory_allocated"] is None for p in probes)
    assert calibrated["report"]["provenance"]["est_step_seconds"].startswith("measured 20")
    assert calibrated["report"]["provenance"]["peak_memory_bytes"] == "estimated"
    assert calibrated["config"]["micro_batch"] == mb
    expected = calibrated["config"]["grad_accum"] * probes[0]["fwd_bwd_seconds"] + probes[0]["optimizer_seconds"]
    assert calibrated["report"]["est_step_seconds"] == pytest.approx(expected)
    assert calibrated["report"]["calibration"]["predicted"]["est_step_seconds"] == pytest.approx(plan["report"]["est_step_seconds"])
    TrainConfig.from_plan(calibrated)


def test_calibration_keeps_what_the_user_fixed(finegpt_home):
    from finegpt_pipeline.plan.calibrate import calibrate_plan

    plan = planner.make_plan("cpu", 100_000, hours=0.01, overrides=[
        "n_layer=2", "n_head=1", "n_embd=64", "block_size=32", "micro_batch=2", "grad_accum=3",
        "eval_interval=7"])
    assert plan["report"]["fixed_fields"]["micro_batch"] == 2
    calibrated = calibrate_plan(plan, device="cpu", steps=1)
    # a fixed micro-batch is measured, not searched; the time refit leaves fixed fields alone
    assert [p["micro_batch"] for p in calibrated["report"]["calibration"]["probes"]] == [2]
    assert (calibrated["config"]["micro_batch"], calibrated["config"]["grad_accum"], calibrated["config"]["eval_interval"]) == (2, 3, 7)
    assert calibrated["report"]["fixed_fields"] == plan["report"]["fixed_fields"]


def _cli(argv):
    parser = argparse.ArgumentParser()
    planner.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["plan", *argv])
    return args.func(args)


def test_cli_json_and_bins(tmp_path, capsys):
    (tmp_path / "meta.json").write_text(json.dumps({"train_tokens": 194_000, "val_tokens": 20_000}))
    out = tmp_path / "plan.json"
    assert _cli(["--gpu", "cpu", "--bins", str(tmp_path), "--json", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["report"]["tokens_available"] == 194_000
    assert json.loads(out.read_text()) == printed
    assert _has_required_keys(printed)
    assert _cli(["--gpu", "rtx4090", "--tokens", "1e9", "--hours", "24"]) == 0
    report = capsys.readouterr().out
    assert "| Parameters |" in report and "RTX 4090" in report


def test_tokens_per_param_goal_without_hours():
    plan = planner.make_plan("h100-sxm", 10**9, tokens_per_param=20)
    assert plan["report"]["goal"] == "tokens_per_param" and plan["report"]["hours_budget"] is None
    assert plan["report"]["tokens_per_param"] == pytest.approx(20, rel=0.1)
    assert plan["report"]["epochs"] <= 4.0 + 1e-9


def test_finegpt_cli_entry_point_and_clean_errors(monkeypatch, tmp_path, capsys):
    from finegpt_pipeline import cli

    # only this stage: the other stage modules are developed elsewhere
    monkeypatch.setattr(cli, "STAGE_MODULES", ["finegpt_pipeline.plan.planner"])
    assert cli.main(["plan", "--gpu", "cpu", "--tokens", "2e5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["report"]["hardware"]["key"] == "cpu"
    assert cli.main(["plan", "--gpu", "cpu", "--bins", str(tmp_path)]) == 2
    assert f"{tmp_path / 'meta.json'}: no meta.json (bins missing or incomplete" in capsys.readouterr().err
    assert cli.main(["plan", "--gpu", "gtx480"]) == 2
    assert "unknown GPU 'gtx480'" in capsys.readouterr().err


def _fake_cuda_probe(fixed_bytes, per_sample, oom_above=10**9):
    """Stands in for a CUDA probe: allocated memory linear in the micro-batch, OOM above a size."""
    def probe(cfg, device, micro_batch, steps=3):
        if micro_batch > oom_above:
            raise torch.cuda.OutOfMemoryError("fake OOM")
        return {"micro_batch": micro_batch, "fwd_bwd_seconds": 0.01 * micro_batch,
                "optimizer_seconds": 0.005, "max_memory_allocated": int(fixed_bytes + per_sample * micro_batch)}
    return probe


def test_calibration_memory_search_on_cuda_measurements(monkeypatch, finegpt_home):
    from finegpt_pipeline.plan import calibrate

    plan = planner.make_plan("rtx4070", 10**9, overrides=["n_layer=12", "n_head=12", "n_embd=768"])
    sequences = plan["report"]["tokens_per_step"] // plan["config"]["block_size"]
    plan["config"].update(micro_batch=16, grad_accum=sequences // 16)  # the planned tokens/step
    limit = calibrate.SAFETY * plan["report"]["memory_budget_bytes"]
    # 16 does not fit, 8 does: halved, and the probe at 16 (no OOM, over budget) keeps it at 8
    per_sample = (limit - 2**30) / 12
    monkeypatch.setattr(calibrate, "probe", _fake_cuda_probe(2**30, per_sample))
    out = calibrate.calibrate_plan(plan, device="cuda", steps=1)
    assert [p["micro_batch"] for p in out["report"]["calibration"]["probes"]] == [16, 8, 16]
    assert out["config"]["micro_batch"] == 8
    assert out["report"]["peak_memory_bytes"] == calibrate.measured_peak(int(2**30 + 8 * per_sample))
    assert out["report"]["peak_memory_bytes"] <= out["report"]["memory_budget_bytes"]
    assert out["report"]["provenance"]["peak_memory_bytes"].startswith("measured")
    assert out["report"]["tokens_per_step"] == pytest.approx(plan["report"]["tokens_per_step"], rel=0.5)

    # plenty of room: the line through two probes lets the micro-batch grow past them
    plan["config"].update(micro_batch=2, grad_accum=sequences // 2)
    monkeypatch.setattr(calibrate, "probe", _fake_cuda_probe(2**30, 2**20))
    out = calibrate.calibrate_plan(plan, device="cuda", steps=1)
    assert out["config"]["micro_batch"] == plan["report"]["tokens_per_step"] // plan["config"]["block_size"]
    assert out["config"]["grad_accum"] == 1 and out["report"]["provenance"]["peak_memory_bytes"].startswith("fitted")

    # not even one sequence fits: a clear error, no plan
    monkeypatch.setattr(calibrate, "probe", _fake_cuda_probe(limit, 2**20, oom_above=4))
    with pytest.raises(ValueError, match="at micro_batch 1, over the .* budget; plan a smaller model"):
        calibrate.calibrate_plan(plan, device="cuda", steps=1, remeasure=True)


def _proportionate(plan):
    return 32 <= plan["config"]["n_embd"] / plan["config"]["n_layer"] <= 96


def test_a_fixed_layer_count_outside_the_table_is_searched_around():
    plan = planner.make_plan("a100-80gb", 10**9, overrides=["n_layer=7"])
    assert plan["config"]["n_layer"] == 7 and _proportionate(plan)
    assert plan["config"]["n_embd"] % plan["config"]["n_head"] == 0 and plan["config"]["n_embd"] // plan["config"]["n_head"] == 64


def test_a_fixed_head_count_searches_widths_it_divides():
    plan = planner.make_plan("h100-sxm", 10**9, overrides=["n_head=12"])
    assert plan["config"]["n_head"] == 12 and plan["config"]["n_embd"] % 12 == 0 and _proportionate(plan)
    odd = planner.make_plan("cpu", 10**6, overrides=["n_head=13"])  # no table width divides by 13
    assert odd["config"]["n_head"] == 13 and odd["config"]["n_embd"] % 13 == 0
    TrainConfig.from_plan(odd)
    # what the user fixed is still checked, alone and together, before any search
    with pytest.raises(ValueError, match=r"n_embd \(128\) must be divisible by n_head \(12\)"):
        planner.make_plan("h100-sxm", 10**9, overrides=["n_head=12", "n_embd=128"])
    with pytest.raises(ValueError, match="n_head must be >= 1"):
        planner.make_plan("h100-sxm", 10**9, overrides=["n_head=0"])


def test_a_fixed_width_keeps_gpt_like_depth_and_gets_dividing_heads():
    plan = planner.make_plan("h100-sxm", 10**10, hours=12, overrides=["n_embd=768"])
    assert plan["config"]["n_embd"] == 768 and _proportionate(plan)  # was 48 x 768
    odd = planner.make_plan("cpu", 10**6, overrides=["n_embd=200"])  # 200 // 64 = 3 heads do not divide
    assert odd["config"]["n_embd"] == 200 and 200 % odd["config"]["n_head"] == 0 and _proportionate(odd)
    both = planner.make_plan("h100-sxm", 10**9, overrides=["n_embd=768", "n_layer=48"])
    assert (both["config"]["n_layer"], both["config"]["n_embd"]) == (48, 768)  # both fixed: exactly as told


def _bins(directory, train_tokens, val_tokens):
    import numpy as np

    directory.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", train_tokens), ("val", val_tokens)):
        np.zeros(n, dtype=np.uint16).tofile(directory / f"{split}.bin")
    (directory / "meta.json").write_text(json.dumps({"train_tokens": train_tokens, "val_tokens": val_tokens,
                                                     "vocab_size": 50257}))
    return directory


@pytest.mark.parametrize("key", sorted(CATALOG))
def test_every_plan_trains_on_the_bins_it_was_made_for(key, tmp_path, capsys):
    """The shared sample's bins (215,639 train / 451 val tokens): the trainer's own check."""
    from finegpt_pipeline.train.batches import Bins

    bins = _bins(tmp_path / "bins", 215_639, 451)
    assert _cli(["--gpu", key, "--bins", str(bins), "--json", "--no-calibrate"]) == 0
    plan = json.loads(capsys.readouterr().out)
    Bins(bins).check(plan["config"]["block_size"], plan["config"]["vocab_size"])  # was block 1024 on every GPU
    assert plan["config"]["block_size"] + 1 <= 451 and plan["report"]["val_tokens"] == 451
    # one evaluation reads the val split about once, not 20 x 64 windows of it
    assert (plan["config"]["eval_iters"] - 1) * plan["config"]["micro_batch"] * plan["config"]["block_size"] < 451
    roomy = planner.make_plan(key, 215_639, val_tokens=21_790)  # the ~10 % val split
    assert roomy["config"]["block_size"] == planner.DEFAULT_BLOCK[CATALOG[key].kind]


def test_a_fixed_block_the_bins_cannot_hold_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"block_size 1024 needs 1,025 tokens in each split but the bins "
                                         r"hold 215,639 train / 451 val: set block_size <= 450"):
        planner.make_plan("h100-sxm", 215_639, val_tokens=451, overrides=["block_size=1024"])
    with pytest.raises(ValueError, match="too few for one training window"):
        planner.make_plan("cpu", 215_639, val_tokens=1)


def test_an_unreachable_tokens_per_param_goal_is_said():
    plan = planner.make_plan("cpu", 194_000, tokens_per_param=20)  # 4 epochs of 194k < 20 x 3.3 M
    assert plan["report"]["tokens_per_param"] < 1
    warning = next(w for w in plan["report"]["warnings"] if "tokens/param" in w)
    assert "goal of 20 tokens/param cannot be met" in warning and "the smallest model that fits" in warning
    assert "tokens of data" in warning
    fixed = planner.make_plan("h100-sxm", 10**9, tokens_per_param=20, overrides=["max_iters=10"])
    assert any("max_iters=10 (fixed)" in w for w in fixed["report"]["warnings"])
    met = planner.make_plan("h100-sxm", 10**9, tokens_per_param=20)
    assert not any("tokens/param" in w for w in met["report"]["warnings"])
