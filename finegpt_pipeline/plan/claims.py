"""Seed presets and a claims check: reproduce configurations users read about, then say which of
the figures quoted with them are physically impossible or inconsistent, and by how much.

The seed notes (for a 12 GB RTX 4070 and one FineWeb shard) quote: batch 12 x grad-accum 40 x
block 1024, 12 layers / 8 heads / 512 dims as "~110M parameters", 250,000 iterations for "13-15
epochs of ~6.5 B tokens", "22-26 it/s", "110-130 hours", "2.5-4.5 s/iteration", peak VRAM
"10-11 GB" at "180-220 W", and a VRAM -> model table (80 GB: 12L/12H/768 "~350M"; 48 GB:
12L/12H/672; 24 GB: 10L/10H/640 "~160-200M"; 16 GB: 8L/8H/512; <16 GB: 6L/6H/384).
"""

from __future__ import annotations

from typing import Any

from finegpt_pipeline.hardware import GIB

PRESETS: dict[str, dict[str, Any]] = {
    "rtx4070-one-shard": {
        "gpu": "rtx4070",
        "description": "seed plan: RTX 4070 12 GB, one FineWeb shard, 12L/8H/512, 12 x 40 x 1024",
        "model": {"n_layer": 12, "n_head": 8, "n_embd": 512, "block_size": 1024},
        "batch": {"micro_batch": 12, "grad_accum": 40, "max_iters": 250_000},
        "claims": {"params": "110e6", "it_per_s": "22-26", "hours": "110-130",
                   "s_per_it": "2.5-4.5", "vram_gb": "10-11", "watts": "180-220",
                   "tokens_available": "6.5e9", "epochs": "13-15"},
    },
    "80gb-350m": {
        "gpu": "a100-80gb", "description": "seed VRAM table, 80 GB row: 12L/12H/768 called ~350M",
        "model": {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024},
        "claims": {"params": "350e6"},
    },
    "48gb-12l-672": {
        "gpu": "a6000", "description": "seed VRAM table, 48 GB row: 12L/12H/672",
        "model": {"n_layer": 12, "n_head": 12, "n_embd": 672, "block_size": 1024},
        "claims": {},
    },
    "24gb-160m": {
        "gpu": "rtx4090", "description": "seed VRAM table, 24 GB row: 10L/10H/640 called ~160-200M",
        "model": {"n_layer": 10, "n_head": 10, "n_embd": 640, "block_size": 1024},
        "claims": {"params": "160e6-200e6"},
    },
    "16gb-8l-512": {
        "gpu": "rtx4080", "description": "seed VRAM table, 16 GB row: 8L/8H/512",
        "model": {"n_layer": 8, "n_head": 8, "n_embd": 512, "block_size": 1024},
        "claims": {},
    },
    "12gb-40m": {
        "gpu": "rtx4070", "description": "seed VRAM table, <16 GB row: 6L/6H/384 (named ~40M)",
        "model": {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 1024},
        "claims": {"params": "40e6"},
    },
}

CLAIM_KEYS = {
    "params": "parameter count",
    "it_per_s": "iterations per second",
    "s_per_it": "seconds per iteration",
    "hours": "wall-clock hours for max_iters",
    "vram_gb": "peak GPU memory, GiB",
    "watts": "power draw, W",
    "tokens_available": "tokens in the data",
    "epochs": "epochs over the data",
}
TOLERANCE = 0.25  # a figure within 25 % of ours is "ok"; our own estimates are not better
PARAMS_TOLERANCE = 0.10  # parameter counts are exact: only rounding in the claim is forgiven
DATA_TOLERANCE = 0.50  # tokens in the data: a shard's count varies with the dump and tokenizer
# Memory claims ("10-11 GB") are read in GiB (2^30 bytes), the unit nvidia-smi (MiB / 1024) and
# torch report and that the plan's report uses, so the whole `--check` output has one unit.
MEMORY_UNIT = GIB


def tolerance_note() -> str:
    """What `check_claims` counts as "ok", in words, for the report beside the verdicts."""
    return (f"A claimed figure is **ok** within {TOLERANCE:.0%} of ours (parameters {PARAMS_TOLERANCE:.0%}, "
            f"tokens in the data {DATA_TOLERANCE:.0%}, power: up to the board limit +5%); memory is in "
            f"GiB (2^30 bytes) throughout, a claim's \"GB\" read as GiB as nvidia-smi and torch count.")


def get_preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def parse_claims(items: list[str]) -> dict[str, str]:
    """`key=value` strings (value a number or a `lo-hi` range) keyed by CLAIM_KEYS."""
    claims = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in CLAIM_KEYS:
            raise ValueError(f"--claim expects key=value with key in {sorted(CLAIM_KEYS)}, got {item!r}")
        parse_range(value, key)
        claims[key] = value
    return claims


def parse_range(value: Any, key: str = "claim") -> tuple[float, float]:
    """'24' -> (24, 24); '22-26' -> (22, 26); '110e6-200e6' works (only a '-' after a digit
    that is not part of an exponent splits)."""
    text = str(value).strip().replace("–", "-")
    for i in range(1, len(text)):
        if text[i] == "-" and text[i - 1].isdigit():
            lo, hi = text[:i], text[i + 1:]
            break
    else:
        lo = hi = text
    try:
        low, high = float(lo), float(hi)
    except ValueError:
        raise ValueError(f"{key}: expected a number or lo-hi range, got {value!r}") from None
    if low <= 0 or high < low:
        raise ValueError(f"{key}: expected positive lo <= hi, got {value!r}")
    return low, high


def _fmt_range(lo: float, hi: float, unit: str = "", digits: int = 3) -> str:
    a, b = f"{lo:.{digits}g}", f"{hi:.{digits}g}"
    return f"{a}{unit}" if a == b else f"{a}-{b}{unit}"


def check_claims(plan: dict[str, Any], claims: dict[str, Any]) -> list[dict[str, Any]]:
    """Verdicts for claimed figures about `plan`'s configuration. Each verdict: claim, claimed,
    ours (our figure; memory in GiB), ratio (claimed / ours, lo-hi), tolerance (the relative
    difference still "ok"), verdict (ok | wrong | inconsistent | impossible) and detail. `plan`
    is a plan file (its config and report)."""
    cfg, rep = plan["config"], plan["report"]
    hw = rep["hardware"]
    peak = hw["peak_flops"]
    step_flops = rep["tokens_per_step"] * rep["flops_per_token"]
    iters = cfg["max_iters"]
    ranges = {k: parse_range(v, k) for k, v in claims.items()}
    out = []

    def add(key, ours, verdict, detail, tolerance=TOLERANCE):
        lo, hi = ranges[key]
        out.append({"claim": key, "claimed": claims[key], "ours": ours, "verdict": verdict,
                    "ratio": [lo / ours, hi / ours] if ours else None, "tolerance": tolerance,
                    "detail": detail})

    def near(lo, hi, ours, tol=TOLERANCE):
        return lo <= ours * (1 + tol) and hi >= ours * (1 - tol)

    if "params" in ranges:
        lo, hi = ranges["params"]
        n = rep["params"]
        ok = near(lo, hi, n, PARAMS_TOLERANCE)
        add("params", n, "ok" if ok else "wrong",
            f"{cfg['n_layer']}L/{cfg['n_embd']}d with vocab {cfg['vocab_size']} has {n / 1e6:.1f} M "
            f"parameters; the claim is {_fmt_range(lo / n, hi / n, 'x')} that", PARAMS_TOLERANCE)
    speed = None  # claimed it/s range, from it_per_s or s_per_it
    for key in ("it_per_s", "s_per_it"):
        if key not in ranges:
            continue
        lo, hi = ranges[key]
        its = (lo, hi) if key == "it_per_s" else (1 / hi, 1 / lo)
        speed = speed or its
        need = (its[0] * step_flops / peak, its[1] * step_flops / peak)  # fraction of peak
        ours = 1 / rep["est_step_seconds"] if key == "it_per_s" else rep["est_step_seconds"]
        if need[0] > 1:
            verdict = "impossible"
            detail = (f"needs {_fmt_range(*need, 'x')} {hw['name']}'s peak dense {hw['dtype']} "
                      f"{peak / 1e12:.1f} TFLOP/s ({rep['tokens_per_step']:,} tokens/step x "
                      f"{rep['flops_per_token'] / 1e6:.0f} MFLOP/token)")
        elif need[1] > 1:
            verdict = "impossible"
            detail = f"the fast end needs {need[1]:.2f}x peak; even 100 % MFU allows {peak / step_flops:.3g} it/s"
        elif near(lo, hi, ours):
            verdict, detail = "ok", f"implies {_fmt_range(*need)} of peak (MFU)"
        else:
            verdict = "wrong"
            detail = f"implies MFU {_fmt_range(*need)}; we expect {rep['expected_mfu']:.2f}"
        add(key, ours, verdict, detail)
    if "hours" in ranges:
        lo, hi = ranges["hours"]
        ours = rep["est_hours"]
        parts, verdict = [f"we estimate {ours:,.1f} h for {iters:,} iterations"], "ok"
        if speed:
            implied = (iters / speed[1] / 3600, iters / speed[0] / 3600)
            parts.append(f"the claimed speed gives {_fmt_range(*implied, ' h')}")
            if not near(lo, hi, (implied[0] + implied[1]) / 2, TOLERANCE) and not (
                    implied[0] <= hi and implied[1] >= lo):
                verdict = "inconsistent"
        if verdict == "ok" and not near(lo, hi, ours):
            verdict = "wrong"
        add("hours", ours, verdict, "; ".join(parts))
    if "vram_gb" in ranges:
        lo, hi = ranges["vram_gb"]
        ours = rep["peak_memory_bytes"] / MEMORY_UNIT
        device = hw["memory_bytes"] / MEMORY_UNIT
        if lo > device:
            verdict = "impossible"
        else:
            verdict = "ok" if near(lo, hi, ours) else "wrong"
        add("vram_gb", ours, verdict,
            f"we estimate {ours:.2f} GiB peak (device {device:.2f} GiB) at micro_batch {cfg['micro_batch']}")
    if "watts" in ranges:
        lo, hi = ranges["watts"]
        board = hw["board_watts"]
        verdict = "impossible" if lo > board * 1.05 else "wrong" if hi > board * 1.05 else "ok"
        detail = {"impossible": f"the whole range is above the {board:g} W board power limit",
                  "wrong": f"the top of the range is above the {board:g} W board power limit; "
                           f"sustained training draws up to that limit, not past it",
                  "ok": f"within the {board:g} W board power; sustained training draws about that"}
        add("watts", board, verdict, detail[verdict], 0.05)
    claimed_data = ranges.get("tokens_available")
    if claimed_data:
        lo, hi = claimed_data
        ours = rep["tokens_available"]
        add("tokens_available", ours, "ok" if near(lo, hi, ours, DATA_TOLERANCE) else "wrong",
            f"the data holds {ours / 1e9:.3g} B tokens", DATA_TOLERANCE)
    if "epochs" in ranges:
        lo, hi = ranges["epochs"]
        ours = rep["epochs"]
        detail = f"{rep['tokens_total'] / 1e9:,.1f} B tokens seen / {rep['tokens_available'] / 1e9:.3g} B = {ours:,.1f} epochs"
        verdict = "ok" if near(lo, hi, ours) else "wrong"
        if claimed_data:
            self_epochs = rep["tokens_total"] / claimed_data[1], rep["tokens_total"] / claimed_data[0]
            detail += f"; even over the claimed data it is {_fmt_range(*self_epochs)} epochs"
            if not near(lo, hi, sum(self_epochs) / 2, 0.10):
                verdict = "inconsistent"
        add("epochs", ours, verdict, detail)
    return out


def format_verdicts(verdicts: list[dict[str, Any]]) -> str:
    lines = [tolerance_note(), "", "| claim | claimed | ours | verdict | why |", "|---|---|---|---|---|"]
    for v in verdicts:
        ours = v["ours"]
        ours_text = f"{ours:,.4g}" if isinstance(ours, float) else f"{ours:,}"
        lines.append(f"| {CLAIM_KEYS[v['claim']]} | {v['claimed']} | {ours_text} | "
                     f"**{v['verdict']}** | {v['detail']} |")
    return "\n".join(lines)
