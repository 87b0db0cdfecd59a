"""A forecast of a run's val loss from its size: L(N, D) = E + A / N^alpha + B / D^beta
(Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models", eq. 2).

- N is the model's total parameter count (tied token embedding once, position embedding
  included: `costs.param_count`, `GPT.get_num_params()`), the count Hoffmann et al. fit;
  Kaplan et al. 2020 count non-embedding parameters instead (Pearce & Song 2024 reconcile the
  two). D is the tokens the run trained on (tokens seen, repeats included).
- Calibrated: once `MIN_SIZES` finished runs of different sizes N hold an eval val loss on the
  same val.bin, `fit` fits E, A, B >= 0 and alpha, beta to them (least squares on L: a grid over
  alpha and beta, refined once, with an exact 3-variable non-negative least squares for E, A,
  B at each point; numpy only).
- Otherwise uncalibrated: the published Approach-3 coefficients (`CHINCHILLA`), fitted on
  MassiveText with another tokenizer for 70 M-16 B parameters and 5-500 B tokens; far outside
  that range (a CPU demo) they forecast more than the uniform loss, and the label says so.

The plan uses the published coefficients only: a plan is a function of its declared inputs
(hardware, data, goal, overrides) and must stay byte-identical for them, and the run key of
`trained_checkpoint` hashes it; a fit refreshed by each eval would re-key every run.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from finegpt_pipeline.atomic import write_json
from finegpt_pipeline.config import GPT2_VOCAB_SIZE

CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
CHINCHILLA_SOURCE = ("Hoffmann et al. 2022, Training Compute-Optimal Large Language Models, "
                     "Approach 3 (eq. 10): E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28")
CHINCHILLA_RANGE = {"n": (7e7, 1.6e10), "d": (5e9, 5e11)}  # what the published fit saw
UNCALIBRATED_LABEL = "uncalibrated (Hoffmann et al. 2022, Approach 3)"
MIN_SIZES = 4  # finished runs of distinct N before the law is fitted to this project's runs
N_MEANING = "total parameters (embeddings included, as Hoffmann et al. count them)"
D_MEANING = "tokens seen in training"
UNIFORM_LOSS = math.log(GPT2_VOCAB_SIZE)
_COARSE = np.round(np.arange(0.02, 1.2001, 0.02), 4)
_FINE_HALF_WIDTH, _FINE_STEP = 0.02, 0.001


def predict(coef: dict[str, float], n: float, d: float) -> float:
    """L(N, D) under `coef` (keys E, A, B, alpha, beta)."""
    return float(coef["E"] + coef["A"] / n ** coef["alpha"] + coef["B"] / d ** coef["beta"])


def _nnls_on_grid(n: np.ndarray, d: np.ndarray, y: np.ndarray, alphas: np.ndarray,
                  betas: np.ndarray) -> tuple[float, dict[str, float]]:
    """Best (SSE, coefficients) over the (alpha, beta) grid, E, A, B >= 0 exactly: the NNLS
    optimum is the least-squares solution on some subset of the columns that is feasible, and
    every feasible subset solution is a candidate, so the best feasible one is the optimum."""
    a, b = (g.ravel() for g in np.meshgrid(alphas, betas, indexing="ij"))
    # columns scaled to their largest value, so tiny N^-alpha terms stay well conditioned
    cols = np.stack([np.ones((a.size, n.size)), n[None, :] ** -a[:, None],
                     d[None, :] ** -b[:, None]], axis=1)  # (G, 3, k)
    scale = cols.max(axis=2)  # (G, 3)
    cols = cols / scale[:, :, None]
    best_sse = np.full(a.size, float((y ** 2).sum()))  # all three zero
    best_coef = np.zeros((a.size, 3))
    for size in (1, 2, 3):
        for subset in itertools.combinations(range(3), size):
            x = np.transpose(cols[:, list(subset), :], (0, 2, 1))  # (G, k, s)
            coef = np.einsum("gsk,k->gs", np.linalg.pinv(x), y)
            sse = ((np.einsum("gks,gs->gk", x, coef) - y) ** 2).sum(axis=1)
            ok = (coef >= 0).all(axis=1) & (sse < best_sse - 1e-15)
            best_sse = np.where(ok, sse, best_sse)
            full = np.zeros((a.size, 3))
            full[:, list(subset)] = coef
            best_coef = np.where(ok[:, None], full, best_coef)
    g = int(np.argmin(best_sse))
    e_, a_, b_ = best_coef[g] / scale[g]
    return float(best_sse[g]), {"E": float(e_), "A": float(a_), "B": float(b_),
                                "alpha": float(a[g]), "beta": float(b[g])}


def fit(points: Iterable[tuple[float, float, float]]) -> dict[str, Any]:
    """E, A, B, alpha, beta fitted to (N, D, val loss) points; with the fit's RMSE and range."""
    pts = np.array(list(points), dtype=np.float64)
    if pts.ndim != 2 or len(pts) < 3 or not np.isfinite(pts).all() or (pts[:, :2] <= 0).any():
        raise ValueError(f"a fit needs at least 3 finite (N > 0, D > 0, loss) points, got {pts.tolist()}")
    n, d, y = pts.T
    _, coarse = _nnls_on_grid(n, d, y, _COARSE, _COARSE)
    fine = [np.round(np.arange(max(0.005, c - _FINE_HALF_WIDTH), c + _FINE_HALF_WIDTH + 1e-9,
                               _FINE_STEP), 4) for c in (coarse["alpha"], coarse["beta"])]
    sse, coef = _nnls_on_grid(n, d, y, *fine)
    return {"coefficients": coef, "rmse": math.sqrt(sse / len(y)), "runs": int(len(y)),
            "sizes": int(len(np.unique(n))),
            "range": {"n": (float(n.min()), float(n.max())), "d": (float(d.min()), float(d.max()))}}


def _inside(value: float, lo_hi: tuple[float, float]) -> bool:
    return lo_hi[0] <= value <= lo_hi[1]


def forecast(n: int | float, d: int | float,
             points: Iterable[tuple[float, float, float]] = ()) -> dict[str, Any]:
    """This run's forecast val loss at N=`n`, D=`d`: fitted to `points` (earlier runs' N, D,
    val loss on the same val.bin) when they hold `MIN_SIZES` distinct sizes, else from the
    published coefficients, labelled "uncalibrated". JSON-ready and deterministic."""
    pts = [tuple(map(float, p)) for p in points]
    sizes = len({p[0] for p in pts})
    base = {"n": int(n), "d": int(d), "n_meaning": N_MEANING, "d_meaning": D_MEANING,
            "law": "L(N, D) = E + A/N^alpha + B/D^beta"}
    if sizes >= MIN_SIZES:
        fitted = fit(pts)
        coef, rng = fitted["coefficients"], fitted["range"]
        value = predict(coef, n, d)
        inside = _inside(n, rng["n"]) and _inside(d, rng["d"])
        return {**base, "val_loss": value, "calibrated": True, "coefficients": coef,
                "rmse": fitted["rmse"], "runs": fitted["runs"], "sizes": fitted["sizes"],
                "fit_range": rng, "inside_range": inside, "trusted": value < UNIFORM_LOSS,
                "label": f"fitted to {fitted['runs']} earlier runs ({fitted['sizes']} sizes)",
                "note": (f"fit RMSE {fitted['rmse']:.3f} nats on runs evaluated on this val.bin"
                         + ("" if inside else "; this run lies outside their N/D range"))}
    value = predict(CHINCHILLA, n, d)
    inside = _inside(n, CHINCHILLA_RANGE["n"]) and _inside(d, CHINCHILLA_RANGE["d"])
    note = ("Hoffmann et al. 2022's Approach-3 fit, made on MassiveText with another tokenizer; "
            f"earlier runs on this val.bin span {sizes} model size{'s' if sizes != 1 else ''}, "
            f"a fit to them needs {MIN_SIZES}")
    if not inside:
        note += "; this run is outside the 70 M-16 B params, 5-500 B tokens they were fitted on"
    if value > UNIFORM_LOSS:
        note += f"; the forecast exceeds the uniform loss ln 50257 = {UNIFORM_LOSS:.2f}"
    # shown only where the published fit holds: outside its range it says nothing we stand by
    trusted = inside and value < UNIFORM_LOSS
    return {**base, "val_loss": value, "calibrated": False, "coefficients": dict(CHINCHILLA),
            "source": CHINCHILLA_SOURCE, "runs": len(pts), "sizes": sizes,
            "inside_range": inside, "trusted": trusted, "label": UNCALIBRATED_LABEL,
            "note": note}


def shown(forecast: dict[str, Any] | None) -> str:
    """The forecast as a reader sees it: its value, or plainly why there is none."""
    if not forecast:
        return "none (tokens seen unknown)"
    if forecast.get("trusted", True):
        return f"{forecast['val_loss']:.2f} nats/token"
    if forecast["calibrated"]:
        return "none: the fit to this project's runs forecasts more than the uniform loss here"
    sizes = forecast["sizes"]
    runs = (f"runs of {sizes} model size{'s' if sizes != 1 else ''} on this val.bin" if sizes
            else "no evaluated run on this val.bin yet")
    why = (f"N = {forecast['n']:,}, D = {forecast['d']:,} is outside the published fit's range "
           "(70 M-16 B params, 5-500 B tokens)" if not forecast.get("inside_range", False)
           else f"the published fit forecasts more than the uniform loss {UNIFORM_LOSS:.2f} here")
    return f"none: {why}, and {runs} (a fit to this project's runs needs {MIN_SIZES} sizes)"


# ---------------------------------------------------------------- the points between stages


def save_points(path: Path, points: Iterable[tuple[float, float, float]]) -> None:
    """eval_report's fit points for the next plan on the same val.bin (atomic, sorted)."""
    write_json(path, {"points": sorted([float(n), float(d), float(y)] for n, d, y in points)})


def load_points(path: Path) -> list[tuple[float, float, float]]:
    """The points `save_points` wrote; none when there is no such file."""
    try:
        return [tuple(p) for p in json.loads(Path(path).read_text())["points"]]
    except FileNotFoundError:
        return []
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a forecast points file ({exc}); delete it, the next "
                         "eval_report writes it again") from None
