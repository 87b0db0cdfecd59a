"""`finegpt`: the engine's command line. Each stage module registers its own subcommand
through `add_cli(subparsers)`, so a stage's flags live beside its logic."""

from __future__ import annotations

import argparse
import importlib
import sys

from finegpt_pipeline.locks import Busy

# Stage modules that contribute a subcommand, in the order `finegpt --help` lists them.
STAGE_MODULES = [
    "finegpt_pipeline.stats",
    "finegpt_pipeline.tokenized_bins",
    "finegpt_pipeline.bins_set",
    "finegpt_pipeline.plan",
    "finegpt_pipeline.train",
    "finegpt_pipeline.sample",
    "finegpt_pipeline.evaluate",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="finegpt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in STAGE_MODULES:
        importlib.import_module(name).add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return _run(build_parser(), argv)


def run_stage(add_cli, command: str | None = None, argv: list[str] | None = None) -> int:
    """One stage's CLI on its own (`python -m finegpt_pipeline.train ...`), same flags and
    errors, without importing the other stages (a GPU box may lack duckdb or dagster).
    `command` is prepended to the arguments when the module has a single subcommand."""
    parser = argparse.ArgumentParser(prog="finegpt")
    add_cli(parser.add_subparsers(dest="command", required=True))
    argv = sys.argv[1:] if argv is None else list(argv)
    return _run(parser, [command, *argv] if command else argv)


def _run(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError, Busy) as exc:
        # Bad input or a busy resource: one clear line naming the file and the fix.
        print(f"finegpt {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
