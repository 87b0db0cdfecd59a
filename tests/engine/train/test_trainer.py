"""The trainer learns, and rejects bad configs before any training starts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
import torch

from tests._bins_fixture import (child_env, heldout_unigram_nats, make_bins, sample_bins,  # noqa: F401
                           unigram_entropy_nats, write_plan)
from finegpt_pipeline.train import plan_file, trainer as train
from finegpt_pipeline.config import TrainConfig


def test_lr_schedule_warms_up_then_decays_to_min():
    cfg = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, lr_decay_iters=100)
    lrs = [train.lr_at(i, cfg) for i in range(120)]
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))  # warmup rises
    assert lrs[10] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[10:100], lrs[11:101]))  # cosine falls
    assert lrs[100] == lrs[119] == pytest.approx(1e-4)


@pytest.mark.slow
def test_tiny_model_beats_unigram_entropy_on_held_out_documents(sample_bins, tmp_path):
    """The issue's learning criterion on 30 held-out documents: val loss below the unigram
    entropy of the training tokens (7.37 nats), and well below the best frequency-only predictor
    on the same val tokens (7.79; 8% of them never occur in the 270 training documents and cost
    ~13 nats each, so even a count-based bigram model reaches only 7.14). 2 M tokens, ~15
    minutes on 2 CPU cores, so it runs on demand (`make test-slow`), not in the default suite;
    docs/training.md has its latest result and the runs that show fewer steps do not clear the
    bar reliably."""
    entropy = unigram_entropy_nats(sample_bins / "train.bin")
    unigram = heldout_unigram_nats(sample_bins / "train.bin", sample_bins / "val.bin")
    steps = 2000
    plan = write_plan(tmp_path / "plan.json", n_embd=64, block_size=64, micro_batch=16,
                      dropout=0.1, learning_rate=1e-2, min_lr=1e-3, warmup_iters=20,
                      max_iters=steps, lr_decay_iters=steps, eval_interval=steps, eval_iters=28,
                      log_interval=100, checkpoint_interval=steps)
    summary = train.train(plan_file.load_plan(plan), sample_bins, tmp_path / "run", mlflow=False)
    assert summary["steps"] == steps and summary["tokens_seen"] == steps * 16 * 64
    val = summary["final_val_loss"]
    assert val < unigram - 0.3, (val, unigram)
    assert val < entropy - 0.05, (val, entropy)  # seeds measured: 0.10-0.14 below
    assert (tmp_path / "run" / "ckpt.pt").exists()


def test_tiny_model_learns_context_on_one_document(sample_shard, tmp_path):
    """Fast learning check for every run: loss below the unigram entropy of the training tokens
    is out of reach of any predictor that ignores context, so getting there on one real document
    (many epochs) shows that model, loss, data windows and optimizer learn together. Small models
    sit on a plateau at the unigram entropy before they escape it, so the learning rate stays
    high (min_lr = learning_rate). The held-out version above takes ~15 minutes."""
    bins = make_bins(sample_shard, tmp_path / "bins", max_docs=2, val_every=2)
    entropy = unigram_entropy_nats(bins / "train.bin")
    plan = write_plan(tmp_path / "plan.json", n_embd=64, block_size=32, micro_batch=8,
                      learning_rate=1e-2, min_lr=1e-2, max_iters=200, lr_decay_iters=200,
                      warmup_iters=10, eval_interval=200, eval_iters=2, log_interval=10,
                      checkpoint_interval=200)
    torch.manual_seed(0)
    train.train(plan_file.load_plan(plan), bins, tmp_path / "run", mlflow=False)
    history = json.loads((tmp_path / "run" / "summary.json").read_text())["history"]
    late_train_loss = sum(row["train_loss"] for row in history[-3:]) / 3
    assert late_train_loss < entropy - 0.5, (late_train_loss, entropy)


@pytest.mark.parametrize("fields, message", [
    ({"n_embd": 30, "n_head": 4}, "divisible by n_head"),
    ({"n_layers": 2}, "unknown config keys ['n_layers']"),
    ({"block_size": 1_000_000}, "fewer than block_size + 1"),
    ({"dtype": "float8"}, "dtype must be"),
])
def test_bad_config_fails_before_training(sample_bins, tmp_path, fields, message):
    plan = write_plan(tmp_path / "plan.json", **fields)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=re.escape(message)):
        train.train(plan_file.load_plan(plan), sample_bins, tmp_path / "run", mlflow=False)
    assert time.perf_counter() - start < 5  # rejected up front, not after a training step
    assert not (tmp_path / "run" / "ckpt.pt").exists()


def test_cli_reports_bad_plan_in_one_line(sample_bins, tmp_path):
    plan = write_plan(tmp_path / "plan.json", n_embd=30, n_head=4)
    proc = subprocess.run(
        [sys.executable, "-m", "finegpt_pipeline.train", "--bins", str(sample_bins),
         "--plan", str(plan), "--out", str(tmp_path / "run"), "--no-mlflow"],
        capture_output=True, text=True, env=child_env(), timeout=60)
    assert proc.returncode == 2
    assert "n_embd (30) must be divisible by n_head (4)" in proc.stderr
    assert str(plan) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_bins_named_in_error(tmp_path):
    plan = write_plan(tmp_path / "plan.json")
    with pytest.raises(FileNotFoundError, match="bins directory not found"):
        train.train(plan_file.load_plan(plan), tmp_path / "nope", tmp_path / "run", mlflow=False)


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "meta.json").write_text("{half written"), "meta.json: not valid JSON"),
    (lambda d: (d / "val.bin").write_bytes(b"\x01\x02\x03"), "val.bin: odd byte size"),
    (lambda d: (d / "train.bin").unlink(), "train.bin: missing"),
])
def test_damaged_bins_named_in_error(sample_bins, tmp_path, damage, message):
    import shutil

    bins = shutil.copytree(sample_bins, tmp_path / "bins")
    damage(bins)
    plan = write_plan(tmp_path / "plan.json")
    with pytest.raises((ValueError, FileNotFoundError), match=re.escape(str(bins / message))):
        train.train(plan_file.load_plan(plan), bins, tmp_path / "run", mlflow=False)


def test_set_overrides_and_report_keys(tmp_path):
    plan = write_plan(tmp_path / "plan.json", tokens_per_step=128, warnings=["x"])
    cfg = plan_file.load_plan(plan, ["n_layer=3", "learning_rate=5e-4"])
    assert (cfg.n_layer, cfg.learning_rate) == (3, 5e-4)
    with pytest.raises(ValueError, match="unknown config key 'nlayer'"):
        plan_file.load_plan(plan, ["nlayer=3"])
    assert json.loads(plan.read_text())["warnings"] == ["x"]


def _tiny(tmp_path, name="plan.json", **fields):
    base = dict(max_iters=2, lr_decay_iters=2, warmup_iters=1, eval_interval=2, eval_iters=1,
                checkpoint_interval=2, log_interval=1, n_embd=16, block_size=16, micro_batch=2)
    return write_plan(tmp_path / name, **{**base, **fields})


def test_fresh_run_into_an_out_that_holds_a_run_is_refused(sample_bins, tmp_path):
    out = tmp_path / "run"
    train.train(plan_file.load_plan(_tiny(tmp_path, max_iters=3, lr_decay_iters=3)), sample_bins, out,
                mlflow=False)
    before = {name: (out / name).read_bytes() for name in ("ckpt.pt", "train_log.jsonl")}
    short = plan_file.load_plan(_tiny(tmp_path, "short.json"))
    with pytest.raises(ValueError, match=re.escape(f"{out}: already holds a run (ckpt.pt, "
                                                   "summary.json, train_log.jsonl); pass --resume")):
        train.train(short, sample_bins, out, mlflow=False)
    assert {name: (out / name).read_bytes() for name in before} == before
    # --overwrite starts over: one run's checkpoint and log, not two mixed
    train.train(short, sample_bins, out, mlflow=False, overwrite=True)
    assert torch.load(out / "ckpt.pt", weights_only=True)["iter_num"] == 2
    steps = [row["step"] for row in map(json.loads, (out / "train_log.jsonl").read_text().splitlines())]
    assert steps == [0, 1, 2, 2]  # val at 0, train 1, 2, val at 2


def test_refused_resume_leaves_the_out_dir_as_it_was(sample_bins, tmp_path):
    out = tmp_path / "run"
    train.train(plan_file.load_plan(_tiny(tmp_path)), sample_bins, out, mlflow=False,
                planner={"est_hours": 0.5})
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other_model = plan_file.load_plan(_tiny(tmp_path, "wide.json", n_embd=32))
    with pytest.raises(ValueError, match="differs from the plan's"):
        train.train(other_model, sample_bins, out, resume=True, mlflow=False,
                    planner={"est_hours": 9.0})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_max_iters_keeps_the_plans_schedule_as_the_planner_derives_it(tmp_path):
    from finegpt_pipeline.plan import costs
    from finegpt_pipeline.plan import planner

    made = planner.make_plan("cpu", 10_000_000, hours=0.05, overrides=["max_iters=80"])
    assert made["config"]["max_iters"] == 80
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(made))
    short = plan_file.load_plan(path, max_iters=12)
    # what `finegpt plan --set max_iters=12` plans, schedule fields included
    replanned = planner.make_plan("cpu", 10_000_000, hours=0.05, overrides=["max_iters=12"])
    assert short == TrainConfig.from_plan(replanned)
    assert short == costs.reschedule(plan_file.load_plan(path), 12, made["report"]["est_step_seconds"])
    assert short.lr_decay_iters == 12 and train.lr_at(12, short) == short.min_lr
    longer = plan_file.load_plan(path, max_iters=200)
    assert longer.lr_decay_iters == 200  # no steps at min_lr after the plan's end
    # explicit flags win over the re-derived cadence; fields fixed when planning stay fixed
    assert plan_file.load_plan(path, ["eval_interval=3"], max_iters=12).eval_interval == 3
    fixed = {"max_iters": 80, "warmup_iters": 7}
    path.write_text(json.dumps({**made, "report": {**made["report"], "fixed_fields": fixed}}))
    assert plan_file.load_plan(path, max_iters=12).warmup_iters == 7
    with pytest.raises(ValueError, match=re.escape(f"{path}: --max-iters must be >= 1")):
        plan_file.load_plan(path, max_iters=0)


def test_binary_plan_is_a_one_line_error_and_leaves_nothing(sample_bins, tmp_path):
    plan = tmp_path / "plan.bin"
    plan.write_bytes(b"\x80\x04\x95\x00\xff" * 50)
    proc = subprocess.run(
        [sys.executable, "-m", "finegpt_pipeline.train", "--bins", str(sample_bins),
         "--plan", str(plan), "--out", str(tmp_path / "run"), "--no-mlflow"],
        capture_output=True, text=True, env=child_env(), timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"finegpt train: error: {plan}: not a plan (binary, not UTF-8 JSON text); pass the "
        "JSON that `finegpt plan --json` writes"]
    assert not (tmp_path / "run").exists()


def test_hand_run_tracks_in_the_default_store_and_names_the_bins_it_read(
        sample_bins, tmp_path, monkeypatch):
    import shutil

    import mlflow

    home = tmp_path / "home"
    monkeypatch.setenv("FINEGPT_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    copy = shutil.copytree(sample_bins, tmp_path / "other_bins")  # same bytes, another place
    cfg = plan_file.load_plan(_tiny(tmp_path))
    first = train.train(cfg, sample_bins, tmp_path / "a")
    second = train.train(cfg, copy, tmp_path / "b")
    assert (home / "mlflow.db").exists()
    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    for summary, bins in ((first, sample_bins), (second, copy)):
        run = mlflow.get_run(summary["mlflow_run_id"])
        sources = {d.dataset.name: json.loads(d.dataset.source)["uri"]
                   for d in run.inputs.dataset_inputs}
        assert sources == {f"tokenized_bins/{split}": str(bins.resolve() / f"{split}.bin")
                           for split in ("train", "val")}
        # by hand, without Dagster: a top-level run, no Dagster tags
        assert not [k for k in run.data.tags if k.startswith("dagster.") or k == "mlflow.parentRunId"]
    assert train.train(cfg, copy, tmp_path / "c", mlflow=False)["mlflow_run_id"] is None


def test_each_eval_says_how_it_is_going_and_the_end_sets_forecasts_against_the_final(
        sample_bins, tmp_path, monkeypatch, capsys):
    import mlflow

    from finegpt_pipeline.train import curve_forecast

    monkeypatch.setenv("FINEGPT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = plan_file.load_plan(_tiny(tmp_path, max_iters=12, lr_decay_iters=12, eval_interval=1,
                                     checkpoint_interval=12, learning_rate=1e-2))
    summary = train.train(cfg, sample_bins, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    # what the forecast said at the last eval within 25/50/75 % of the steps, and the final
    rows = saved["curve_forecasts"]
    assert rows == summary["curve_forecasts"] == curve_forecast.at_fractions(
        saved["val_history"], cfg, saved["final_val_loss"])
    assert [(r["at_fraction"], r["step"]) for r in rows] == [(0.25, 3), (0.5, 6), (0.75, 9)]
    assert rows[0]["forecast"] is None and rows[0]["note"] == "not enough evals yet (3 of 4 to fit)"
    assert rows[2]["forecast"] is not None and rows[2]["se"] > 0
    assert all(r["final"] == saved["final_val_loss"] for r in rows)
    # each eval's numbers: progress, time left (measured steps), the forecast where supported
    rows = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text()
            .splitlines()]
    evals = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in evals] == list(range(13))
    assert [r["progress/fraction"] for r in evals] == [s / 12 for s in range(13)]
    # tokens_seen once per step: from the log row, else the eval's (MLflow's charts against a
    # metric pair points by index, so a second value at a step would shift the curve)
    assert sorted((r["step"], r["tokens_seen"]) for r in rows if "tokens_seen" in r) == [
        (s, s * 2 * 16) for s in range(13)]
    history = mlflow.MlflowClient().get_metric_history(summary["mlflow_run_id"], "tokens_seen")
    assert sorted(m.step for m in history) == list(range(13))
    assert "progress/eta_seconds" not in evals[1] and evals[-2]["progress/eta_seconds"] > 0
    assert evals[-1]["progress/eta_seconds"] == 0
    for r in evals:
        made = curve_forecast.forecast_run(saved["val_history"], cfg, through=r["step"])
        assert r.get("forecast/final_val_loss") == made["forecast"], r
        assert r.get("forecast/final_val_loss_se") == made["se"], r
    # the same numbers live in the MLflow run, the latest forecast in words as a tag
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    run = client.get_run(summary["mlflow_run_id"])
    fraction = client.get_metric_history(run.info.run_id, "progress/fraction")
    assert sorted(m.step for m in fraction) == list(range(13))
    logged = {m.step: m.value for m in client.get_metric_history(run.info.run_id,
                                                                 "forecast/final_val_loss")}
    assert logged == {r["step"]: pytest.approx(r["forecast/final_val_loss"]) for r in evals
                      if "forecast/final_val_loss" in r}
    assert run.data.tags["finegpt.curve_forecast"].startswith("step 12: forecast ")
    # and in the run's lines
    out = capsys.readouterr().out
    assert "iter 3/12 (25%): val loss " in out
    assert "final val loss forecast: not enough evals yet (3 of 4 to fit)" in out
    assert f"final val loss {saved['final_val_loss']:.4f}; forecast at 25% (step 3): none, " \
           "50% (step 6): " in out
