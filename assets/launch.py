"""`python -m assets.launch -j JOB [-c FILE]... [--tags JSON] [-o OPS]`: run a job of this code location
as `dagster job execute -m assets.definitions` does (in this process, on $DAGSTER_HOME's
instance, its steps as the job's executor says), but filed under workspace.yaml's code location
as a run launched from the UI is: it shows on the Overview timeline beside those, and the UI's
Re-execute runs it there without a warning. Then prints the run's summary block
(assets/run_summary.py) and exits 1 when the run failed or an ERROR-severity check failed.
`make run`, `make demo` and the other make targets run jobs this way."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import dagster as dg

from assets import dagster_internals, jobs
from assets.run_summary import summary

WORKSPACE = Path(__file__).resolve().parents[1] / "workspace.yaml"


def _tags(text: str | None) -> dict[str, str]:
    try:
        tags = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise SystemExit(f"error: --tags {text!r}: not JSON ({exc}); give an object, e.g. "
                         "'{\"dagster/partition\": \"KEY\"}'") from None
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise SystemExit(f"error: --tags {text!r}: give a JSON object of strings")
    return tags


def launch(job: str, config_files: list[str], tags: dict[str, str],
           op_selection: list[str] | None = None) -> tuple[list[str], bool]:
    """Run `job`; (its summary block's lines, whether it failed)."""
    from assets.definitions import defs

    repository = defs.get_repository_def()
    if job not in repository.job_names:
        raise SystemExit(f"error: no job {job!r} in assets.definitions (it has "
                         f"{', '.join(sorted(n for n in repository.job_names if not n.startswith('__')))})")
    origin = dagster_internals.workspace_job_origin(str(WORKSPACE), jobs.LOCATION,
                                                    repository.name, job)
    run_config = dg.config_from_files(config_files) if config_files else {}
    recon = dagster_internals.module_job("assets.definitions", "defs", job)
    with dg.DagsterInstance.get() as instance:
        run = dagster_internals.execute_in_process(recon, instance, run_config, tags,
                                                  op_selection, origin)
        return summary(instance, run.run_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m assets.launch", description=__doc__)
    parser.add_argument("-j", "--job", required=True, help="pipeline_job, data_job or train_job")
    parser.add_argument("-c", "--config", action="append", default=[],
                        help="a run-config YAML file (configs/); repeat to merge several")
    parser.add_argument("--tags", help="run tags as a JSON object (a partition's: "
                                       "`python -m assets.shards add --tags` prints them)")
    parser.add_argument("-o", "--op-selection",
                        help="comma-separated steps to run (`dagster job execute -o`'s syntax)")
    args = parser.parse_args(argv)
    ops = args.op_selection.split(",") if args.op_selection else None
    lines, failed = launch(args.job, args.config, _tags(args.tags), ops)
    print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
