"""How a training run is going, said at each eval: step of total, tokens seen, time elapsed and
left, the val loss, and the in-run forecast of the final val loss (`curve_forecast`) with its
uncertainty; at the end, what that forecast said at 25/50/75 % of the steps against the final
value.

Each eval's line goes where the run's lines go (stdout, or the Dagster run through Pipes) and
its numbers to the JSONL log and MLflow at the eval's step: `progress/fraction`,
`tokens_seen` (unless the step's log row has it), `progress/elapsed_seconds`, `progress/eta_seconds`, and, where the fit
supports one, `forecast/final_val_loss` and `forecast/final_val_loss_se`; the MLflow tag
`finegpt.curve_forecast` holds the latest forecast in words.

Time left comes from the step times this process measured (the first logged window, which
holds compilation and warm-up, is left out) and the last eval's duration, never from the plan.
"""

from __future__ import annotations

import time
from typing import Any

from finegpt_pipeline.data.progress import duration
from finegpt_pipeline.train import curve_forecast

FORECAST_TAG = "finegpt.curve_forecast"


def evals_left(it: int, max_iters: int, eval_interval: int) -> int:
    """Evals the trainer makes after step `it`: every eval_interval, and one at the end."""
    if it >= max_iters:
        return 0
    due = (max_iters - 1) // eval_interval - it // eval_interval if eval_interval > 0 else 0
    return due + 1


class Progress:
    def __init__(self, cfg: Any, max_iters: int, first_iter: int, elapsed_before: float,
                 report: Any):
        self.cfg, self.max_iters, self.report = cfg, max_iters, report
        self.first_iter, self.elapsed_before = first_iter, elapsed_before
        self.t_start = time.time()
        self.measured_steps, self.measured_time = 0, 0.0
        self.eval_s: float | None = None

    def elapsed(self) -> float:
        """Seconds of training so far, earlier attempts of a resumed run included."""
        return self.elapsed_before + (time.time() - self.t_start)

    def steps_timed(self, end_iter: int, steps: int, seconds: float) -> None:
        """A logged window of `steps` steps ending at `end_iter` took `seconds`; the first
        window of this process (compilation, warm-up) is not a measure of the pace."""
        if end_iter - steps > self.first_iter:
            self.measured_steps += steps
            self.measured_time += seconds

    def tokens_per_s(self, tokens_per_step: int) -> float:
        """The measured pace in tokens/s (0 before any measured window)."""
        if self.measured_time <= 0:
            return 0.0
        return self.measured_steps * tokens_per_step / self.measured_time

    def eta(self, it: int) -> float | None:
        """Seconds left after step `it`: steps at the measured pace, evals at the last one's
        duration; None before a step was measured."""
        if it >= self.max_iters:
            return 0.0
        if self.measured_steps == 0:
            return None
        steps = (self.max_iters - it) * self.measured_time / self.measured_steps
        return steps + evals_left(it, self.max_iters, self.cfg.eval_interval) * (self.eval_s or 0.0)

    def at_eval(self, it: int, tokens_seen: int, val_loss: float, best: float,
                val_history: list[dict], eval_s: float, log_tokens: bool = True) -> None:
        """Report the eval just made at step `it` (it took `eval_s` seconds); `log_tokens`: the
        step has no log row, so this row carries its `tokens_seen`."""
        self.eval_s = eval_s
        made = curve_forecast.forecast_run(val_history, self.cfg)
        eta, elapsed = self.eta(it), self.elapsed()
        row = {"val_loss": val_loss, "best_val_loss": best,
               "progress/fraction": it / max(1, self.max_iters),
               "progress/elapsed_seconds": elapsed}
        if log_tokens:  # the x-axis of the charts by tokens, as the log rows have it
            row["tokens_seen"] = float(tokens_seen)
        if eta is not None:
            row["progress/eta_seconds"] = eta
        if made["forecast"] is not None:
            row["forecast/final_val_loss"] = made["forecast"]
            row["forecast/final_val_loss_se"] = made["se"]
        self.report.metrics(it, row)
        said = forecast_words(made)
        self.report.tags({FORECAST_TAG: f"step {it}: {said}"})
        left = ("measuring the pace" if eta is None else "done" if eta == 0
                else f"~{duration(eta)} left")
        self.report.info(
            f"iter {it}/{self.max_iters} ({it / max(1, self.max_iters):.0%}): val loss "
            f"{val_loss:.4f} (best {best:.4f}); {tokens_seen:,} tokens; {duration(elapsed)} "
            f"elapsed, {left}; final val loss {said}")

    def finish(self, val_history: list[dict], final: float) -> list[dict[str, Any]]:
        """The forecasts made at 25/50/75 % of the steps against the final val loss (the
        summary's `curve_forecasts`), said in one line."""
        rows = curve_forecast.at_fractions(val_history, self.cfg, final)
        parts = [f"{r['at_fraction']:.0%} (step {r['step']}): "
                 + (f"{r['forecast']:.4f} ± {r['se']:.4f}" if r["forecast"] is not None
                    else "none") for r in rows]
        self.report.info(f"final val loss {final:.4f}; forecast at " + ", ".join(parts))
        return rows


def forecast_words(made: dict[str, Any]) -> str:
    """A `curve_forecast.forecast` result in words."""
    if made["forecast"] is None:
        return f"forecast: {made['note']}"
    return (f"forecast {made['forecast']:.4f} ± {made['se']:.4f} ({made['points']} evals "
            "fitted)")
