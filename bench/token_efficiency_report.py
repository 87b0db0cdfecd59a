"""The analysis and the Markdown of bench/token_efficiency.py: parsing its arguments, picking
each side's learning rate, the steps each needs to reach a target loss, and the table
docs/benchmarks.md keeps. Pure functions, unit-tested in tests/bench/test_token_efficiency.py."""

from __future__ import annotations

import statistics
from typing import Any

GOAL = 0.75  # ours must reach nanoGPT's final loss in at most this fraction of its steps


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """"2x64,4x128" -> [(2, 64), (4, 128)]: layers x width."""
    sizes = []
    for item in text.split(","):
        layers, _, width = item.strip().lower().partition("x")
        if not (layers.isdigit() and width.isdigit()) or int(layers) < 1 or int(width) < 1:
            raise ValueError(f"size {item!r}: expected LAYERSxWIDTH, e.g. 2x64")
        sizes.append((int(layers), int(width)))
    return sizes


def parse_floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def ladder_steps(steps: int, fractions: list[float]) -> list[int]:
    """The step counts ours is run for: each fraction of `steps`, rounded, at least 1."""
    if any(not 0 < f <= 1 for f in fractions):
        raise ValueError(f"ladder fractions must lie in (0, 1]: {fractions}")
    return sorted({max(1, round(f * steps)) for f in fractions})


def pick_lr(losses: dict[float, float]) -> tuple[float, str | None]:
    """The lr of the lowest loss, and which end of the sweep it sits at ("low"/"high"), if any
    (a sweep of one lr has no end to extend)."""
    lrs = sorted(losses)
    best = min(lrs, key=lambda lr: losses[lr])
    if len(lrs) < 2:
        return best, None
    return best, "low" if best == lrs[0] else "high" if best == lrs[-1] else None


def beyond_edge(lrs: list[float], edge: str) -> float:
    """One more lr past the sweep's `edge`, spaced by the sweep's own (geometric mean) ratio."""
    lrs = sorted(lrs)
    ratio = (lrs[-1] / lrs[0]) ** (1 / (len(lrs) - 1))
    return float(f"{(lrs[-1] * ratio if edge == 'high' else lrs[0] / ratio):.3g}")


def steps_to_target(losses: dict[int, float], target: float, steps: int) -> dict[str, Any]:
    """Where ours' loss per step count (`losses`: M -> mean full-val loss) reaches `target`.
    `steps_needed`: the smallest M at or below target for it and every larger M (None: not
    reached); `ratio` = steps_needed / steps. `interpolated`: the crossing of the straight line
    between the ladder points around it (None when the smallest M already reaches the target:
    then `upper_bound` says the true count is at most steps_needed)."""
    ms = sorted(losses)
    needed = None
    for m in reversed(ms):
        if losses[m] > target:
            break
        needed = m
    out: dict[str, Any] = {"target": target, "steps": steps, "steps_needed": needed,
                           "ratio": None if needed is None else needed / steps,
                           "interpolated": None, "ratio_interpolated": None,
                           "upper_bound": needed is not None and needed == ms[0]}
    if needed is not None and needed != ms[0]:
        above = ms[ms.index(needed) - 1]
        frac = (losses[above] - target) / (losses[above] - losses[needed])
        out["interpolated"] = above + frac * (needed - above)
        out["ratio_interpolated"] = out["interpolated"] / steps
    out["goal_met"] = needed is not None and needed / steps <= GOAL + 1e-9
    return out


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize_size(size: dict[str, Any]) -> dict[str, Any]:
    """Fill in a size's target (nanoGPT's mean over seeds), ours' mean per M and steps-to-target."""
    target, sd = mean_sd(list(size["nanogpt"]["seeds"].values()))
    size["nanogpt"]["target"], size["nanogpt"]["target_sd"] = target, sd
    ours = size["ours"]
    ours["mean"] = {m: mean_sd(list(per_seed.values()))[0] for m, per_seed in ours["losses"].items()}
    size["result"] = steps_to_target(ours["mean"], target, size["steps"])
    return size


def _ratio_text(result: dict[str, Any]) -> str:
    if result["steps_needed"] is None:
        return f"not reached by {result['steps']} steps"
    text = f"{result['ratio']:.2f}x ({result['steps_needed']}/{result['steps']})"
    if result["upper_bound"]:
        return f"<= {text}"
    return f"{text}, interpolated {result['ratio_interpolated']:.2f}x"


def render_markdown(sizes: list[dict[str, Any]]) -> str:
    """The tables for docs/benchmarks.md: one summary row per size, then ours' ladder."""
    lines = ["| size | params | N | nanoGPT lr sweep: full-val loss (seed 0) | best lr | "
             "target: nanoGPT at N, mean ± sd (seeds) | ours at N | steps-to-target | goal <= 0.75x |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in sizes:
        nano, res = s["nanogpt"], s["result"]
        sweep = ", ".join(f"{lr:g}: {loss:.3f}" for lr, loss in sorted(nano["sweep"].items()))
        at_n = s["ours"]["mean"].get(s["steps"])
        lines.append(
            f"| {s['name']} | {s['params'] / 1e6:.2f} M | {s['steps']} | {sweep} | {nano['best_lr']:g}"
            f"{' (sweep edge)' if nano.get('edge') else ''} | {nano['target']:.3f} ± "
            f"{nano['target_sd']:.3f} ({len(nano['seeds'])}) | "
            f"{'—' if at_n is None else f'{at_n:.3f}'} | {_ratio_text(res)} | "
            f"{'**met**' if res['goal_met'] else '**not met**'} |")
    lines += ["", "Ours (default recipe) per step budget M, full-val loss per seed and mean; "
              "✓ = mean at or below the target:", ""]
    for s in sizes:
        seeds = sorted({k for per in s["ours"]["losses"].values() for k in per})
        lines += [f"{s['name']} (lr {s['ours']['learning_rate']:g}, target "
                  f"{s['nanogpt']['target']:.3f}, unigram baseline {s['unigram_loss']:.3f}):", "",
                  "| M | M/N | " + " | ".join(f"seed {k}" for k in seeds) + " | mean | |",
                  "|---|---|" + "---|" * len(seeds) + "---|---|"]
        for m in sorted(s["ours"]["losses"]):
            per = s["ours"]["losses"][m]
            mean = s["ours"]["mean"][m]
            cells = " | ".join(f"{per[k]:.3f}" if k in per else "—" for k in seeds)
            lines.append(f"| {m} | {m / s['steps']:.2f} | {cells} | {mean:.3f} | "
                         f"{'✓' if mean <= s['nanogpt']['target'] else ''} |")
        lines.append("")
    return "\n".join(lines)

