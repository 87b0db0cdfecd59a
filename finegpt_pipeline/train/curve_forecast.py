"""The in-run curve forecast: the final val loss a training run will reach, fitted to that
run's own val curve so far (not the planner's `plan.loss_forecast`, which forecasts from model
size and tokens across runs).

- The law: L(t) = a + b * t^(-c) in optimizer steps t, with a >= 0, b > 0 and c in
  [C_MIN, C_MAX] (a grid over c, refined around the best; a and b by least squares at
  each c), extrapolated to the
  run's last step.
- The points: the run's evals after warmup (step 0, random init, and the warmup steps follow
  no power law). Under the `wsd` schedule only the stable phase is fitted: the cool-down's
  falling learning rate lowers the loss faster than the trend, so a forecast made there would
  mix two curves; the forecast is then the stable-phase trend at the last step, which the
  cool-down usually beats (the forecast is high). Under `cosine` the learning rate falls
  throughout and every eval after warmup is fitted; the annealing at the end is not modelled
  either, so this forecast also tends to be high. The summary's forecasts at 25/50/75 % of
  the steps against the final value measure that bias run by run.
- The uncertainty: the residuals' spread sigma (n - 3 degrees of freedom, widened by the
  Student-t factor for so few: `student_t_factor`) and a parametric bootstrap (`BOOTSTRAP`
  refits of the fitted curve plus Gaussian noise of sigma, fixed seed); `se` =
  sqrt(bootstrap variance + sigma^2), the final value being one more noisy eval. On synthetic
  power-law curves (20 evals, noise 0.005-0.02 nats) +-2 se covers the true final value in
  94-99 % of runs from 25 % of the steps on (tests/engine/train/test_curve_forecast.py).
- No forecast the fit cannot support: fewer than `MIN_POINTS` evals to fit, a curve that does
  not fall, or no law with b > 0 and a >= 0 that fits; the reason is said instead.

Pure numpy (no torch); the same points give the same forecast.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from finegpt_pipeline.train import schedule

MIN_POINTS = 4  # 3 parameters: at least one degree of freedom for the residuals
C_MIN, C_MAX, C_GRID = 0.02, 3.0, 96
BOOTSTRAP = 200
CHUNK_ELEMENTS = 1 << 20  # floats per (rows x exponents x evals) block in a fit
FRACTIONS = (0.25, 0.5, 0.75)
LAW = "L(t) = a + b * t^(-c)"


def fit_range(cfg: Any) -> tuple[int, int]:
    """The steps whose evals the law is fitted to: after warmup, through the stable phase
    (`wsd`) or the whole run (`cosine`). `cfg` is a TrainConfig."""
    first = max(1, int(cfg.warmup_iters))
    if cfg.lr_schedule == "wsd":
        return first, int(schedule.cooldown_start(cfg))
    return first, int(cfg.max_iters)


def val_points(val_history: Iterable[dict]) -> list[tuple[int, float]]:
    """(step, val loss) from the trainer's `val_history`, sorted, one per step (a resumed run
    evaluates its resume step again: the last record wins)."""
    by_step = {int(r["iter"]): float(r["val_loss"]) for r in val_history}
    return sorted(by_step.items())


# Student's t 97.5 % quantiles by degrees of freedom (1-10; 1.96 beyond 30)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def student_t_factor(dof: int) -> float:
    """How much wider a 95 % interval is for a sigma estimated from `dof` residuals than for a
    known one (t quantile / 1.96): few evals give an uncertain sigma."""
    if dof <= len(_T975):
        return _T975[dof - 1] / 1.96
    return 1.0 + 0.6 / dof  # within 1 % of the t quantile ratio for 11-30; 1 beyond


def _best_c(t: np.ndarray, y: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, ...]:
    """For each row of `y` (B, n) and its candidate exponents `c` (B, K): the least-squares a
    and b at each c, and the c with the least squared error among those with b > 0 and
    a >= 0. Returns (a, b, c, ok), each (B,); ok is False where no candidate qualifies."""
    x = t[None, None, :] ** -c[:, :, None]  # (B, K, n)
    xm = x.mean(axis=2, keepdims=True)
    ym = y.mean(axis=1)[:, None, None]
    sxx = ((x - xm) ** 2).sum(axis=2)
    sxy = ((x - xm) * (y[:, None, :] - ym)).sum(axis=2)
    b = sxy / sxx
    a = ym[:, :, 0] - b * xm[:, :, 0]
    sse = ((y - y.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)[:, None] - b * sxy
    sse = np.where((b > 0) & (a >= 0), sse, np.inf)
    best = np.argmin(sse, axis=1)
    rows = np.arange(y.shape[0])
    return a[rows, best], b[rows, best], c[rows, best], np.isfinite(sse[rows, best])


def _fit(t: np.ndarray, y: np.ndarray, target: float) -> tuple[np.ndarray, np.ndarray]:
    """Best law for each row of `y` (shape (B, n)): a grid over c, then a finer one around
    the best; its forecast at `target` and its fitted values (B, n); NaN where no law with
    b > 0 and a >= 0 fits. Rows go in chunks, so a run with many evals stays small in memory."""
    rows = max(1, CHUNK_ELEMENTS // (C_GRID * len(t)))
    if y.shape[0] > rows:
        parts = [_fit(t, y[i:i + rows], target) for i in range(0, y.shape[0], rows)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    grid = np.geomspace(C_MIN, C_MAX, C_GRID)
    step = grid[1] / grid[0]
    _, _, c0, _ = _best_c(t, y, np.broadcast_to(grid, (y.shape[0], C_GRID)))
    fine = np.clip(c0[:, None] * step ** np.linspace(-1.0, 1.0, 21)[None, :], C_MIN, C_MAX)
    a, b, c, ok = _best_c(t, y, np.concatenate([fine, c0[:, None]], axis=1))
    forecast = np.where(ok, a + b * target ** -c, np.nan)
    fitted = a[:, None] + b[:, None] * t[None, :] ** -c[:, None]
    return forecast, np.where(ok[:, None], fitted, np.nan)


def forecast(points: list[tuple[int, float]], target: int, first: int = 1,
             last: int | None = None) -> dict[str, Any]:
    """The final val loss at step `target` from the (step, val loss) `points` in [first, last]:
    {"forecast", "se", "points", "note"}; forecast and se are None where the fit cannot
    support one, and the note says why."""
    last = target if last is None else last
    use = [(s, v) for s, v in points if first <= s <= last and math.isfinite(v)]
    out: dict[str, Any] = {"forecast": None, "se": None, "points": len(use)}
    if len(use) < MIN_POINTS:
        return {**out, "note": f"not enough evals yet ({len(use)} of {MIN_POINTS} to fit)"}
    t = np.array([s for s, _ in use], dtype=float)
    y = np.array([v for _, v in use], dtype=float)
    if y[-1] >= y[0]:
        return {**out, "note": "val loss not falling: no forecast"}
    [value], fitted = _fit(t, y[None, :], float(target))
    if not math.isfinite(value):
        return {**out, "note": f"no falling {LAW} fits the evals: no forecast"}
    resid = y - fitted[0]
    dof = len(use) - 3
    sigma = math.sqrt(float(resid @ resid) / dof) * student_t_factor(dof)
    rng = np.random.default_rng(0)
    sims, _ = _fit(t, fitted[0][None, :] + rng.normal(0.0, sigma, (BOOTSTRAP, len(use))),
                   float(target))
    sims = sims[np.isfinite(sims)]
    spread = float(np.var(sims)) if len(sims) > 1 else 0.0
    return {**out, "forecast": float(value), "se": math.sqrt(spread + sigma ** 2),
            "note": f"{LAW} fitted to {len(use)} evals (steps {int(t[0])}-{int(t[-1])})"}


def forecast_run(val_history: Iterable[dict], cfg: Any, through: int | None = None) -> dict[str, Any]:
    """The forecast of the run's final val loss (at cfg.max_iters) from its evals up to step
    `through` (default: all of them)."""
    first, last = fit_range(cfg)
    pts = [(s, v) for s, v in val_points(val_history) if through is None or s <= through]
    return forecast(pts, int(cfg.max_iters), first, last)


def at_fractions(val_history: list[dict], cfg: Any, final: float | None,
                 fractions: tuple[float, ...] = FRACTIONS) -> list[dict[str, Any]]:
    """What the forecast said at the last eval within each fraction of the steps, beside the
    final val loss: summary.json's `curve_forecasts` rows {at_fraction, step, forecast, se,
    final, note} (step None where no eval had been made by then)."""
    steps = [s for s, _ in val_points(val_history)]
    rows = []
    for frac in fractions:
        cutoff = frac * cfg.max_iters
        step = max((s for s in steps if s <= cutoff), default=None)
        made = (forecast_run(val_history, cfg, through=step) if step is not None else
                {"forecast": None, "se": None, "note": "no eval yet"})
        rows.append({"at_fraction": frac, "step": step, "forecast": made["forecast"],
                     "se": made["se"], "final": final, "note": made["note"]})
    return rows


FORECAST_HEADER = ("at", "step", "forecast ± se", "final", "final - forecast", "in ±2 se")


def forecast_rows(rows: list[dict] | None) -> list[tuple[str, ...]]:
    """`at_fractions` rows as table cells (the eval report's and the Dagster metadata's)."""
    cells = []
    for r in rows or []:
        at = f"{r['at_fraction']:.0%}"
        step = "-" if r.get("step") is None else str(r["step"])
        final = r.get("final")
        final_s = f"{final:.4f}" if isinstance(final, (int, float)) else "n/a"
        if r.get("forecast") is None:
            cells.append((at, step, r.get("note") or "none", final_s, "-", "-"))
            continue
        f, se = r["forecast"], r["se"]
        if isinstance(final, (int, float)):
            gap = final - f
            cells.append((at, step, f"{f:.4f} ± {se:.4f}", final_s, f"{gap:+.4f}",
                          "yes" if abs(gap) <= 2 * se else "no"))
        else:
            cells.append((at, step, f"{f:.4f} ± {se:.4f}", final_s, "-", "-"))
    return cells


def forecast_md(rows: list[dict] | None) -> str:
    """The rows as a short Markdown table ('' without rows: a run from before forecasts)."""
    cells = forecast_rows(rows)
    if not cells:
        return ""
    lines = ["| " + " | ".join(FORECAST_HEADER) + " |", "|" + "---|" * len(FORECAST_HEADER)]
    return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])
