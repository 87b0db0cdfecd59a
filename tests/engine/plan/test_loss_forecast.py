"""The loss forecast L(N, D) = E + A/N^alpha + B/D^beta: fitted, or the published coefficients."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests._bins_fixture import sample_bins  # noqa: F401 (fixture)
from finegpt_pipeline.plan import loss_forecast as lf
from finegpt_pipeline.plan.planner import build_plan
from finegpt_pipeline.plan.report import requirements_report

TRUE = {"E": 1.9, "A": 250.0, "B": 600.0, "alpha": 0.31, "beta": 0.29}
GRID = [(n, d) for n in (1e6, 3e6, 1e7, 3e7, 1e8) for d in (1e7, 1e8, 1e9)]


def _points(coef, pairs, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return [(n, d, lf.predict(coef, n, d) + rng.normal(0, noise)) for n, d in pairs]


def test_fit_recovers_known_coefficients_and_their_forecast():
    fitted = lf.fit(_points(TRUE, GRID))
    for key, value in TRUE.items():
        assert fitted["coefficients"][key] == pytest.approx(value, rel=1e-3), key
    assert fitted["rmse"] < 1e-6 and fitted["sizes"] == 5
    out = lf.forecast(5e7, 5e8, _points(TRUE, GRID))
    assert out["calibrated"] and out["inside_range"]
    assert out["val_loss"] == pytest.approx(lf.predict(TRUE, 5e7, 5e8), abs=1e-4)
    assert out["label"] == "fitted to 15 earlier runs (5 sizes)"


def test_noisy_runs_still_forecast_within_tolerance():
    out = lf.forecast(5e7, 5e8, _points(TRUE, GRID, noise=0.01))
    assert out["val_loss"] == pytest.approx(lf.predict(TRUE, 5e7, 5e8), abs=0.03)
    assert out["rmse"] < 0.02


def test_four_sizes_are_enough_and_three_are_not():
    pairs = [(1e6, 2e7), (3e6, 6e7), (1e7, 2e8), (3e7, 6e8), (1e7, 1e9), (3e6, 1e7)]
    four = lf.forecast(2e7, 4e8, _points(TRUE, pairs))
    assert four["calibrated"] and four["sizes"] == 4
    assert four["val_loss"] == pytest.approx(lf.predict(TRUE, 2e7, 4e8), abs=0.01)
    three = lf.forecast(2e7, 4e8, _points(TRUE, [p for p in pairs if p[0] != 3e7]))
    assert not three["calibrated"] and three["sizes"] == 3


def test_coefficients_stay_non_negative():
    # losses that rise with N would want A < 0; the fit holds it at 0 and lets E absorb it
    points = [(n, d, 3.0 + 1e-9 * n + 50.0 / d ** 0.3) for n, d in GRID]
    coef = lf.fit(points)["coefficients"]
    assert min(coef["E"], coef["A"], coef["B"]) >= 0 and coef["A"] == pytest.approx(0, abs=1e-9)


def test_fewer_runs_use_the_published_coefficients_labelled_uncalibrated():
    out = lf.forecast(1e9, 2e10)
    assert not out["calibrated"] and out["label"] == lf.UNCALIBRATED_LABEL
    assert "uncalibrated" in out["label"] and "Hoffmann et al. 2022" in out["label"]
    assert out["coefficients"] == lf.CHINCHILLA == {"E": 1.69, "A": 406.4, "B": 410.7,
                                                    "alpha": 0.34, "beta": 0.28}
    assert out["val_loss"] == pytest.approx(1.69 + 406.4 / 1e9 ** 0.34 + 410.7 / 2e10 ** 0.28)
    assert out["inside_range"] and "outside" not in out["note"]
    assert "Approach 3" in out["source"] and "total parameters" in out["n_meaning"]
    # a CPU demo's size is far outside what the coefficients saw, and the note says so
    tiny = lf.forecast(3_322_176, 101_376)
    assert not tiny["inside_range"] and tiny["val_loss"] > lf.UNIFORM_LOSS
    assert "outside the 70 M-16 B params" in tiny["note"] and "uniform loss" in tiny["note"]


def test_bad_points_are_refused_in_one_line():
    with pytest.raises(ValueError, match="at least 3 finite"):
        lf.fit([(1e6, 1e7, 4.0), (2e6, 1e7, float("nan")), (3e6, 1e7, 3.0)])


def test_the_plan_forecasts_with_the_published_coefficients_and_stays_reproducible():
    plans = [build_plan("cpu", 200_000, calibration=False, val_tokens=16_000) for _ in range(2)]
    assert json.dumps(plans[0], sort_keys=True) == json.dumps(plans[1], sort_keys=True)
    rep = plans[0]["report"]
    forecast = rep["loss_forecast"]
    assert forecast["calibrated"] is False and forecast["label"] == lf.UNCALIBRATED_LABEL
    assert (forecast["n"], forecast["d"]) == (rep["params"], rep["tokens_total"])
    assert forecast["val_loss"] == pytest.approx(lf.predict(lf.CHINCHILLA, rep["params"],
                                                            rep["tokens_total"]))
    # a CPU plan lies far outside the published fit (it forecasts more than the uniform loss):
    # the plan says plainly that there is no forecast, and why
    assert forecast["trusted"] is False and forecast["val_loss"] > lf.UNIFORM_LOSS
    row = [line for line in requirements_report(plans[0]).splitlines()
           if line.startswith("| Loss forecast |")]
    assert row == [f"| Loss forecast | none: N = {rep['params']:,}, D = {rep['tokens_total']:,} "
                   "is outside the published fit's range (70 M-16 B params, 5-500 B tokens), and "
                   "no evaluated run on this val.bin yet (a fit to this project's runs needs 4 sizes) "
                   f"| {lf.UNCALIBRATED_LABEL} |"]
    # inside the range, the published fit is shown
    gpt2 = lf.forecast(124e6, 10e9)
    assert gpt2["trusted"] is True and lf.shown(gpt2) == f"{gpt2['val_loss']:.2f} nats/token"
    # inside the range but above the uniform loss: it says that, not "outside the range"
    above = {**gpt2, "trusted": False, "inside_range": True, "sizes": 1}
    assert lf.shown(above) == ("none: the published fit forecasts more than the uniform loss "
                               f"{lf.UNIFORM_LOSS:.2f} here, and runs of 1 model size on this "
                               "val.bin (a fit to this project's runs needs 4 sizes)")


def test_the_plan_fits_the_points_eval_report_kept_for_its_val_bin(tmp_path, sample_bins):
    """eval_report keeps (N, D, val loss) per val.bin; a plan on those bins fits them once they
    span 4 sizes, names the file (a declared input) and stays byte-identical while it holds."""
    from finegpt_pipeline.layout import Home, read_meta, sha256_file

    home = tmp_path / "home"
    meta = read_meta(sample_bins)

    def plan():
        return build_plan("cpu", meta["train_tokens"], calibration=False, bins_dir=str(sample_bins),
                          val_tokens=meta["val_tokens"], home=home)

    assert plan()["report"]["loss_forecast"]["calibrated"] is False  # no points yet
    points_file = Home(home).forecast_points(sha256_file(sample_bins / "val.bin"))
    lf.save_points(points_file, _points(TRUE, GRID))
    assert lf.load_points(points_file) == sorted(tuple(p) for p in _points(TRUE, GRID))
    first, second = plan(), plan()
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    forecast = first["report"]["loss_forecast"]
    assert forecast["calibrated"] is True and forecast["points_file"] == str(points_file)
    rep = first["report"]
    assert forecast["val_loss"] == pytest.approx(lf.predict(TRUE, rep["params"],
                                                            rep["tokens_total"]), rel=1e-2)


def test_a_refitted_forecast_does_not_start_the_training_again(tmp_path):
    from finegpt_pipeline.train.run_dir import run_key

    plan = {"plan_version": 2, "config": {"n_layer": 2}, "report": {"loss_forecast": {"x": 1}}}
    refit = {**plan, "report": {"loss_forecast": {"x": 2}}}
    other = {**plan, "config": {"n_layer": 3}}
    assert run_key(plan, tmp_path) == run_key(refit, tmp_path)
    assert run_key(plan, tmp_path) != run_key(other, tmp_path)
