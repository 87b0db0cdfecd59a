"""`python -m assets.run_summary [RUN_ID]`: one block that says what a run made and what it
means: each asset materialized, the eval's val loss ± se and bits per byte, the verdict against
the champion, every failed check by name and severity, and the links. Exits 1 when the run
failed or an ERROR-severity check failed (Dagster's `job execute` exits 0 on a failed check),
so `make run` and CI see it. Default: the newest run of $DAGSTER_HOME's instance."""

from __future__ import annotations

import argparse
import sys

import dagster as dg

from assets.metadata_format import link_url
from assets.training import dagster_run_url
from finegpt_pipeline import paths


def _value(entry) -> object:
    return getattr(entry, "value", entry)


def summary(instance: dg.DagsterInstance, run_id: str) -> tuple[list[str], bool]:
    """(the block's lines, whether the run is a failure for the exit status)."""
    run = instance.get_run_by_id(run_id)
    if run is None:
        raise ValueError(f"run {run_id}: not in this instance ($DAGSTER_HOME)")
    lines = [f"== run {run_id[:8]} ({run.job_name}): {run.status.value}"]
    made, checks = {}, []
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            mat = event.step_materialization_data.materialization
            made[mat.asset_key.to_user_string()] = mat.metadata or {}
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            checks.append(event.event_specific_data)
    for key, meta in made.items():
        link = link_url(meta.get("mlflow_run_url")) or ""
        lines.append(f"made   {key}" + (f"  {link}" if link else ""))
    report = made.get("eval_report")
    if report:
        loss, se = _value(report.get("val_loss")), _value(report.get("val_loss_se"))
        bpb, uni = _value(report.get("val_bpb")), _value(report.get("unigram_loss"))
        lines.append(f"eval   val loss {loss} ± {se} nats, {bpb} bits/byte; unigram baseline "
                     f"{uni}")
        verdict = _value(report.get("verdict"))
        if verdict:
            lines.append(f"       {str(verdict).replace('**', '')}")
        if report.get("report_html"):
            # shown relative to FINEGPT_HOME (an absolute path, from older runs, stays whole)
            lines.append(f"       report: {paths.home().root / _value(report['report_html'])}")
    failed_error = False
    for check in checks:
        severity = check.severity.value if check.severity else "ERROR"
        name = f"{check.asset_key.to_user_string()}:{check.check_name}"
        note = _value((check.metadata or {}).get("note", "")) or ""
        if check.passed:
            lines.append(f"check  passed  {name}" + (f": {note}" if note else ""))
            continue
        failed_error |= severity == "ERROR"
        lines.append(f"check  FAILED ({severity})  {name}" + (f": {note}" if note else ""))
    lines.append(f"dagster  {dagster_run_url(run_id)}")
    failed = run.status != dg.DagsterRunStatus.SUCCESS or failed_error
    lines.append("result   " + ("FAILED: " + ("the run failed" if run.status !=
                                               dg.DagsterRunStatus.SUCCESS else
                                               "an ERROR-severity check failed")
                                 if failed else "ok"))
    return lines, failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m assets.run_summary", description=__doc__)
    parser.add_argument("run_id", nargs="?", help="a run id (default: the newest run)")
    args = parser.parse_args(argv)
    with dg.DagsterInstance.get() as instance:
        run_id = args.run_id
        if run_id is None:
            runs = instance.get_runs(limit=1)
            if not runs:
                print("error: no run in this instance ($DAGSTER_HOME)", file=sys.stderr)
                return 2
            run_id = runs[0].run_id
        try:
            lines, failed = summary(instance, run_id)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
