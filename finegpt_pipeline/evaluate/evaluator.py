"""`finegpt eval`: a trained checkpoint measured on every token of a bins directory's val.bin
(a bins set's: its members' val.bins concatenated, train.bin counts summed).

- Val loss: val.bin cut into consecutive non-overlapping windows of block_size (the last one
  shorter), so each of its tokens after the first is predicted exactly once, from the context
  of its own window; the mean of those per-token losses (nats), EOT targets included.
- Its standard error with val.bin's documents as the independent units (`measure.document_se`,
  cluster-robust): tokens within a document are correlated, so the per-token std / sqrt(n)
  (kept as `val_loss_se_per_token`) would overstate the certainty.
- Bits per byte (nanochat's definition): summed nats / (ln 2 x UTF-8 bytes of the targets'
  text), EOT targets (`config.EOT_TOKEN`) left out of both sums; it compares across tokenizers.
- Baselines on the same targets: uniform over GPT-2's vocabulary (ln 50257) and a unigram model
  of train.bin, add-`UNIGRAM_ALPHA` smoothed over the 50257 ids. A model that does not beat the
  unigram is flagged (`beats_unigram: false`).
- Generations for `PROMPTS` x `SEEDS` with the project's sampler, and the run's loss curves.
- Beside the checkpoint's run directory: the plan against what the run measured
  (`plan_vs_run`); with MLflow, the experiment's earlier runs (`eval_history`); and the val
  loss the scaling law forecast for the run's size (`loss_forecast`); and what the trainer's
  in-run forecast (`train.curve_forecast`) said at 25/50/75 % of the steps (`curve_forecasts`).

The report (`report.json`, `report.md`, `report.html`, `loss_curve.png`) is written atomically
into the output directory once everything is computed: bad input leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from finegpt_pipeline import paths
from finegpt_pipeline.atomic import write_bytes, write_json, write_text
from finegpt_pipeline.evaluate import champion, plan_vs_run, registry
from finegpt_pipeline.evaluate import history as eval_history, render as eval_report_render
from finegpt_pipeline.evaluate.measure import measure_on_bins, resolve_device
from finegpt_pipeline.layout import sha256_file, val_sha256
from finegpt_pipeline.plan import loss_forecast
from finegpt_pipeline.train import checkpoint, loss_curve, run_dir

PROMPTS = ("", "The history of", "In this article, we")  # "" starts a new document (EOT)
SEEDS = (1337, 42)
MAX_NEW_TOKENS = 48
REPORT_FILES = ("report.json", "report.md", "report.html", "loss_curve.png")


# ---------------------------------------------------------------- the run's curves


RUN_SUMMARY_KEYS = ("steps", "tokens_seen", "wall_time_s", "tokens_per_s", "mfu",
                    "peak_memory_bytes", "device", "final_val_loss", "best_val_loss")


def training_curves(summary: dict[str, Any] | None) -> dict[str, list] | None:
    """(tokens seen, loss) points of train and val from a run's summary.json content
    (`loss_curve.curves`); None without any."""
    if summary is None:
        return None
    points = {k: [list(p) for p in v] for k, v in loss_curve.curves(summary).items()}
    return points if points["train"] or points["val"] else None


# ---------------------------------------------------------------- the report


def generations(ckpt_path: Path, device: str, max_new_tokens: int = MAX_NEW_TOKENS) -> list[dict]:
    from finegpt_pipeline.evaluate.sample import generate

    rows = []
    with torch.no_grad():
        for prompt in PROMPTS:
            for seed in SEEDS:
                [text] = generate(str(ckpt_path), prompt, max_new_tokens, seed=seed, device=device)
                rows.append({"prompt": prompt, "seed": seed, "text": text})
    return rows


def evaluate(ckpt_path: str | Path, bins_dir: str | Path, device: str = "cpu",
             max_new_tokens: int = MAX_NEW_TOKENS) -> dict[str, Any]:
    """The report's content (JSON-ready) and the loss-curve data; writes nothing."""
    ckpt_path, device = Path(ckpt_path), resolve_device(device)
    t0 = time.time()
    ckpt = checkpoint.load(ckpt_path)
    try:
        model = checkpoint.model_from_checkpoint(ckpt, device)
    except (KeyError, TypeError, RuntimeError) as exc:
        raise ValueError(f"{ckpt_path}: model does not load from the checkpoint "
                         f"({str(exc).splitlines()[0][:200]})") from None
    numbers, val_size, train_tokens = measure_on_bins(model, bins_dir, device, "checkpoint's")
    run = ckpt_path.parent
    summary = run_dir.read_summary(run)
    run_summary = {k: summary.get(k) for k in RUN_SUMMARY_KEYS} if summary else {}
    if run_summary.get("tokens_seen") is None:  # a checkpoint without its summary
        run_summary["tokens_seen"] = (ckpt.get("resume") or {}).get("tokens_seen")
    return {
        **numbers,
        "checkpoint": str(ckpt_path.resolve()), "bins_dir": str(Path(bins_dir).resolve()),
        "val_sha256": val_sha256(bins_dir),
        "run_dir": run.name, "iter_num": int(ckpt.get("iter_num", 0)),
        "params": model.get_num_params(), "model_args": dict(ckpt["model_args"]),
        "val_file_tokens": val_size, "train_file_tokens": train_tokens,
        "generations": generations(ckpt_path, device, max_new_tokens),
        "curves": training_curves(summary), "run_summary": run_summary,
        # what the in-run forecast said at 25/50/75 % of the steps (absent for older runs)
        "curve_forecasts": (summary or {}).get("curve_forecasts"),
        "plan_vs_run": plan_vs_run.compare(run),
        "device": device, "eval_seconds": time.time() - t0,
    }


def with_context(report: dict[str, Any], tracking_uri: str | None,
                 mlflow_run_id: str | None = None, home: Path | None = None) -> dict[str, Any]:
    """The report with the experiment's earlier runs (`history`, from MLflow at
    `tracking_uri`; None: untracked) and the loss `forecast` for this run's N and D, fitted to
    those of them evaluated on the same val.bin when there are enough. The points, this run's
    included, are kept for the planner under the FINEGPT_HOME `home` (tracked runs only)."""
    history = eval_history.history(tracking_uri, report, mlflow_run_id)
    tokens = report["run_summary"].get("tokens_seen")
    forecast = (loss_forecast.forecast(report["params"], tokens, history["points"])
                if tokens else None)
    if tracking_uri and tokens:
        loss_forecast.save_points(paths.home(home).forecast_points(report["val_sha256"]),
                                  [*history["points"], (report["params"], tokens,
                                                        report["val_loss"])])
    if forecast is not None:
        forecast["measured"] = report["val_loss"]
        forecast["measured_minus_forecast"] = (report["val_loss"] - forecast["val_loss"]
                                               if forecast["trusted"] else None)
    return {**report, "history": history, "forecast": forecast}


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """report.json, report.md, report.html (plot inlined) and loss_curve.png, each atomic."""
    out = Path(out_dir)
    png = loss_curve.loss_curve_png(report.get("curves") or {}, title="loss curves")
    files = {name: out / name for name in REPORT_FILES}
    write_bytes(files["loss_curve.png"], png)
    write_json(files["report.json"], report)
    write_text(files["report.md"], eval_report_render.markdown(report))
    write_text(files["report.html"], eval_report_render.html(report, png))
    return files


def run_eval(ckpt_path: str | Path, bins_dir: str | Path, out_dir: str | Path,
             device: str = "cpu", max_new_tokens: int = MAX_NEW_TOKENS,
             tracking_uri: str | None = None, mlflow_run_id: str | None = None,
             home: Path | None = None, model_version: int | None = None,
             policy: champion.Policy = champion.Policy()) -> dict[str, Any]:
    """Evaluate (or reuse `out_dir`'s report of the same checkpoint, val set and evaluation
    code), compare (`with_context`, and the verdict against the champion) and write the
    report files."""
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ValueError(f"{out_dir}: exists and is not a directory; pass a directory as --out")
    inputs = eval_inputs(ckpt_path, bins_dir, max_new_tokens)
    measured = reusable(out_dir, inputs)
    if measured is None:
        measured = {**evaluate(ckpt_path, bins_dir, device, max_new_tokens), "inputs": inputs}
    report = with_context(measured, tracking_uri, mlflow_run_id, home)
    report["model_version"] = model_version
    report["champion"] = champion.against_champion(tracking_uri, report, bins_dir,
                                                   resolve_device(device), model_version, policy)
    if report["champion"].get("verdict") != "is the champion":
        report["config_diff"] = champion.config_diff(
            tracking_uri, run_dir.read_config(Path(ckpt_path).parent), bins_dir)
    files = write_report(report, out_dir)
    return {**report, "files": {k: str(v) for k, v in files.items()}}


# What an evaluation's numbers depend on besides the checkpoint and val.bin: bump it when
# `measure` or `evaluate` changes what they compute.
EVAL_CODE_VERSION = "2"  # 2: the se per document
MEASURED_KEYS = ("history", "forecast", "model_version", "champion",  # recomputed each time
                 "config_diff")


def eval_inputs(ckpt_path: str | Path, bins_dir: str | Path, max_new_tokens: int) -> dict:
    """What the measured part of a report is a function of."""
    return {"checkpoint_sha256": sha256_file(ckpt_path), "val_sha256": val_sha256(bins_dir),
            "max_new_tokens": max_new_tokens, "code_version": EVAL_CODE_VERSION}


def reusable(out_dir: str | Path, inputs: dict) -> dict[str, Any] | None:
    """The measured part of `out_dir`'s report.json when it was made from the same `inputs`
    (an unchanged re-run measures nothing again), else None."""
    try:
        report = json.loads((Path(out_dir) / "report.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict) or report.get("inputs") != inputs:
        return None
    return {k: v for k, v in report.items() if k not in MEASURED_KEYS}


MLFLOW_METRICS = ("val_loss", "val_loss_se", "val_bpb", "perplexity", "unigram_loss")


def log_to_training_run(report: dict[str, Any], files: dict[str, str | Path], run_id: str,
                        tracking_uri: str) -> None:
    """The report's numbers (`eval/val_loss`, ... at the checkpoint's step), the run's summary
    numbers (`summary/tokens_seen`, ...: what later reports compare with), the val.bin digest
    (tag `eval_history.VAL_DIGEST_TAG`) and the files (under `eval_report/`) into the MLflow run
    that trained the checkpoint."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    step = int(report["iter_num"])
    for key in MLFLOW_METRICS:
        if math.isfinite(report[key]):
            client.log_metric(run_id, f"eval/{key}", float(report[key]), step=step)
    summary = report.get("run_summary") or {}
    for key in eval_history.SUMMARY_METRICS:
        value = summary.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value) and value > 0:
            client.log_metric(run_id, f"summary/{key}", float(value), step=step)
    client.set_tag(run_id, eval_history.VAL_DIGEST_TAG, report["val_sha256"])
    for path in files.values():
        client.log_artifact(run_id, str(path), artifact_path="eval_report")


# ---------------------------------------------------------------- CLI


def cli_tracking(ckpt_path: str | Path) -> tuple[str | None, str | None]:
    """`finegpt eval`'s MLflow store (MLFLOW_TRACKING_URI, else the default store under
    FINEGPT_HOME when one exists: the CLI never creates one) and the checkpoint's training run
    (its run directory's `mlflow_run_id`), each None when absent."""
    from finegpt_pipeline import paths

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri and paths.home().mlflow_db.exists():
        uri = f"sqlite:///{paths.home().mlflow_db}"
    run_file = Path(ckpt_path).parent / run_dir.MLFLOW_RUN_FILE
    run_id = run_file.read_text().strip() or None if run_file.exists() else None
    return uri, run_id


def _handle(args: argparse.Namespace) -> int:
    uri, run_id = cli_tracking(args.ckpt) if args.mlflow else (None, None)
    if args.promote and not (uri and run_id):
        raise ValueError(f"{args.ckpt}: --promote needs the checkpoint's MLflow training run "
                         f"({run_dir.MLFLOW_RUN_FILE} beside it) and its store; train with MLflow on")
    registered = None
    if uri and run_id:
        iter_num = int(checkpoint.load(args.ckpt).get("iter_num", 0))
        registered = registry.version_of_run(uri, run_id, iter_num)
        if registered is None and args.promote:
            registered = registry.register_candidate(uri, run_id, args.ckpt)
    version = registered["version"] if registered else None
    result = run_eval(args.ckpt, args.bins, args.out, args.device, args.max_new_tokens, uri,
                      run_id, model_version=version)
    if run_id:  # as eval_report does: the numbers join the training run they measure
        log_to_training_run(result, result["files"], run_id, uri)
    if args.promote:
        result["decision"] = champion.decide(uri, version, result, resolve_device(args.device))
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "curves"}, indent=2))
    else:
        print(eval_report_render.headline(result))
        print(eval_report_render.champion_line(result))
        if args.promote:
            print(f"promotion: {result['decision']['note']}")
        print(f"report: {result['files']['report.md']}")
    return 0


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate a checkpoint on every token of val.bin",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="checkpoint file (RUN_DIR/ckpt.pt)")
    p.add_argument("--bins", required=True, help="bins dir (train.bin, val.bin, meta.json) "
                   "or bins set (manifest.json: its members' val.bins as one)")
    p.add_argument("--out", required=True, help="report directory (report.json/.md/.html, "
                   "loss_curve.png)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS,
                   help="tokens per generated sample")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--mlflow", action=argparse.BooleanOptionalAction, default=True,
                   help="compare with the experiment's earlier runs and the champion in MLflow "
                        "(MLFLOW_TRACKING_URI, else an existing store under FINEGPT_HOME) and "
                        "log the numbers into the checkpoint's training run")
    p.add_argument("--promote", action="store_true",
                   help="register the checkpoint (alias candidate) when it is not yet and apply "
                        "the champion rule (finegpt_pipeline.evaluate.champion)")
    p.set_defaults(func=_handle)
