"""The config a run trains: a plan file's TrainConfig, with `--max-iters` and `--set` applied
by the planner's own rules, and the plan's report kept as it is. No torch import: the trainer's
CLI and anyone preparing a launch read plans through here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finegpt_pipeline.config import TrainConfig, plan_parts, read_plan
from finegpt_pipeline.plan.costs import reschedule


def planner_report(plan_path: str | Path) -> dict[str, Any]:
    """A plan file's report (estimates, hardware, warnings), kept as it is; {} for a bare config."""
    return plan_parts(read_plan(plan_path), str(plan_path))[1]


def load_plan(plan_path: str | Path, overrides: list[str] | None = None,
              max_iters: int | None = None) -> TrainConfig:
    """The run's TrainConfig from a plan file; every error names the plan file.

    `max_iters` re-derives the plan's schedule for that many steps with `costs.reschedule` (the
    planner's own rule, fed the plan's step-time estimate), then re-applies the fields the plan
    was made with `--set`, exactly as `finegpt plan --set max_iters=N` would; `overrides`
    (`--set key=value`, `--eval-every`, `--checkpoint-every`) win over both."""
    try:
        config, report = plan_parts(read_plan(plan_path), str(plan_path))
        cfg = TrainConfig.from_dict(config, source=str(plan_path))
        if max_iters is not None:
            if max_iters < 1:
                raise ValueError(f"--max-iters must be >= 1 (got {max_iters})")
            cfg = reschedule(cfg, max_iters, report.get("est_step_seconds"))
            fixed = {k: v for k, v in (report.get("fixed_fields") or {}).items()
                     if k in cfg.to_dict() and k != "max_iters"}
            cfg = TrainConfig.from_dict({**cfg.to_dict(), **fixed}, source=str(plan_path))
        return cfg.with_overrides(overrides) if overrides else cfg
    except ValueError as exc:
        if str(plan_path) in str(exc):
            raise
        raise ValueError(f"{plan_path}: {exc}") from None
