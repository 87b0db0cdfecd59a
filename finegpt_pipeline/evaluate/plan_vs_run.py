"""The plan against reality: what the planner estimated for a run (its run directory's
plan.json `report`) beside what the run measured (summary.json), with measured / planned, so a
user learns how far to trust the planner.

- step time: planned `est_step_seconds`; measured = tokens per step / the run's tokens/s (the
  trainer times the steps after the first, evaluations excluded; it logs no step time itself);
- tokens/s: planned `est_tokens_per_second`; measured `tokens_per_s`;
- peak memory: planned tensors (`memory_breakdown.allocated_estimate`, what
  torch.cuda.max_memory_allocated should report) against the measured `peak_memory_bytes`;
  on a CPU it is not measured, and the row says so instead of reading 0;
- wall time: the planner's time for the steps trained (`costs.run_seconds` of plan.json's
  config at the planned step time: a `--max-iters` launch changes the steps) against the run's
  `wall_time_s` (steps, evaluations, checkpoints);
- MFU: planned `expected_mfu`; measured `mfu`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from finegpt_pipeline.config import TrainConfig, plan_parts
from finegpt_pipeline.plan.costs import run_seconds
from finegpt_pipeline.train.run_dir import PLAN_NAME, read_summary


def _read(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _row(quantity: str, unit: str, planned: float | None, measured: float | None,
         source: str, note: str = "") -> dict[str, Any]:
    ratio = measured / planned if planned and measured is not None else None
    return {"quantity": quantity, "unit": unit, "planned": planned, "measured": measured,
            "ratio": ratio, "source": source, "note": note}


def compare(run: str | Path) -> dict[str, Any] | None:
    """Planned and measured rows for the run directory `run`; None without a readable
    summary.json, or a plan.json with no report (a hand-written config)."""
    run = Path(run)
    summary, plan = read_summary(run), _read(run / PLAN_NAME)
    if summary is None or plan is None:
        return None
    try:
        config, report = plan_parts(plan, str(run / PLAN_NAME))
        cfg = TrainConfig.from_dict(config, source=str(run / PLAN_NAME))
    except ValueError:
        return None
    if not report:
        return None
    prov = report.get("provenance") or {}
    device = str(summary.get("device") or "?").split(":")[0]
    steps = int(summary.get("steps") or 0)
    tokens_per_step = (summary.get("tokens_seen") or 0) / steps if steps else None
    tps = _number(summary.get("tokens_per_s")) or None  # 0.0: no step was timed
    step_s = _number(report.get("est_step_seconds"))
    rows = [
        _row("step time", "s", step_s,
             tokens_per_step / tps if tokens_per_step and tps else None,
             prov.get("est_step_seconds", "estimated"),
             "measured: tokens/step ÷ tokens/s"),
        _row("tokens/s", "tokens/s", _number(report.get("est_tokens_per_second")), tps,
             prov.get("est_step_seconds", "estimated")),
    ]
    planned_mem = _number((report.get("memory_breakdown") or {}).get("allocated_estimate"))
    measured_mem = _number(summary.get("peak_memory_bytes"))
    if device == "cuda" and measured_mem:
        rows.append(_row("peak memory (tensors)", "bytes", planned_mem, measured_mem,
                         prov.get("peak_memory_bytes", "estimated"), "torch max_memory_allocated"))
    else:
        rows.append(_row("peak memory (tensors)", "bytes", planned_mem, None,
                         prov.get("peak_memory_bytes", "estimated"), f"not measured on {device}"))
    planned_wall = run_seconds(cfg, step_s) if step_s else None
    rows.append(_row("wall time", "s", planned_wall, _number(summary.get("wall_time_s")),
                     prov.get("est_hours", "estimated"),
                     f"planned for the {cfg.max_iters:,} steps trained"))
    rows.append(_row("MFU", "", _number(report.get("expected_mfu")), _number(summary.get("mfu")),
                     "estimated"))
    return {"rows": rows, "device": device, "steps": steps,
            "hardware": report.get("gpu_name") or (report.get("hardware") or {}).get("name")}
