"""`finegpt runs`: the training runs under FINEGPT_HOME by what they are, not by their hash.

Run directories are named by a digest of their inputs (`train/run_dir.run_key`), which says
nothing to a person. This lists them with when each finished, what it trained (its MLflow
run's name, e.g. `train 2L/64d 137k tok muon lr 0.0072 ...`), its steps and val loss (eval_report's where it ran),
and marks the newest (`latest`) and the one the registry's `champion` alias points at.
`--latest` and `--champion` print that run's directory alone, for scripts:

    finegpt runs
    finegpt sample --ckpt "$(finegpt runs --champion)/ckpt.pt"
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from finegpt_pipeline import paths
from finegpt_pipeline.train import run_dir


def _evaluated_loss(report_dir: Path) -> float | None:
    """The full-val loss eval_report measured for a run (its report.json), None without one."""
    try:
        value = json.loads((report_dir / "report.json").read_text()).get("val_loss")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, (int, float)) else None


def list_runs(runs_root: Path, reports_root: Path) -> list[dict[str, Any]]:
    """Every run directory under `runs_root` that wrote a summary, newest first; its val loss
    is eval_report's (under `reports_root`, same directory name) where one exists, else the
    trainer's estimate on sampled val batches (`evaluated` False)."""
    rows = []
    for out in sorted(runs_root.iterdir()) if runs_root.is_dir() else []:
        summary = run_dir.read_summary(out) if out.is_dir() else None
        if summary is None:
            continue
        config = run_dir.read_config(out)
        run_id_file = out / run_dir.MLFLOW_RUN_FILE
        evaluated = _evaluated_loss(reports_root / out.name)
        rows.append({
            "dir": out, "finished": (out / run_dir.SUMMARY_NAME).stat().st_mtime,
            "complete": run_dir.finished_run(out) is not None,
            "steps": summary.get("steps"), "planned": config.get("max_iters"),
            "val_loss": summary.get("final_val_loss") if evaluated is None else evaluated,
            "evaluated": evaluated is not None,
            "shape": f"{config.get('n_layer', '?')}L/{config.get('n_embd', '?')}d",
            "mlflow_run_id": run_id_file.read_text().strip() if run_id_file.exists() else None,
            "marks": [],
        })
    rows.sort(key=lambda row: row["finished"], reverse=True)
    if rows:
        rows[0]["marks"].append("latest")
    return rows


def mark_champion(rows: list[dict[str, Any]], tracking_uri: str) -> dict[str, Any] | None:
    """Mark the run the registry's champion was trained by (its MLflow run, else its
    checkpoint's directory); returns the champion's version info, None without one."""
    from finegpt_pipeline.evaluate import registry

    champion = registry.champion(tracking_uri)
    if champion is None:
        return None
    ckpt = champion["tags"].get(registry.CKPT_TAG)
    for row in rows:
        if (row["mlflow_run_id"] and row["mlflow_run_id"] == champion["run_id"]) or (
                ckpt and Path(ckpt).parent == row["dir"].resolve()):
            row["marks"].append(f"champion v{champion['version']}")
    return champion


def name_runs(rows: list[dict[str, Any]], tracking_uri: str) -> None:
    """Each row's `name`: its MLflow run's name where the store has it, else its model shape."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)
    for row in rows:
        row["name"] = row["shape"]
        if row["mlflow_run_id"]:
            try:
                row["name"] = client.get_run(row["mlflow_run_id"]).info.run_name or row["shape"]
            except MlflowException:
                pass


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'run directory':<16} {'finished (UTC)':<16} {'steps':>11} {'val loss':>8}  "
             "what it trained"]
    for row in rows:
        steps = (f"{row['steps']}" if row["complete"]
                 else f"{row['steps']}/{row['planned']}")
        loss = (f"{row['val_loss']:.4f}{'' if row['evaluated'] else '*'}"
                if isinstance(row["val_loss"], (int, float)) else "-")
        marks = f"  [{', '.join(row['marks'])}]" if row["marks"] else ""
        lines.append(f"{row['dir'].name:<16} "
                     f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(row['finished'])):<16} "
                     f"{steps:>11} {loss:>8}  {row['name']}{marks}")
    if not all(row["evaluated"] for row in rows):
        lines.append("* the trainer's estimate on sampled val batches: no eval report yet")
    return "\n".join(lines)


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("runs", help="list training runs: newest, champion, val loss",
                              description=__doc__.split("\n\n")[1])
    which = p.add_mutually_exclusive_group()
    which.add_argument("--latest", action="store_true", help="print the newest run's directory")
    which.add_argument("--champion", action="store_true",
                       help="print the champion's run directory (the registry's alias)")
    p.add_argument("--home", help="FINEGPT_HOME to read (default: the environment's)")
    p.set_defaults(func=_cli_runs)


def _cli_runs(args) -> int:
    home = paths.home(args.home)
    rows = list_runs(home.trained_runs, home.eval_reports)
    if not rows:
        raise ValueError(f"{home.trained_runs}: no training runs yet; train one with "
                         "`make run` or `finegpt train`")
    if args.latest:
        print(rows[0]["dir"])
        return 0
    uri = paths.mlflow_tracking_uri(home.root)
    champion = mark_champion(rows, uri)
    if args.champion:
        chosen = [row for row in rows if any(m.startswith("champion") for m in row["marks"])]
        if not chosen:
            raise ValueError("no champion among the runs under "
                             f"{home.trained_runs}" + ("" if champion else ": none promoted yet"))
        print(chosen[0]["dir"])
        return 0
    name_runs(rows, uri)
    print(f"{home.trained_runs}\n{table(rows)}")
    return 0
