"""The eval report's comparison with the experiment's earlier runs, read from a real MLflow store."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from assets.metadata_format import INLINE_MARKDOWN_CHARS
from finegpt_pipeline.evaluate import history as eval_history, render as eval_report_render, evaluator as evaluate
from finegpt_pipeline.plan import loss_forecast
from finegpt_pipeline.tracking import store as mlflow_store
from finegpt_pipeline.config import TrainConfig
from finegpt_pipeline.plan.costs import param_count

LAW = {"E": 1.9, "A": 250.0, "B": 600.0, "alpha": 0.31, "beta": 0.29}
SAME, OTHER = "a" * 64, "b" * 64
T0 = 1_764_000_000_000  # ms; runs start a minute apart


def _n(layers: int, d: int) -> int:
    return param_count(TrainConfig(n_layer=layers, n_embd=d, n_head=1, block_size=64))


def _log_run(client: MlflowClient, exp_id: str, minute: int, layers: int, d: int, tokens: int,
             digest: str | None, stage: str = "train", status: str = "FINISHED") -> str:
    tags = {**mlflow_store.run_tags(stage), **({eval_history.VAL_DIGEST_TAG: digest} if digest else {})}
    run = client.create_run(exp_id, start_time=T0 + 60_000 * minute, tags=tags,
                            run_name=f"train {layers}L/{d}d")
    rid, now = run.info.run_id, T0 + 60_000 * minute
    config = TrainConfig(n_layer=layers, n_embd=d, n_head=1, block_size=64).to_dict()
    metrics = {"tokens_seen": tokens, "tokens_per_s": 999.0}  # the trainer's last log window
    if digest:  # evaluated: what evaluate.log_to_training_run writes
        loss = loss_forecast.predict(LAW, _n(layers, d), tokens)
        metrics.update({"eval/val_loss": loss, "eval/val_loss_se": 0.01, "eval/val_bpb": loss / 3,
                        "summary/wall_time_s": 30.0 * minute, "summary/tokens_per_s": 4000.0,
                        "summary/tokens_seen": tokens})
    client.log_batch(rid, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                     params=[Param(k, str(v)) for k, v in config.items()])
    client.set_terminated(rid, status, end_time=now + 45_000)
    return rid


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Training runs (four sizes evaluated on this val.bin, one on another, a failed one, an
    unevaluated one, this one) and a planning run, in the project's experiment of a private
    store (read only by the tests that share it)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment(mlflow_store.EXPERIMENT)
    ids = {
        "2L": _log_run(client, exp, 1, 2, 64, 2_000_000, SAME),
        "4L": _log_run(client, exp, 2, 4, 128, 4_000_000, SAME),
        "6L": _log_run(client, exp, 3, 6, 192, 8_000_000, SAME),
        "8L": _log_run(client, exp, 4, 8, 256, 16_000_000, SAME),
        "other_val": _log_run(client, exp, 5, 3, 96, 3_000_000, OTHER),
        "failed": _log_run(client, exp, 6, 2, 64, 1_000, SAME, status="FAILED"),
        "unevaluated": _log_run(client, exp, 7, 2, 64, 1_000, None),
        "plan": _log_run(client, exp, 8, 2, 64, 0, None, stage="training_config"),
        "this": _log_run(client, exp, 9, 5, 160, 6_000_000, None),
    }
    return uri, ids


def _current(layers=5, d=160, tokens=6_000_000, loss=4.0) -> dict:
    """This evaluation's report, as `evaluate.evaluate` returns the keys the history reads."""
    return {"run_dir": "abc123", "model_args": {"n_layer": layers, "n_embd": d},
            "params": _n(layers, d), "val_loss": loss, "val_loss_se": 0.02, "val_bpb": 1.3,
            "val_sha256": SAME, "iter_num": 10, "perplexity": 54.6, "unigram_loss": 7.0,
            "run_summary": {"tokens_seen": tokens, "wall_time_s": 12.5, "tokens_per_s": 5000.0}}


def test_history_lists_training_runs_newest_first_marking_the_same_val(store):
    uri, ids = store
    hist = eval_history.history(uri, _current(), ids["this"], shown=10)
    assert hist["tracked"] and hist["experiment"] == mlflow_store.EXPERIMENT
    rows = hist["rows"]
    # the planning run is not a training run; the others, newest first, this one on top
    assert [r["run_id"] for r in rows] == [ids[k] for k in (
        "this", "unevaluated", "failed", "other_val", "8L", "6L", "4L", "2L")]
    this = rows[0]
    assert this["this_run"] and this["val_loss"] == 4.0 and this["same_val"]
    assert this["tokens"] == 6_000_000 and this["wall_time_s"] == 12.5
    assert this["date"] == "2025-11-24 16:09"  # the MLflow run's start, UTC
    by_id = {r["run_id"]: r for r in rows}
    assert by_id[ids["other_val"]]["same_val"] is False and by_id[ids["8L"]]["same_val"] is True
    eight = by_id[ids["8L"]]
    assert eight["model"] == "8L/256d" and eight["params"] == _n(8, 256)
    assert eight["tokens"] == 16_000_000 and eight["wall_time_s"] == 120.0
    assert eight["tokens_per_s"] == 4000.0 and eight["val_loss_se"] == 0.01
    # never evaluated with the summary metrics: the trainer's own and the run's duration
    bare = by_id[ids["unevaluated"]]
    assert bare["val_loss"] is None and bare["wall_time_s"] == 45.0
    assert bare["tokens_per_s"] == 999.0 and bare["tokens"] == 1_000 and bare["same_val"] is False
    # fitted on: finished (not the failed one), same val.bin, not this run
    assert sorted(p[0] for p in hist["points"]) == sorted(_n(k, d) for k, d in
                                                          ((2, 64), (4, 128), (6, 192), (8, 256)))
    assert hist["reference"]["val_loss"] == 3.28
    assert hist["reference"]["note"] == "different val set, not comparable directly"


def test_the_earlier_runs_mark_the_registered_versions_and_the_champion(store):
    uri, ids = store
    client = MlflowClient(uri)
    client.set_tag(ids["8L"], mlflow_store.MODEL_TAG, "v1 champion")  # registry.label_runs'
    client.set_tag(ids["this"], mlflow_store.MODEL_TAG, "v2 candidate")
    try:  # the store is the module's: leave it untagged for the other tests
        hist = eval_history.history(uri, _current(), ids["this"], shown=10)
    finally:
        for key in ("8L", "this"):
            client.delete_tag(ids[key], mlflow_store.MODEL_TAG)
    by_id = {r["run_id"]: r for r in hist["rows"]}
    assert by_id[ids["8L"]]["registered"] == "v1 champion" and by_id[ids["6L"]]["registered"] is None
    table = eval_report_render.section_tables({"history": hist}, inline=True)["earlier_runs"]
    assert "| v1 champion |" in table and "| **this run**, v2 candidate |" in table


def test_a_handful_of_rows_keeps_this_run(store):
    uri, ids = store
    rows = eval_history.history(uri, _current(), ids["2L"], shown=3)["rows"]
    assert len(rows) == 3 and rows[-1]["run_id"] == ids["2L"] and rows[-1]["this_run"]
    # a run MLflow does not know (the CLI on a bare checkpoint) heads the table
    rows = eval_history.history(uri, _current(), None, shown=3)["rows"]
    assert rows[0]["this_run"] and rows[0]["run_id"] is None and len(rows) == 3
    # a run id of another store: the project's experiment, this run on top
    other = eval_history.history(uri, _current(), "0" * 32, shown=3)
    assert other["tracked"] and other["rows"][0]["run_id"] == "0" * 32
    assert other["rows"][1]["run_id"] == ids["this"]


def test_no_tracking_and_an_unreadable_store_say_so(tmp_path):
    untracked = eval_history.history(None, _current())
    assert not untracked["tracked"] and untracked["note"].startswith("no MLflow tracking")
    assert [r["this_run"] for r in untracked["rows"]] == [True]
    table = eval_report_render.section_tables({**_current(), "history": untracked})
    assert "no MLflow tracking" in table["earlier_runs"]
    bad = eval_history.history("no-such-scheme://store", _current(), "x")
    assert not bad["tracked"] and bad["note"].startswith("MLflow history not read")


def test_four_earlier_sizes_calibrate_the_forecast(store):
    uri, ids = store
    n, d = _n(5, 160), 6_000_000
    report = evaluate.with_context({**_current(loss=loss_forecast.predict(LAW, n, d) + 0.05),
                                    "plan_vs_run": None}, uri, ids["this"])
    f = report["forecast"]
    assert f["calibrated"] and f["runs"] == 4 and f["label"] == "fitted to 4 earlier runs (4 sizes)"
    assert f["val_loss"] == pytest.approx(loss_forecast.predict(LAW, n, d), abs=0.02)
    assert f["measured_minus_forecast"] == pytest.approx(0.05, abs=0.02)
    tables = eval_report_render.section_tables(report)
    for key, table in tables.items():
        assert len(table) < INLINE_MARKDOWN_CHARS, (key, len(table))
    assert "| **this run** |" in tables["earlier_runs"]
    assert "| GPT-2 124M (llm.c) | reference | 12L/768d | 10 B | ≈3.28 | - | - | - | other |" \
        in tables["earlier_runs"]
    assert "fitted to 4 earlier runs" in tables["loss_forecast"]
    md = eval_report_render.markdown({**report, **_render_stub()})
    assert "## Earlier runs of the experiment" in md and "## Loss forecast" in md
    page = eval_report_render.html({**report, **_render_stub()}, b"")
    assert "GPT-2 124M (llm.c)" in page and "fitted to 4 earlier runs" in page
    assert "reference (different val set, not comparable directly): karpathy/llm.c" in md


def _render_stub() -> dict:
    """The report keys the headline table reads, for rendering a synthetic report."""
    return {"run_dir": "abc123", "checkpoint": "/x/ckpt.pt", "bins_dir": "/x/bins",
            "iter_num": 10, "params": 1, "tokens": 100, "val_loss_se_method": "std/sqrt(n)",
            "bpb_tokens": 90, "bpb_bytes": 400, "uniform_loss": 10.8, "uniform_bpb": 3.0,
            "unigram_loss": 7.0, "unigram_bpb": 2.0, "unigram_alpha": 0.1,
            "below_uniform": 6.0, "below_unigram": 3.0, "beats_unigram": True,
            "generations": []}


def test_the_report_logs_what_later_reports_compare_with(finegpt_home):
    uri = mlflow_store.configure()
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(mlflow_store.EXPERIMENT).experiment_id
    this, later = (_log_run(client, exp, m, 2, 64, 1_000, None) for m in (1, 2))
    evaluate.log_to_training_run(_current(), {}, this, uri)
    run = client.get_run(this)
    assert run.data.tags[eval_history.VAL_DIGEST_TAG] == SAME
    assert run.data.metrics["summary/wall_time_s"] == 12.5
    assert run.data.metrics["summary/tokens_seen"] == 6_000_000
    assert run.data.metrics["eval/val_loss"] == 4.0
    # read back by a later evaluation of another run on the same val.bin
    row = next(r for r in eval_history.history(uri, _current(), later)["rows"]
               if r["run_id"] == this)
    assert (row["val_loss"], row["wall_time_s"], row["tokens"], row["same_val"]) == (
        4.0, 12.5, 6_000_000, True)
