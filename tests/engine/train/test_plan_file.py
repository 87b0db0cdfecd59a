"""The plan file: `{"plan_version": 2, "config": ..., "report": ...}`; the trainer reads the
config strictly and keeps the report as it is; flat version-1 plans and hand-written configs
still load; a run directory holds one plan file."""

from __future__ import annotations

import json
import re

import pytest
from tests._bins_fixture import sample_bins, write_plan  # noqa: F401

from finegpt_pipeline.plan import costs
from finegpt_pipeline.train import plan_file, run_dir, trainer as train
from finegpt_pipeline.plan import planner
from finegpt_pipeline.config import V1_REPORT_KEYS, TrainConfig, plan_parts
from finegpt_pipeline.hardware import get_hardware


@pytest.fixture(scope="module")
def made():
    return planner.make_plan("cpu", 1_000_000, overrides=["n_layer=1", "n_head=1", "n_embd=32",
                                                          "block_size=16", "max_iters=20"])


def _v1(plan):
    """What `finegpt plan --json` wrote before the seam: one flat object."""
    return {**plan["config"], **plan["report"], "plan_version": 1}


def test_a_plan_has_a_seam_between_config_and_report(made):
    assert set(made) == {"plan_version", "config", "report"} and made["plan_version"] == 2
    assert set(made["config"]) == set(TrainConfig().to_dict())
    assert not set(made["report"]) & set(made["config"])
    assert set(made["report"]) <= V1_REPORT_KEYS  # everything a v1 file may carry, nothing new


@pytest.mark.parametrize("shape", ["v2", "v1", "hand-written"])
def test_every_plan_shape_loads_the_same_config(made, shape, tmp_path):
    data = {"v2": made, "v1": _v1(made), "hand-written": made["config"]}[shape]
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    assert plan_file.load_plan(path) == TrainConfig.from_plan(made)
    assert plan_file.planner_report(path) == ({} if shape == "hand-written" else made["report"])
    # --max-iters re-derives the schedule from the plan's own step-time estimate in each shape
    expected = costs.reschedule(TrainConfig.from_plan(made), 7, made["report"]["est_step_seconds"])
    assert plan_file.load_plan(path, max_iters=7) == expected


def test_bad_plan_files_name_the_file_and_the_fix(made, tmp_path):
    path = tmp_path / "plan.json"
    cases = [
        ({**made, "config": {**made["config"], "n_layers": 2}}, "unknown config key"),
        ({**made, "est_hours": 1.0}, "a version-2 plan holds 'config' and 'report' objects only"),
        ({**made, "plan_version": 3}, "unknown plan_version 3"),
        ({**_v1(made), "n_layers": 2}, r"unknown config keys \['n_layers'\]"),
        ({"config": made["config"]}, 'need "plan_version": 2 beside them'),
    ]
    for data, message in cases:
        path.write_text(json.dumps(data))
        with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + message):
            plan_file.load_plan(path)


def test_a_finished_run_is_found_by_its_plan_in_either_version(made, tmp_path):
    (tmp_path / run_dir.CKPT_NAME).write_bytes(b"x")
    (tmp_path / run_dir.SUMMARY_NAME).write_text(json.dumps({"steps": made["config"]["max_iters"]}))
    for data in (made, _v1(made)):
        (tmp_path / run_dir.PLAN_NAME).write_text(json.dumps(data))
        assert run_dir.finished_run(tmp_path)["steps"] == 20
    assert plan_parts(made) == (made["config"], made["report"])


def test_a_run_directory_holds_one_plan_file(sample_bins, tmp_path):  # noqa: F811
    plan = write_plan(tmp_path / "in.json", max_iters=2, lr_decay_iters=2, warmup_iters=1,
                      eval_interval=2, eval_iters=1, checkpoint_interval=2, n_embd=16,
                      block_size=16, micro_batch=2, warnings=["kept"])
    out = tmp_path / "run"
    (out).mkdir()
    (out / "plan_estimates.json").write_text("{}")  # an older run's second plan file
    cfg = plan_file.load_plan(plan, ["seed=3"])
    train.train(cfg, sample_bins, out, mlflow=False, planner=plan_file.planner_report(plan), overwrite=True)
    assert sorted(p.name for p in out.glob("*plan*")) == ["plan.json"]
    written = json.loads((out / "plan.json").read_text())
    assert written == {"plan_version": 2, "config": cfg.to_dict(),
                       "report": {"est_hours": 0.001, "warnings": ["kept"]}}
    assert plan_file.load_plan(out / "plan.json") == cfg  # the run's plan file trains again


def test_estimate_takes_a_measured_step_time(made):
    cfg, hw = TrainConfig.from_plan(made), get_hardware("cpu")
    predicted = costs.estimate(cfg, hw, 1_000_000)
    measured = costs.estimate(cfg, hw, 1_000_000, measured_step_s=2.0)
    assert measured["est_step_seconds"] == 2.0 and predicted["est_step_seconds"] != 2.0
    assert measured["est_hours"] == pytest.approx(costs.run_seconds(cfg, 2.0) / 3600)
    assert measured["est_tokens_per_second"] == pytest.approx(cfg.tokens_per_step / 2.0)
    assert measured["energy_kwh"] == pytest.approx(hw.board_watts * measured["est_hours"] / 1000)
    same = {k for k in predicted if predicted[k] == measured[k]}
    assert {"params", "flops_per_token", "peak_memory_bytes", "tokens_total"} <= same
