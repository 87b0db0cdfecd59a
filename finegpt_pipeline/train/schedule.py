"""The learning-rate schedule the trainer follows: linear warmup, then cosine decay or (wsd)
warmup-stable-decay. No torch here: the in-run forecast (`curve_forecast`) reads the phases too.
"""

from __future__ import annotations

import math

from finegpt_pipeline.config import TrainConfig


def cooldown_start(cfg: TrainConfig) -> float:
    """The step where wsd's linear cool-down begins (its last cooldown_frac of lr_decay_iters)."""
    return cfg.lr_decay_iters * (1.0 - cfg.cooldown_frac)


def lr_at(it: int, cfg: TrainConfig) -> float:
    """Linear warmup to learning_rate, then cosine decay to min_lr at lr_decay_iters, or (wsd)
    flat until its last cooldown_frac and linear down to min_lr there; then flat."""
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if it >= cfg.lr_decay_iters:
        return cfg.min_lr
    if cfg.lr_schedule == "wsd":
        cooldown = cfg.lr_decay_iters - cooldown_start(cfg)
        left = (cfg.lr_decay_iters - it) / max(cooldown, 1e-9)
        return cfg.min_lr + min(1.0, left) * (cfg.learning_rate - cfg.min_lr)
    span = max(1, cfg.lr_decay_iters - cfg.warmup_iters)
    ratio = (it - cfg.warmup_iters) / span
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.learning_rate - cfg.min_lr)
