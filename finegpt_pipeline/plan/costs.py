"""What a training config costs: exact parameter and FLOP counts, the memory model, step and
eval time, energy, the schedule fitted to a time budget, and the report that says all of it.

Pure arithmetic over a `TrainConfig` and a `Hardware` (no torch), shared by the planner, the
calibration probe and the trainer (for MFU). Estimates, documented where computed:
- parameters and FLOPs/token are exact (held to `model.GPT` by the tests);
- step time = tokens/step x FLOPs/token / (peak FLOP/s x MFU) + AdamW's memory-bound update,
  unless a measured step time is given (`estimate(..., measured_step_s=...)`);
- peak memory = fp32 weights, grads and AdamW moments (16 B/param) + activations + logits +
  allocator slack + CUDA context (`memory_estimate`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

from finegpt_pipeline.config import TrainConfig
from finegpt_pipeline.hardware import Hardware

MAX_USEFUL_EPOCHS = 4.0  # Muennighoff et al. 2023: repeated data ~as good as new up to ~4 epochs
DEFAULT_PRICE_PER_KWH = 0.30  # US dollars per kWh (the energy cost is in dollars)
CHECKPOINT_EVERY_S = 30 * 60  # a crash loses at most ~30 minutes of training
MEMORY_FRACTION = {"gpu": 0.90, "cpu": 0.50}  # of device memory (CPU: of RAM, shared with the OS)

# Memory model constants (bytes). Activations per layer follow Korthikanti et al. 2022
# ("Reducing Activation Recomputation in Large Transformer Models", eq. 2): 34*s*b*h bytes in
# 16-bit precision without the 5*a*s^2*b attention-score term, which flash attention never
# stores; fp32 training doubles it. One extra layer's worth covers the embedding sum and ln_f.
ACT_BYTES_PER_SBH = {"mixed": 34, "fp32": 68}
# Logits (b*T*V): bf16 logits kept by the training loop (2) + fp32 log-probs saved by
# cross-entropy (4) + fp32 gradient at the start of backward (4), when all activations live.
# torch.compile fuses the loss and frees as it goes: measured 5.9 B per logit on an H200
# (torch 2.11, 6L/384d and 12L/768d at micro-batch 64, block 1024; activations fitted 34.2 B
# per s*b*h there, Korthikanti's 34), docs/benchmarks.md.
LOGIT_BYTES = {"mixed": 2 + 4 + 4, "fp32": 4 + 4 + 4}
LOGIT_BYTES_COMPILED = {"mixed": 6, "fp32": 12}
ALLOCATOR_SLACK = 0.10  # caching-allocator fragmentation on the dynamic part
CUDA_CONTEXT_BYTES = 600 * 2**20  # CUDA context, cuBLAS workspace, compile's extra buffers
CPU_PROCESS_BYTES = 400 * 2**20  # torch + interpreter resident set
ADAMW_BYTES_PER_PARAM = 28  # update reads param, grad, m, v (16 B) and writes param, m, v (12 B)


def param_count(cfg: TrainConfig) -> int:
    """All parameters, tied token embedding / output layer counted once (as GPT.get_num_params())."""
    d = cfg.n_embd
    # attn c_attn 3d^2 + c_proj d^2, mlp c_fc 4d^2 + c_proj 4d^2; two LayerNorms (weight [+ bias])
    per_layer = 12 * d * d + (13 * d if cfg.bias else 2 * d)
    final_ln = 2 * d if cfg.bias else d
    return cfg.vocab_size * d + cfg.block_size * d + cfg.n_layer * per_layer + final_ln


def non_embedding_params(cfg: TrainConfig) -> int:
    """Parameters less the position embedding (a lookup, no matmul); the token embedding stays,
    being the output layer's weight."""
    return param_count(cfg) - cfg.block_size * cfg.n_embd


def flops_per_token(cfg: TrainConfig) -> float:
    """Training FLOPs per token, forward + backward: 6·N for the matmuls plus 12·L·d·T for
    attention scores and values (PaLM appendix B; the convention nanoGPT's MFU uses), N as in
    `non_embedding_params`."""
    return 6.0 * non_embedding_params(cfg) + 12.0 * cfg.n_layer * cfg.n_embd * cfg.block_size


def grad_accum_for(tokens_per_step: float, micro_batch: int, block_size: int) -> int:
    """Micro-steps per optimizer step that keep about `tokens_per_step` at this micro-batch."""
    return max(1, round(tokens_per_step / (micro_batch * block_size)))


def replace(cfg: TrainConfig, **changes) -> TrainConfig:
    return dataclasses.replace(cfg, **changes)


def mixed_precision(hw: Hardware, dtype: str = "auto") -> bool:
    if dtype == "auto":
        return hw.kind == "gpu"
    return dtype in ("bfloat16", "float16")


def memory_estimate(cfg: TrainConfig, hw: Hardware) -> dict[str, int]:
    """Peak training memory by part, for one micro-batch (grad accumulation adds nothing)."""
    mode = "mixed" if mixed_precision(hw, cfg.dtype) else "fp32"
    n = param_count(cfg)
    sbh = cfg.block_size * cfg.micro_batch * cfg.n_embd
    parts = {
        "weights": 4 * n,
        "gradients": 4 * n,
        "adamw_state": 8 * n,
        "activations": (cfg.n_layer + 1) * ACT_BYTES_PER_SBH[mode] * sbh,
        "logits": cfg.micro_batch * cfg.block_size * cfg.vocab_size
        * (LOGIT_BYTES_COMPILED if cfg.compiles_on(hw.device_type) else LOGIT_BYTES)[mode],
    }
    parts["allocator_slack"] = int(ALLOCATOR_SLACK * (parts["activations"] + parts["logits"]))
    parts["context"] = CUDA_CONTEXT_BYTES if hw.kind == "gpu" else CPU_PROCESS_BYTES
    # What torch.cuda.max_memory_allocated() should report: tensors only.
    parts["allocated_estimate"] = sum(parts[k] for k in ("weights", "gradients", "adamw_state",
                                                         "activations", "logits"))
    parts["total"] = parts["allocated_estimate"] + parts["allocator_slack"] + parts["context"]
    return parts


def measured_peak(allocated: int) -> int:
    """Device memory a run needs for `allocated` bytes of tensors: allocator slack and context."""
    return int(allocated * (1 + ALLOCATOR_SLACK) + CUDA_CONTEXT_BYTES)


def memory_budget(hw: Hardware, fraction: float | None = None) -> int:
    return int(hw.memory_bytes * (fraction or MEMORY_FRACTION[hw.kind]))


def effective_mfu(hw: Hardware, n_embd: int) -> float:
    """Expected model-FLOPs utilisation: the device prior, lower for narrow models whose small
    matmuls underfill the cores. CPU: reference width 128, exponent 0.8 fitted on the 2-core box
    (2L x 64d sustains ~0.55x the FLOP/s of 4L x 128d); GPU: reference 768, exponent 0.6 (a
    prior until the probe measures it)."""
    ref, exponent = (768, 0.6) if hw.kind == "gpu" else (128, 0.8)
    return hw.expected_mfu * min(1.0, (n_embd / ref) ** exponent)


def step_seconds(cfg: TrainConfig, hw: Hardware, tokens_per_step: int | None = None) -> float:
    """Estimated seconds per optimizer step (at `tokens_per_step`, default the config's)."""
    tps = tokens_per_step or cfg.tokens_per_step
    compute = tps * flops_per_token(cfg) / (hw.peak_flops * effective_mfu(hw, cfg.n_embd))
    return compute + param_count(cfg) * ADAMW_BYTES_PER_PARAM / hw.bandwidth_bytes_per_s


def eval_seconds(cfg: TrainConfig, micro_step_s: float) -> float:
    """The trainer's evals: the val split, eval_iters forward passes (~1/3 of a training
    micro-step each), at step 0 and every eval_interval."""
    evals = cfg.max_iters // max(1, cfg.eval_interval) + 1
    return evals * cfg.eval_iters * micro_step_s / 3


def run_seconds(cfg: TrainConfig, step_s: float) -> float:
    """Training steps plus evaluations, at `step_s` seconds per step."""
    return cfg.max_iters * step_s + eval_seconds(cfg, step_s / cfg.grad_accum)


EVAL_SHARE, MIN_EVALS, MAX_EVALS = 0.10, 5, 20


def eval_count(cfg: TrainConfig, max_iters: int) -> int:
    """Evals after step 0 the schedule plans: as many as cost about EVAL_SHARE of the training
    steps (an eval is eval_iters forward passes, ~1/3 of a micro-step each), between MIN_EVALS
    and MAX_EVALS. The in-run forecast of the final val loss (`train.curve_forecast`) needs 4
    evals after warmup: 20 give it one from 25 % of the steps, 10 (the CPU demo) from 50 %."""
    per_eval = cfg.eval_iters / (3 * cfg.grad_accum)  # in training steps
    return int(min(MAX_EVALS, max(MIN_EVALS, EVAL_SHARE * max_iters / per_eval)))


def with_schedule(cfg: TrainConfig, max_iters: int) -> TrainConfig:
    """Step-count-dependent fields: warmup ~2 % (<= 2000), decay ending with the run,
    5-20 evals (`eval_count`), ~5 checkpoints, ~50 log lines."""
    eval_interval = max(1, math.ceil(max_iters / eval_count(cfg, max_iters)))
    return replace(cfg, max_iters=max_iters, lr_decay_iters=max_iters,
                   warmup_iters=min(2000, max(5, max_iters // 50)), eval_interval=eval_interval,
                   checkpoint_interval=max(1, math.ceil(max_iters / 5)),
                   log_interval=max(1, max_iters // 50))


def reschedule(cfg: TrainConfig, max_iters: int, step_s: float | None = None) -> TrainConfig:
    """The plan's schedule for `max_iters` steps: what `finegpt plan --set max_iters=N` gives
    and what `finegpt train --max-iters N` trains (warmup, decay, eval and checkpoint cadence).
    `step_s`, the estimated seconds per step, caps the checkpoint interval; None leaves it."""
    cfg = with_schedule(cfg, max_iters)
    return cfg if step_s is None else with_checkpoint_cadence(cfg, step_s)


def with_checkpoint_cadence(cfg: TrainConfig, step_s: float) -> TrainConfig:
    """Checkpoint at least every CHECKPOINT_EVERY_S of estimated training, so a crash of a long
    run loses minutes, not a fifth of it."""
    every = max(1, int(CHECKPOINT_EVERY_S / max(step_s, 1e-9)))
    return replace(cfg, checkpoint_interval=min(cfg.checkpoint_interval, every))


def fit_time_to_budget(cfg: TrainConfig, hours: float, step_s: Callable[[TrainConfig], float]) -> TrainConfig:
    """Shrink max_iters until steps + evals fit the time budget (evals are ~10-25 % on CPU)."""
    for _ in range(5):
        total = run_seconds(cfg, step_s(cfg))
        if total <= hours * 3600 or cfg.max_iters <= 10:
            break
        cfg = with_schedule(cfg, max(10, int(cfg.max_iters * hours * 3600 / total * 0.98)))
    return cfg


def estimate(cfg: TrainConfig, hw: Hardware, tokens_available: int, *,
             price_per_kwh: float = DEFAULT_PRICE_PER_KWH, budget: int | None = None,
             measured_step_s: float | None = None) -> dict[str, Any]:
    """The report for a fixed config: exact counts, time, memory, energy, epochs. Time comes
    from `measured_step_s` when given (calibration), else from `step_seconds`."""
    budget = budget if budget is not None else memory_budget(hw)
    n, fpt, tps = param_count(cfg), flops_per_token(cfg), cfg.tokens_per_step
    tokens_total = tps * cfg.max_iters
    mem = memory_estimate(cfg, hw)
    step_s = measured_step_s if measured_step_s is not None else step_seconds(cfg, hw)
    hours = run_seconds(cfg, step_s) / 3600
    epochs = tokens_total / tokens_available
    kwh = hw.board_watts * hours / 1000
    warnings = []
    if epochs > MAX_USEFUL_EPOCHS:
        warnings.append(f"{epochs:.1f} epochs over the data: beyond ~{MAX_USEFUL_EPOCHS:g}, repeated "
                        "tokens are worth much less than new ones (Muennighoff et al. 2023)")
    return dict(
        tokens_per_step=tps, params=n, params_non_embedding=non_embedding_params(cfg),
        flops_per_token=fpt, total_flops=fpt * tokens_total, peak_memory_bytes=mem["total"],
        memory_budget_bytes=budget, memory_breakdown=mem, est_step_seconds=step_s, est_hours=hours,
        est_tokens_per_second=tps / step_s, expected_mfu=effective_mfu(hw, cfg.n_embd),
        tokens_total=tokens_total, tokens_available=int(tokens_available),
        tokens_per_param=tokens_total / n, epochs=epochs, energy_kwh=kwh,
        energy_cost=kwh * price_per_kwh, price_per_kwh=price_per_kwh, board_watts=hw.board_watts,
        hardware=hw.to_dict(), gpu_name=hw.name, warnings=warnings, measured={},
        provenance={"params": "exact", "flops_per_token": "exact", "peak_flops": _peak_source(hw),
                    "peak_memory_bytes": "estimated", "est_step_seconds": "estimated",
                    "est_hours": "estimated", "energy_kwh": "estimated (board power x hours)"},
    )


def _peak_source(hw: Hardware) -> str:
    if hw.measured_at:
        return (f"measured {hw.measured_at} on {hw.machine_id} (kept in FINEGPT_HOME/hardware; "
                "--remeasure takes it afresh)")
    return "measured" if hw.detected and hw.kind == "cpu" else "catalog"
