"""finegpt: a FineWeb shard to a trained, evaluated small GPT, one stage at a time.

Typical order: tokenize (or stats) a shard, plan a run for your hardware, train it, eval the
checkpoint, sample from it. `finegpt COMMAND --help` shows each command's options.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from finegpt_pipeline import paths
from finegpt_pipeline.locks import Busy

# Stage modules that contribute a subcommand through their `add_cli(subparsers)`, so a stage's
# flags live beside its logic; in the order `finegpt --help` lists them.
STAGE_MODULES = [
    "finegpt_pipeline.data.stats",
    "finegpt_pipeline.data.tokenized_bins",
    "finegpt_pipeline.data.bins_set",
    "finegpt_pipeline.plan.planner",
    "finegpt_pipeline.train.trainer",
    "finegpt_pipeline.evaluate.sample",
    "finegpt_pipeline.evaluate.evaluator",
    "finegpt_pipeline.evaluate.runs",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="finegpt", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in STAGE_MODULES:
        importlib.import_module(name).add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return _run(build_parser(), argv)


def run_stage(add_clis, command: str | None = None, argv: list[str] | None = None) -> int:
    """One stage package's commands on their own (`python -m finegpt_pipeline.train ...`, a
    stage's `__main__`), same flags and errors, without importing the other stages (a GPU box
    may lack duckdb or dagster). `command` is prepended to the arguments when the package has
    a single subcommand."""
    parser = argparse.ArgumentParser(prog="finegpt")
    sub = parser.add_subparsers(dest="command", required=True)
    for add_cli in add_clis:
        add_cli(sub)
    argv = sys.argv[1:] if argv is None else list(argv)
    return _run(parser, [command, *argv] if command else argv)


# commands that write under FINEGPT_HOME (measurements, ids, bins sets, MLflow store)
WRITES_HOME = {"stats", "tokenize", "bins-set", "plan", "train", "eval"}


def _run(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    args = parser.parse_args(argv)
    try:
        if args.command in WRITES_HOME and not getattr(args, "list", False):
            paths.check_writable(getattr(args, "home", None))
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, Busy) as exc:
        # Bad input or a busy resource: one clear line naming the file and the fix.
        print(f"finegpt {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
