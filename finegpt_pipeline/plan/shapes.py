"""The model shapes the planner searches: GPT-like proportions and ~64-wide heads, around any
field the user fixed (`finegpt plan --set n_layer=7` keeps 7 layers and searches widths)."""

from __future__ import annotations

import math
from typing import Any, Iterable

N_EMBD_CHOICES = (64, 128, 192, 256, 320, 384, 448, 512, 576, 640, 768, 896, 1024, 1280, 1536, 2048)
N_LAYER_CHOICES = (2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 36, 48)
WIDTH_PER_LAYER = (32, 96)  # GPT-like n_embd / n_layer (GPT-2: 64-80, GPT-3 small-XL: 64-128)
HEAD_DIM = 64


def heads_for(n_embd: int) -> int:
    """The head count whose head size is nearest HEAD_DIM (64) among the divisors of n_embd."""
    divisors = [h for h in range(1, n_embd + 1) if n_embd % h == 0]
    return min(divisors, key=lambda h: (abs(n_embd / h - HEAD_DIM), h))


def _proportionate(n_embd: int, n_layer: int) -> bool:
    return WIDTH_PER_LAYER[0] <= n_embd / n_layer <= WIDTH_PER_LAYER[1]


def candidate_shapes(fixed: dict[str, Any]) -> Iterable[tuple[int, int, int]]:
    """(n_layer, n_embd, n_head) with GPT-like proportions (WIDTH_PER_LAYER) and ~64-wide
    heads. A field the user fixed is kept at its value (inside the tables or not) and the
    others are searched around it: the same proportions for the free dimension (or the
    nearest one when no table entry has them), widths divisible by a fixed n_head."""
    heads = fixed.get("n_head")
    if "n_embd" in fixed:
        widths = [fixed["n_embd"]]
    elif heads:
        widths = sorted({d for d in N_EMBD_CHOICES if d % heads == 0} | {heads * k for k in (32, 64, 128)})
    else:
        widths = list(N_EMBD_CHOICES)
    if "n_layer" in fixed and "n_embd" not in fixed:
        layers = fixed["n_layer"]
        widths = [d for d in widths if _proportionate(d, layers)] or [
            min(widths, key=lambda d: abs(math.log(d / (HEAD_DIM * layers))))]
    for d in widths:
        if "n_layer" in fixed:
            depths = [fixed["n_layer"]]
        else:
            depths = [n for n in N_LAYER_CHOICES if _proportionate(d, n)] or [max(1, round(d / HEAD_DIM))]
        for n in depths:
            yield n, d, heads or heads_for(d)
