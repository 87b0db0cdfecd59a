"""The in-run curve forecast on synthetic val curves whose true final value is known."""

from __future__ import annotations

import numpy as np
import pytest

from finegpt_pipeline.config import TrainConfig
from finegpt_pipeline.train import curve_forecast as cf

T = 1000
STEPS = [k * T // 20 for k in range(1, 21)]  # 20 evals, as the planner schedules them


def law(t, a=3.0, b=8.0, c=0.4):
    return a + b * t ** -c


def noisy(seed: int, noise: float, through: float, c: float = 0.4) -> list[tuple[int, float]]:
    rng = np.random.default_rng(seed)
    return [(s, law(s, c=c) + rng.normal(0.0, noise)) for s in STEPS if s <= through * T]


def test_exact_power_law_is_recovered():
    pts = [(s, law(s)) for s in STEPS[:8]]
    made = cf.forecast(pts, T)
    assert made["forecast"] == pytest.approx(law(T), abs=2e-3)
    assert made["se"] < 0.01 and made["points"] == 8
    assert "fitted to 8 evals (steps 50-400)" in made["note"]


@pytest.mark.parametrize("through", cf.FRACTIONS)
@pytest.mark.parametrize("c, noise", [(0.3, 0.01), (0.6, 0.02)])
def test_uncertainty_covers_the_true_final_value(through, c, noise):
    misses, errors, ses = 0, [], []
    for seed in range(60):
        made = cf.forecast(noisy(seed, noise, through, c), T)
        assert made["forecast"] is not None
        error = made["forecast"] - law(T, c=c)
        misses += abs(error) > 2 * made["se"]
        errors.append(error)
        ses.append(made["se"])
    assert misses <= 6, misses  # +-2 se holds the truth in >= 90 % of runs
    # and is not so wide that it says nothing: about the forecast's actual error
    rmse = float(np.sqrt(np.mean(np.square(errors))))
    assert float(np.median(ses)) < 3 * rmse, (np.median(ses), rmse)


def test_more_evals_narrow_the_forecast():
    ses = [cf.forecast(noisy(1, 0.01, f), T)["se"] for f in cf.FRACTIONS]
    assert ses[0] > ses[1] > ses[2]


def test_says_not_enough_evals_early():
    made = cf.forecast(noisy(0, 0.01, 0.15), T)  # 3 evals
    assert made["forecast"] is None and made["se"] is None
    assert made["note"] == "not enough evals yet (3 of 4 to fit)"
    assert cf.forecast([], T)["note"] == "not enough evals yet (0 of 4 to fit)"


def test_no_forecast_for_a_curve_that_does_not_fall():
    rising = [(s, 5.0 + 0.001 * s) for s in STEPS[:6]]
    assert cf.forecast(rising, T)["forecast"] is None
    assert "not falling" in cf.forecast(rising, T)["note"]
    flat_then_up = [(50, 5.0), (100, 4.0), (150, 4.5), (200, 5.5)]
    assert cf.forecast(flat_then_up, T)["forecast"] is None


def test_same_points_same_forecast():
    pts = noisy(3, 0.02, 0.5)
    assert cf.forecast(pts, T) == cf.forecast(list(pts), T)


def test_fit_range_leaves_out_warmup_and_the_wsd_cooldown():
    cosine = TrainConfig(max_iters=1000, lr_decay_iters=1000, warmup_iters=20)
    assert cf.fit_range(cosine) == (20, 1000)
    wsd = TrainConfig(max_iters=1000, lr_decay_iters=1000, warmup_iters=20, lr_schedule="wsd",
                      cooldown_frac=0.3)
    assert cf.fit_range(wsd) == (20, 700)
    # evals in the cool-down do not move the forecast: it is the stable phase's trend
    history = [{"iter": 0, "val_loss": 10.8}] + [{"iter": s, "val_loss": law(s)} for s in STEPS]
    cooled = [dict(r, val_loss=r["val_loss"] - (0.2 if r["iter"] > 700 else 0)) for r in history]
    assert cf.forecast_run(cooled, wsd) == cf.forecast_run(history[:15], wsd)
    assert cf.forecast_run(cooled, wsd)["forecast"] == pytest.approx(law(T), abs=2e-3)


def test_at_fractions_reports_what_was_said_then():
    cfg = TrainConfig(max_iters=1000, lr_decay_iters=1000, warmup_iters=20)
    rng = np.random.default_rng(7)
    # a resumed run evaluates its resume step twice: the last record wins
    history = [{"iter": 0, "val_loss": 10.8}] + [
        {"iter": s, "val_loss": law(s) + rng.normal(0, 0.01)} for s in STEPS] + [
        {"iter": 500, "val_loss": law(500)}]
    rows = cf.at_fractions(history, cfg, final=law(T))
    assert [r["at_fraction"] for r in rows] == [0.25, 0.5, 0.75]
    assert [r["step"] for r in rows] == [250, 500, 750]
    for r in rows:
        assert r["final"] == law(T)
        assert abs(r["forecast"] - r["final"]) <= 2 * r["se"]
        made = cf.forecast_run(history, cfg, through=r["step"])  # as the eval then said
        assert (r["forecast"], r["se"], r["note"]) == (made["forecast"], made["se"], made["note"])
    early = cf.at_fractions(history[:4], TrainConfig(max_iters=100, lr_decay_iters=100,
                                                       warmup_iters=5), final=None)
    assert early[0]["forecast"] is None and early[0]["note"].startswith("not enough evals yet")


def test_forecast_table():
    rows = [{"at_fraction": 0.25, "step": 33, "forecast": None, "se": None, "final": 7.3,
             "note": "not enough evals yet (2 of 4 to fit)"},
            {"at_fraction": 0.5, "step": 60, "forecast": 7.5, "se": 0.05, "final": 7.3,
             "note": "x"},
            {"at_fraction": 0.75, "step": 96, "forecast": 7.34, "se": 0.01, "final": 7.3,
             "note": "x"}]
    lines = cf.forecast_md(rows).splitlines()
    assert lines[0] == "| at | step | forecast ± se | final | final - forecast | in ±2 se |"
    assert lines[2] == "| 25% | 33 | not enough evals yet (2 of 4 to fit) | 7.3000 | - | - |"
    assert lines[3] == "| 50% | 60 | 7.5000 ± 0.0500 | 7.3000 | -0.2000 | no |"
    assert lines[4] == "| 75% | 96 | 7.3400 ± 0.0100 | 7.3000 | -0.0400 | no |"
    assert cf.forecast_md(None) == "" and cf.forecast_md([]) == ""
