"""`finegpt eval` / `eval_report`: val loss over every token, bits per byte, baselines, report."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tests._bins_fixture import make_bins, unigram_entropy_nats, write_plan
from assets.evaluation import eval_report, eval_report_beats_unigram
from assets.metadata_format import INLINE_MARKDOWN_CHARS, link_url
from assets.resources import ChampionPolicy, FineGPTHome
from finegpt_pipeline import cli
from finegpt_pipeline.train import checkpoint, plan_file, trainer as train
from finegpt_pipeline.evaluate import history as eval_history, evaluator as evaluate, measure, plan_vs_run, unigram
from finegpt_pipeline.plan import loss_forecast
from finegpt_pipeline.tracking import store as mlflow_store
from finegpt_pipeline.config import EOT_TOKEN, TrainConfig
from finegpt_pipeline.plan.costs import estimate, run_seconds
from finegpt_pipeline.hardware import get_hardware
from finegpt_pipeline.layout import write_meta
from finegpt_pipeline.model import GPT, GPTConfig
from finegpt_pipeline.data.tokenizer import encode_batch, get_encoding

BLOCK = 32
INSTANCE = dg.DagsterInstance.ephemeral()  # in memory; its logs show what a run printed


@pytest.fixture(scope="module")
def small_bins(tmp_path_factory, sample_shard) -> Path:
    """60 real documents: 30,075 train and 1,838 val tokens (1,837 targets: 57 windows + 13)."""
    return make_bins(sample_shard, tmp_path_factory.mktemp("small_bins"), max_docs=60)


@pytest.fixture(scope="module")
def random_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = TrainConfig(n_layer=2, n_head=2, n_embd=32, block_size=BLOCK, device="cpu")
    model = GPT(GPTConfig(**cfg.model_args()))
    return checkpoint.save(tmp_path_factory.mktemp("random") / "ckpt.pt", model, None,
                           cfg.to_dict(), iter_num=0, best_val_loss=float("inf"))


@pytest.fixture(scope="module")
def one_doc_run(tmp_path_factory, sample_shard) -> tuple[Path, Path]:
    """A tiny model trained 80 steps on one 303-token document; train.bin = val.bin = it; its
    plan's report is the planner's estimate of this config on this CPU."""
    root = tmp_path_factory.mktemp("one_doc")
    texts = pq.read_table(sample_shard, columns=["text"]).column("text").to_pylist()
    [doc] = encode_batch([texts[24]])
    bins = root / "bins"
    bins.mkdir()
    ids = np.array([EOT_TOKEN, *doc], dtype=np.uint16)
    for split in ("train", "val"):
        ids.tofile(bins / f"{split}.bin")
    write_meta(bins)
    cfg = plan_file.load_plan(write_plan(root / "plan.json", max_iters=80, lr_decay_iters=80,
                                         learning_rate=1e-2, min_lr=1e-3, eval_interval=10,
                                           log_interval=5, checkpoint_interval=80))
    planner = estimate(cfg, get_hardware("cpu"), len(ids) - 1)
    train.train(cfg, bins, root / "run", mlflow=False, planner=planner)
    return root / "run" / "ckpt.pt", bins


def test_val_loss_is_the_mean_over_every_token_of_val_bin(small_bins, random_ckpt):
    report = evaluate.evaluate(random_ckpt, small_bins, max_new_tokens=2)
    val = np.fromfile(small_bins / "val.bin", dtype=np.uint16).astype(np.int64)
    assert report["tokens"] == val.size - 1 and (val.size - 1) % BLOCK  # a short tail too
    # independently: the model's own mean loss per window, windows at 0, T, 2T, ...
    model = checkpoint.model_from_checkpoint(checkpoint.load(random_ckpt)).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, val.size - 1, BLOCK):
            x = torch.from_numpy(val[start:start + BLOCK + 1][:-1])[None]
            y = torch.from_numpy(val[start + 1:start + BLOCK + 1])[None]
            _, loss = model(x, targets=y)
            total += float(loss) * y.numel()
            count += y.numel()
    assert count == val.size - 1
    assert report["val_loss"] == pytest.approx(total / count, rel=1e-5)
    assert report["perplexity"] == pytest.approx(math.exp(report["val_loss"]))
    assert 0 < report["val_loss_se"] < 0.05
    assert report["uniform_loss"] == pytest.approx(math.log(50257))
    # a random-init model is near uniform and far above the unigram: flagged
    assert report["beats_unigram"] is False and report["below_unigram"] < 0
    assert abs(report["below_uniform"]) < 0.1


def test_bits_per_byte_follows_the_definition():
    enc = get_encoding()
    a, b, c = enc.encode_ordinary(" café")[0], enc.encode_ordinary(" the")[0], 13  # "."
    targets = np.array([EOT_TOKEN, a, b, EOT_TOKEN, c])
    losses = np.array([5.0, 1.0, 2.0, 7.0, 3.0])
    lengths = measure.token_byte_lengths()
    n_bytes = len(enc.decode_bytes([a, b, c]))
    assert measure.bits_per_byte(losses, targets, lengths) == pytest.approx(
        (1 + 2 + 3) / (math.log(2) * n_bytes))  # EOT's nats and bytes both left out
    text = "Naïve café – 日本語 text\n"  # multi-byte characters split across tokens
    ids = enc.encode_ordinary(text)
    assert int(lengths[ids].sum()) == len(text.encode("utf-8"))


def test_report_bytes_are_those_of_the_val_text(small_bins, random_ckpt):
    report = evaluate.evaluate(random_ckpt, small_bins, max_new_tokens=2)
    val = np.fromfile(small_bins / "val.bin", dtype=np.uint16)[1:]
    text_ids = [int(t) for t in val if t != EOT_TOKEN]
    assert report["bpb_bytes"] == len(get_encoding().decode_bytes(text_ids))
    assert report["bpb_tokens"] == len(text_ids)
    # unigram baseline: train.bin counts, add-alpha over the 50257 ids, on the same targets
    counts = np.bincount(np.fromfile(small_bins / "train.bin", dtype=np.uint16), minlength=50257)
    alpha = report["unigram_alpha"]
    p = (counts[val] + alpha) / (counts.sum() + alpha * 50257)
    assert report["unigram_loss"] == pytest.approx(float(-np.log(p).mean()))


def test_model_trained_on_a_document_beats_the_unigram_there(one_doc_run, tmp_path):
    ckpt, bins = one_doc_run
    result = evaluate.run_eval(ckpt, bins, tmp_path / "out", max_new_tokens=4)
    assert result["beats_unigram"] is True
    # below even the best unigram on this text: its own frequencies, unsmoothed
    assert result["val_loss"] < unigram_entropy_nats(bins / "val.bin")
    assert len(result["generations"]) == len(evaluate.PROMPTS) * len(evaluate.SEEDS)
    assert {(g["prompt"], g["seed"]) for g in result["generations"]} == {
        (p, s) for p in evaluate.PROMPTS for s in evaluate.SEEDS}
    # the curves come from the run: train every 5 steps, val every 10, against tokens seen
    curves = result["curves"]
    assert [x for x, _ in curves["train"]] == [5 * 128.0 * k for k in range(1, 17)]
    assert [x for x, _ in curves["val"]] == [10 * 128.0 * k for k in range(9)]
    # what the in-run forecast said at 25/50/75 % of the steps (steps 20, 40, 60), against the end
    table = (tmp_path / "out" / "report.md").read_text().split(
        "## Final val loss forecast during training\n\n")[1].split("\n\n")[0]
    rows = [line.split(" | ") for line in table.splitlines()[2:]]
    assert [r[:2] for r in rows] == [["| 25%", "20"], ["| 50%", "40"], ["| 75%", "60"]]
    assert rows[0][2] == "not enough evals yet (2 of 4 to fit)" and " ± " in rows[2][2]
    assert all(r[3] == f"{result['run_summary']['final_val_loss']:.4f}" for r in rows)
    assert "<h2>Final val loss forecast during training</h2>" in (tmp_path / "out" / "report.html").read_text()
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(evaluate.REPORT_FILES)
    png = (out / "loss_curve.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    page = (out / "report.html").read_text()
    assert base64.b64encode(png).decode() in page and "<img" in page
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["val_loss"] == result["val_loss"] and on_disk["beats_unigram"] is True
    assert "beats the unigram baseline" in (out / "report.md").read_text()


def test_an_unchanged_rerun_reuses_the_measurement(one_doc_run, tmp_path, monkeypatch):
    """Same checkpoint, val set and evaluation code: the report is rewritten from what was
    measured, nothing is measured again; another val set measures again."""
    ckpt, bins = one_doc_run
    first = evaluate.run_eval(ckpt, bins, tmp_path / "out", max_new_tokens=2)
    assert first["inputs"]["checkpoint_sha256"] and first["champion"]["verdict"].startswith(
        "not compared")
    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: pytest.fail("measured again"))
    again = evaluate.run_eval(ckpt, bins, tmp_path / "out", max_new_tokens=2)
    assert again["val_loss"] == first["val_loss"] and again["generations"] == first["generations"]
    with pytest.raises(pytest.fail.Exception, match="measured again"):
        evaluate.run_eval(ckpt, bins, tmp_path / "out", max_new_tokens=3)  # another input


def test_plan_against_reality_sits_beside_the_measurement(one_doc_run, tmp_path):
    ckpt, bins = one_doc_run
    run = ckpt.parent
    plan = json.loads((run / "plan.json").read_text())["report"]
    summary = json.loads((run / "summary.json").read_text())
    result = evaluate.run_eval(ckpt, bins, tmp_path / "out", max_new_tokens=2)
    rows = {r["quantity"]: r for r in result["plan_vs_run"]["rows"]}
    step = rows["step time"]
    assert step["planned"] == plan["est_step_seconds"]
    assert step["measured"] == pytest.approx(
        summary["tokens_seen"] / summary["steps"] / summary["tokens_per_s"])
    assert step["ratio"] == pytest.approx(step["measured"] / step["planned"])
    assert rows["tokens/s"]["measured"] == summary["tokens_per_s"]
    cfg = TrainConfig.from_plan(json.loads((run / "plan.json").read_text()))
    assert rows["wall time"]["planned"] == pytest.approx(run_seconds(cfg, plan["est_step_seconds"]))
    assert rows["wall time"]["measured"] == summary["wall_time_s"]
    # a CPU measures no peak memory: said so, never a 0 standing for it
    mem = rows["peak memory (tensors)"]
    assert mem["measured"] is None and mem["ratio"] is None
    assert mem["note"] == "not measured on cpu"
    assert mem["planned"] == plan["memory_breakdown"]["allocated_estimate"]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Plan against reality" in md and "| peak memory (tensors) |" in md
    assert "not measured on cpu" in md and "not measured on cpu" in (
        tmp_path / "out" / "report.html").read_text()
    # the forecast beside the measurement: no MLflow here, so the published coefficients
    f = result["forecast"]
    assert f["calibrated"] is False and f["label"] == loss_forecast.UNCALIBRATED_LABEL
    assert (f["n"], f["d"]) == (result["params"], summary["tokens_seen"])
    assert f["measured"] == result["val_loss"]
    assert result["history"]["tracked"] is False and "## Loss forecast" in md


def test_plan_against_reality_on_cuda_compares_memory(one_doc_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    src = one_doc_run[0].parent
    (run / "plan.json").write_text((src / "plan.json").read_text())
    summary = json.loads((src / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "device": "cuda:0",
                                                  "peak_memory_bytes": 3 * 2**30}))
    mem = {r["quantity"]: r for r in plan_vs_run.compare(run)["rows"]}["peak memory (tensors)"]
    planned = json.loads((run / "plan.json").read_text())["report"]["memory_breakdown"]
    assert mem["measured"] == 3 * 2**30
    assert mem["ratio"] == pytest.approx(3 * 2**30 / planned["allocated_estimate"])
    (run / "plan.json").write_text(json.dumps({"n_layer": 2}))  # a bare config: no report
    assert plan_vs_run.compare(run) is None


def test_unigram_baseline_is_one_function(small_bins, random_ckpt):
    report = evaluate.evaluate(random_ckpt, small_bins, max_new_tokens=2)
    assert unigram.unigram_val_loss(small_bins) == pytest.approx(report["unigram_loss"])


def test_cli_json_keys(small_bins, random_ckpt, tmp_path, capsys):
    out = tmp_path / "report"
    rc = cli.main(["eval", "--ckpt", str(random_ckpt), "--bins", str(small_bins), "--out",
                   str(out), "--json", "--max-new-tokens", "2", "--no-mlflow"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["history"]["tracked"] is False and data["plan_vs_run"] is None
    # no run summary beside the checkpoint: no in-run forecasts, and the report says nothing of them
    assert data["curve_forecasts"] is None and "during training" not in (out / "report.md").read_text()
    assert {"val_loss", "val_loss_se", "val_bpb", "unigram_loss", "tokens",
            "beats_unigram"} <= set(data)
    assert data["tokens"] == 1837 and data["beats_unigram"] is False
    assert data["champion"]["verdict"] == "not compared (no MLflow store)"
    assert (out / "report.md").exists()


@pytest.mark.parametrize("case", ["garbage_ckpt", "missing_ckpt", "missing_bins", "no_val",
                                  "out_is_a_file"])
def test_cli_errors_are_one_line_naming_the_file(case, small_bins, random_ckpt, tmp_path,
                                                 capsys):
    ckpt, bins = random_ckpt, small_bins
    if case == "garbage_ckpt":
        ckpt = tmp_path / "ckpt.pt"
        ckpt.write_bytes(b"not a checkpoint")
    elif case == "missing_ckpt":
        ckpt = tmp_path / "nope.pt"
    elif case == "missing_bins":
        bins = tmp_path / "no_bins"
    elif case == "no_val":
        bins = tmp_path / "bins"
        bins.mkdir()
        (bins / "train.bin").write_bytes((small_bins / "train.bin").read_bytes())
        (bins / "meta.json").write_text((small_bins / "meta.json").read_text())
    out = tmp_path / "out"
    if case == "out_is_a_file":
        out.write_text("a file")
    rc = cli.main(["eval", "--ckpt", str(ckpt), "--bins", str(bins), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("finegpt eval: error: ")
    named = {"garbage_ckpt": ckpt, "missing_ckpt": ckpt, "missing_bins": bins,
             "no_val": bins / "val.bin", "out_is_a_file": out}[case]
    assert str(named) in err
    assert out.is_file() if case == "out_is_a_file" else not out.exists()  # nothing left behind


def _materialize(home: Path, ckpt: Path, bins: Path,
                 mlflow_run_id: str | None = None) -> dg.ExecuteInProcessResult:
    @dg.asset(name="trained_checkpoint")
    def trained_checkpoint_input() -> dict:
        return {"checkpoint": str(ckpt), "run_dir": str(ckpt.parent), "steps": 80,
                "mlflow_run_id": mlflow_run_id, "model_version": 7 if mlflow_run_id else None,
                "mlflow_run_url": mlflow_store.run_url(mlflow_run_id) if mlflow_run_id else None}

    @dg.asset(name="tokenized_bins")
    def tokenized_bins_input() -> dict:
        return {"dir": str(bins)}

    return dg.materialize(
        [trained_checkpoint_input, tokenized_bins_input, eval_report, eval_report_beats_unigram],
        resources={"champion_policy": ChampionPolicy(), "finegpt_home": FineGPTHome(root=str(home))}, instance=INSTANCE,
        run_config={"ops": {"eval_report": {"config": {"device": "cpu", "max_new_tokens": 4}}}},
    )


def test_eval_report_asset_materializes_with_its_check(finegpt_home, one_doc_run, random_ckpt,
                                                       small_bins):
    ckpt, bins = one_doc_run
    mlflow_store.configure()  # the training run the report joins: a real one in this home's store
    with mlflow.start_run(tags=mlflow_store.run_tags("train")) as run:
        mlflow.log_params(plan_file.load_plan(ckpt.parent / "plan.json").to_dict())
        mlflow.log_metric("val_loss", 5.0, step=80)
    result = _materialize(finegpt_home, ckpt, bins, mlflow_run_id=run.info.run_id)
    assert result.success
    # the step ends with where to look: the eval headline, the MLflow run, the Dagster run
    messages = [e.user_message for e in INSTANCE.all_logs(result.run_id) if e.dagster_event is None]
    ours = [m for m in messages if m.startswith(("eval_report: val loss ", "logged to MLflow run",
                                                 "Dagster run: "))]
    assert [m.split(" ")[0] for m in ours] == ["eval_report:", "logged", "Dagster"], ours
    assert ours[-1] == f"Dagster run: http://127.0.0.1:3000/runs/{result.run_id}"
    [mat] = result.asset_materializations_for_node("eval_report")
    md = mat.metadata
    for key in ("val_loss", "val_loss_se", "val_bpb", "unigram_loss"):
        assert md[key].value == round(md[key].value, 4)
    assert md["beats_unigram"].value is True
    assert "| val loss (nats/token) |" in md["report"].value
    # by URL from the MLflow server: Dagster's UI inlines only short Markdown, never a data URI
    assert md["loss_curve"].value == (
        f"![loss curves](http://127.0.0.1:5000/get-artifact?path=eval_report/loss_curve.png"
        f"&run_uuid={run.info.run_id})")
    report_dir = finegpt_home / "reports" / "eval" / ckpt.parent.name
    assert finegpt_home / md["report_dir"].value == report_dir  # shown relative to the home
    assert sorted(p.name for p in report_dir.iterdir()) == sorted(evaluate.REPORT_FILES)
    # the plan, the earlier runs and the forecast as short tables the UI shows inline
    for key in ("plan_vs_run", "earlier_runs", "loss_forecast", "curve_forecast"):
        assert md[key].value.startswith("| "), key
        assert len(md[key].value) < INLINE_MARKDOWN_CHARS, (key, len(md[key].value))
    assert "| **this run** |" in md["earlier_runs"].value
    assert "not measured on cpu" in md["plan_vs_run"].value
    assert md["forecast_calibrated"].value is False
    value = result.output_for_node("eval_report")
    assert value["bins_dir"] == str(bins.resolve()) and value["checkpoint"] == str(ckpt.resolve())
    assert value["model_version"] == 7 and value["mlflow_run_id"] == run.info.run_id
    assert {"val_loss", "val_loss_se", "val_bpb", "tokens"} <= set(value)
    # a tiny CPU model is outside the published fit: no forecast is shown, nor passed on
    assert value["forecast_val_loss"] is None and "forecast_val_loss" not in md
    assert "none: N = " in md["loss_forecast"].value
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "eval_report_beats_unigram" and check.passed
    assert check.severity == dg.AssetCheckSeverity.ERROR
    # the report's numbers and files joined the training run in MLflow
    client = mlflow.MlflowClient()
    logged = client.get_run(run.info.run_id).data.metrics
    assert logged["eval/val_loss"] == pytest.approx(value["val_loss"])
    assert client.get_run(run.info.run_id).data.tags[eval_history.VAL_DIGEST_TAG] == value[
        "val_sha256"]
    assert logged["summary/tokens_seen"] == 80 * 128
    assert {"eval/val_loss_se", "eval/val_bpb", "eval/unigram_loss"} <= set(logged)
    assert {a.path for a in client.list_artifacts(run.info.run_id, "eval_report")} == {
        f"eval_report/{name}" for name in evaluate.REPORT_FILES}
    assert run.info.run_id in md["training_run_url"].value  # mlflow_run_url: its own run
    assert link_url(md["mlflow_experiment_url"]).endswith("viewStateShareKey=finegpt-training-runs")

    # a random-init model: the report is written, the check fails at severity ERROR
    flagged = _materialize(finegpt_home, random_ckpt, small_bins)
    assert flagged.output_for_node("eval_report")["model_version"] is None
    # the earlier run is in the table, evaluated on another val.bin
    table = flagged.asset_materializations_for_node("eval_report")[0].metadata["earlier_runs"]
    assert f"| {run.info.run_id[:8]} |" in table.value and "| other |" in table.value
    [check] = flagged.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["vs_unigram"].value.endswith(" nats/token worse than unigram")
    # the margins in words on the asset too, never a signed "below" (a double negative)
    flagged_md = flagged.asset_materializations_for_node("eval_report")[0].metadata
    assert flagged_md["vs_unigram"].value.endswith(" nats/token worse than unigram")
    assert not {"below_unigram", "below_uniform"} & set(flagged_md)


def test_pipeline_job_and_train_job_end_at_eval_report():
    """A retrain on every tokenized shard (train_job, after a data_job on a new shard) ends
    with the new model's report and its verdict against the champion."""
    from assets.definitions import defs

    pipeline = defs.resolve_job_def("pipeline_job")
    train_job = defs.resolve_job_def("train_job")
    assert "eval_report" in {n.name for n in pipeline.graph.node_defs}
    assert {"training_config", "trained_checkpoint", "eval_report"} <= {
        n.name for n in train_job.graph.node_defs}
    assert not {"raw_shard", "token_stats", "tokenized_bins"} & {
        n.name for n in train_job.graph.node_defs}
    [spec] = eval_report.specs
    assert spec.group_name == "evaluation" and spec.kinds == {"pytorch", "mlflow"}
    assert {d.asset_key.to_user_string() for d in spec.deps} == {"trained_checkpoint",
                                                                 "tokenized_bins"}


def test_the_standard_error_treats_documents_as_the_units():
    """Correlated tokens inside a document: the per-document se is the honest one, larger than
    the per-token one when documents differ; equal to the cluster formula by hand."""
    from finegpt_pipeline.evaluate.measure import document_se

    rng = np.random.default_rng(0)
    docs = [rng.normal(mu, 0.1, size=50) for mu in (2.0, 4.0, 6.0, 3.0)]  # each doc its level
    losses = np.concatenate(docs)
    targets = np.concatenate([np.r_[np.full(49, 7), EOT_TOKEN] for _ in docs])
    se, n_docs = document_se(losses, targets)
    assert n_docs == 4
    mean = losses.mean()
    by_hand = math.sqrt(4 / 3 * sum((d.sum() - d.size * mean) ** 2 for d in docs)) / losses.size
    assert se == pytest.approx(by_hand)
    assert se > 5 * losses.std(ddof=1) / math.sqrt(losses.size)
    assert math.isnan(document_se(losses[:49], targets[:49])[0])  # one document: no se
