"""Hardware-sized training plans: pick the model, batch and schedule that fit a device's memory
and a time budget, and say what the run will cost (FLOPs, hours, memory, energy, epochs).

A plan is a flat dict: every `TrainConfig` field plus report keys (`config.PLAN_REPORT_KEYS`),
so the trainer reads it with `TrainConfig.from_dict(plan)`.

Estimates (documented where computed):
- step time = tokens/step x FLOPs/token / (peak FLOP/s x MFU) + AdamW's memory-bound update;
- peak memory = fp32 weights, grads and AdamW moments (16 B/param) + activations + logits +
  allocator slack + CUDA context (see `memory_estimate`).
A measured probe (`finegpt_pipeline.calibrate`) replaces the estimated figures on a real device.
A plan is a function of its inputs (hardware, data, goal, overrides): a machine's measurements
are kept per machine (`hardware.cached_measurement`), so the same inputs give the same plan.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

from finegpt_pipeline.arithmetic import flops_per_token, param_count
from finegpt_pipeline.config import TrainConfig, _coerce, padded_vocab_size, parse_assignment
from finegpt_pipeline.hardware import GIB, Hardware, get_hardware
from finegpt_pipeline.plan_data import (  # noqa: F401 (tokens_from_*: read here by the CLI and assets)
    block_size_for, eval_iters_for, tokens_from_bins, tokens_from_meta,
)
from finegpt_pipeline.plan_shapes import candidate_shapes

PLAN_VERSION = 1
CHINCHILLA_TOKENS_PER_PARAM = 20.0  # Hoffmann et al. 2022
MAX_USEFUL_EPOCHS = 4.0  # Muennighoff et al. 2023: repeated data ~as good as new up to ~4 epochs
DEFAULT_PRICE_PER_KWH = 0.30
DEFAULT_HOURS = {"gpu": 12.0, "cpu": 2.0 / 60}  # CPU default: the CI demo trains in ~2 minutes
CHECKPOINT_EVERY_S = 30 * 60  # a crash loses at most ~30 minutes of training
MEMORY_FRACTION = {"gpu": 0.90, "cpu": 0.50}  # of device memory (CPU: of RAM, shared with the OS)
# A FineWeb 2.15 GB parquet shard holds ~0.7-1 B GPT-2 tokens (~720 tokens/doc on our sample).
SHARD_TOKENS_ESTIMATE = 850_000_000
GPT2_SMALL_PARAMS = 124e6
GPT2_TOKENS_PER_STEP = 2**19  # ~0.5 M tokens per step at GPT-2-small scale (GPT-3 paper table 2.1)
MIN_STEPS = {"gpu": 200, "cpu": 40}

DEFAULT_BLOCK = {"gpu": 1024, "cpu": 64}
MAX_MICRO_BATCH = {"gpu": 64, "cpu": 16}  # CPU: bigger micro-batches only add memory, not speed

MODEL_FIELDS = ("n_layer", "n_head", "n_embd", "block_size")
BATCH_FIELDS = ("micro_batch", "grad_accum")

# Memory model constants (bytes). Activations per layer follow Korthikanti et al. 2022
# ("Reducing Activation Recomputation in Large Transformer Models", eq. 2): 34*s*b*h bytes in
# 16-bit precision without the 5*a*s^2*b attention-score term, which flash attention never
# stores; fp32 training doubles it. One extra layer's worth covers the embedding sum and ln_f.
ACT_BYTES_PER_SBH = {"mixed": 34, "fp32": 68}
# Logits (b*T*V): bf16 logits kept by the training loop (2) + fp32 log-probs saved by
# cross-entropy (4) + fp32 gradient at the start of backward (4), when all activations live.
LOGIT_BYTES = {"mixed": 2 + 4 + 4, "fp32": 4 + 4 + 4}
ALLOCATOR_SLACK = 0.10  # caching-allocator fragmentation on the dynamic part
CUDA_CONTEXT_BYTES = 600 * 2**20  # CUDA context, cuBLAS workspace, compile's extra buffers
CPU_PROCESS_BYTES = 400 * 2**20  # torch + interpreter resident set
ADAMW_BYTES_PER_PARAM = 28  # update reads param, grad, m, v (16 B) and writes param, m, v (12 B)


def mixed_precision(hw: Hardware, dtype: str = "auto") -> bool:
    if dtype == "auto":
        return hw.kind == "gpu"
    return dtype in ("bfloat16", "float16")


def memory_estimate(cfg: TrainConfig, hw: Hardware) -> dict[str, int]:
    """Peak training memory by part, for one micro-batch (grad accumulation adds nothing)."""
    mode = "mixed" if mixed_precision(hw, cfg.dtype) else "fp32"
    n = param_count(cfg.n_layer, cfg.n_embd, cfg.vocab_size, cfg.block_size, cfg.bias)
    sbh = cfg.block_size * cfg.micro_batch * cfg.n_embd
    parts = {
        "weights": 4 * n,
        "gradients": 4 * n,
        "adamw_state": 8 * n,
        "activations": (cfg.n_layer + 1) * ACT_BYTES_PER_SBH[mode] * sbh,
        "logits": cfg.micro_batch * cfg.block_size * cfg.vocab_size * LOGIT_BYTES[mode],
    }
    parts["allocator_slack"] = int(ALLOCATOR_SLACK * (parts["activations"] + parts["logits"]))
    parts["context"] = CUDA_CONTEXT_BYTES if hw.kind == "gpu" else CPU_PROCESS_BYTES
    # What torch.cuda.max_memory_allocated() should report: tensors only.
    parts["allocated_estimate"] = sum(parts[k] for k in ("weights", "gradients", "adamw_state",
                                                         "activations", "logits"))
    parts["total"] = parts["allocated_estimate"] + parts["allocator_slack"] + parts["context"]
    return parts


def effective_mfu(hw: Hardware, n_embd: int) -> float:
    """Expected model-FLOPs utilisation: the device prior, lower for narrow models whose small
    matmuls underfill the cores. CPU: reference width 128, exponent 0.8 fitted on the 2-core box
    (2L x 64d sustains ~0.55x the FLOP/s of 4L x 128d); GPU: reference 768, exponent 0.6 (a
    prior until the probe measures it)."""
    ref, exponent = (768, 0.6) if hw.kind == "gpu" else (128, 0.8)
    return hw.expected_mfu * min(1.0, (n_embd / ref) ** exponent)


def step_seconds(cfg: TrainConfig, hw: Hardware, tokens_per_step: int | None = None) -> float:
    tps = tokens_per_step or cfg.micro_batch * cfg.grad_accum * cfg.block_size
    fpt = flops_per_token(cfg.n_layer, cfg.n_embd, cfg.vocab_size, cfg.block_size, cfg.bias)
    compute = tps * fpt / (hw.peak_flops * effective_mfu(hw, cfg.n_embd))
    n = param_count(cfg.n_layer, cfg.n_embd, cfg.vocab_size, cfg.block_size, cfg.bias)
    return compute + n * ADAMW_BYTES_PER_PARAM / hw.bandwidth_bytes_per_s


def eval_seconds(cfg: TrainConfig, micro_step_s: float) -> float:
    """The trainer's evals: train and val splits, eval_iters forward passes each (~1/3 of a
    training micro-step), at step 0 and every eval_interval."""
    evals = cfg.max_iters // max(1, cfg.eval_interval) + 1
    return evals * 2 * cfg.eval_iters * micro_step_s / 3


def memory_budget(hw: Hardware, fraction: float | None = None) -> int:
    return int(hw.memory_bytes * (fraction or MEMORY_FRACTION[hw.kind]))


def learning_rate_for(params: int) -> float:
    """GPT-3's table 2.1 trend (6e-4 at 125 M, 3e-4 at 350 M) as lr ~ N^(-1/3), capped for
    tiny models."""
    return round(min(1.5e-3, max(1.5e-4, 6e-4 * (GPT2_SMALL_PARAMS / params) ** (1 / 3))), 6)


def tokens_per_step_for(params: int) -> int:
    """~0.5 M tokens at 124 M parameters, shrinking as sqrt(N) for smaller models."""
    return int(min(2**20, GPT2_TOKENS_PER_STEP * math.sqrt(params / GPT2_SMALL_PARAMS)))


def _pow2_floor(x: float) -> int:
    return 1 << max(0, int(math.floor(math.log2(max(1.0, x)))))


def largest_micro_batch(cfg: TrainConfig, hw: Hardware, budget: int, cap: int) -> int:
    """Largest power-of-two micro-batch <= cap whose peak memory fits the budget (0: none)."""
    best, mb = 0, 1
    while mb <= cap:
        trial = _replace(cfg, micro_batch=mb)
        if memory_estimate(trial, hw)["total"] > budget:
            break
        best, mb = mb, mb * 2
    return best


def _replace(cfg: TrainConfig, **changes) -> TrainConfig:
    data = cfg.to_dict()
    data.update(changes)
    return TrainConfig(**data)


def _parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """Typed, validated `key=value` overrides (unknown keys fail). They are validated beside
    companions the planner may still choose (one head, a zero min_lr), not beside the defaults
    of fields the user left to it: n_head=12 alone is fine, n_head=12 with n_embd=128 is not."""
    known = TrainConfig().to_dict()
    fixed = {}
    for item in overrides:
        key, value = parse_assignment(item, known)
        fixed[key] = _coerce(TrainConfig, key, value)
    trial = {**known, "n_head": 1, "min_lr": 0.0, **fixed}
    if "n_head" in fixed and "n_embd" not in fixed:
        trial["n_embd"] = max(1, fixed["n_head"]) * 64
    TrainConfig.from_dict(trial, source="--set")
    return fixed


def make_plan(hw: Hardware | str | None = None, tokens_available: int | None = None, *,
              hours: float | None = None, tokens_per_param: float | None = None,
              overrides: Iterable[str] = (), preset: str | None = None,
              price_per_kwh: float = DEFAULT_PRICE_PER_KWH, memory_fraction: float | None = None,
              strict: bool = True, val_tokens: int | None = None, remeasure: bool = False) -> dict[str, Any]:
    """Size a model, batch and schedule for `hw` and the data; return the flat plan dict.

    Goal: `hours` (default: a per-device budget) and/or `tokens_per_param`; user `overrides`
    (`k=v`) are honoured exactly. A preset supplies a seed configuration: its model fields are
    fixed, its batch is kept if it fits. With `strict`, a plan over the memory budget is an error.
    `tokens_available` and `val_tokens` are the bins' splits (meta.json): block_size + 1 fits in
    both and evaluation reads about the val split once. The same inputs give the same plan
    (a detected machine's measurement is cached; `remeasure` takes it afresh).
    """
    warnings: list[str] = []
    soft: dict[str, Any] = {}
    preset_claims: dict[str, Any] = {}
    spec: dict[str, Any] = {}
    if preset:
        from finegpt_pipeline.claims import get_preset

        spec = get_preset(preset)
    hw = hw if hw is not None else spec.get("gpu", "cpu")
    hw = get_hardware(hw, remeasure) if isinstance(hw, str) else hw
    if spec:
        soft = dict(spec.get("batch", {}))
        preset_claims = spec.get("claims", {})
        overrides = [f"{k}={v}" for k, v in spec["model"].items()] + list(overrides)
    fixed = _parse_overrides(overrides)
    if tokens_available is None:
        tokens_available = SHARD_TOKENS_ESTIMATE
        warnings.append(f"tokens available not given: assumed one FineWeb shard "
                        f"(~{SHARD_TOKENS_ESTIMATE / 1e9:.2f} B tokens); pass --tokens or --bins")
    if tokens_available <= 0:
        raise ValueError(f"tokens available must be positive (got {tokens_available})")
    goal = "hours"
    if hours is None and tokens_per_param is not None:
        goal = "tokens_per_param"
    elif hours is None:
        hours = DEFAULT_HOURS[hw.kind]
    if hours is not None and hours <= 0:
        raise ValueError(f"hours must be positive (got {hours})")
    budget = memory_budget(hw, memory_fraction)
    base = TrainConfig(block_size=block_size_for(DEFAULT_BLOCK[hw.kind], fixed, tokens_available, val_tokens),
                       vocab_size=fixed.get("vocab_size", padded_vocab_size()),
                       bias=fixed.get("bias", False), dropout=fixed.get("dropout", 0.0),
                       dtype=fixed.get("dtype", "auto"), micro_batch=1)
    cfg = _size_model(hw, base, fixed, budget, hours, tokens_per_param, tokens_available)
    if cfg is None:
        raise ValueError(f"no model fits {hw.name}'s memory budget of {budget / GIB:.2f} GiB "
                         f"at block_size {base.block_size}")
    cfg, max_iters = _size_batch(cfg, hw, fixed, soft, budget, hours, tokens_per_param,
                                 tokens_available, val_tokens, warnings)
    iters_fixed = "max_iters" in fixed or "max_iters" in soft
    if goal == "hours" and not iters_fixed:
        max_iters = fit_time_to_budget(with_schedule(cfg, max_iters), hours,
                                       lambda c: step_seconds(c, hw)).max_iters
    cfg = reschedule(cfg, max_iters, step_seconds(cfg, hw))
    cfg = TrainConfig.from_dict({**cfg.to_dict(), **fixed}, source="plan overrides")
    if iters_fixed:
        goal = "max_iters"
    plan = estimate(cfg, hw, tokens_available, price_per_kwh=price_per_kwh, budget=budget)
    plan.update(goal=goal, hours_budget=hours, preset=preset or "", fixed_fields=fixed,
                val_tokens=val_tokens, warnings=warnings + plan["warnings"])
    if preset_claims:
        plan["claims"] = preset_claims
    if plan["peak_memory_bytes"] > budget:
        message = (f"planned peak memory {plan['peak_memory_bytes'] / GIB:.2f} GiB exceeds the "
                   f"budget {budget / GIB:.2f} GiB on {hw.name}")
        if strict:
            raise ValueError(message + "; lower micro_batch/block_size/n_embd")
        plan["warnings"].append("OVER BUDGET: " + message)
    if goal == "hours" and plan["est_hours"] > hours * 1.05:
        plan["warnings"].append(f"estimated {plan['est_hours']:.2f} h exceeds the {hours:g} h budget")
    elif goal == "hours" and plan["est_hours"] < 0.5 * hours and plan["epochs"] >= 0.95 * MAX_USEFUL_EPOCHS:
        plan["warnings"].append(f"data-limited: {MAX_USEFUL_EPOCHS:g} epochs take {plan['est_hours']:.2f} h "
                                f"of the {hours:g} h budget; more data would allow a larger model")
    if tokens_per_param and plan["tokens_per_param"] < 0.9 * tokens_per_param:
        plan["warnings"].append(_unmet_ratio(plan, tokens_per_param, hours, iters_fixed))
    return plan


def _unmet_ratio(plan: dict[str, Any], goal: float, hours: float | None, iters_fixed: bool) -> str:
    """Why a tokens:params goal is not reached, and what would reach it."""
    needed = goal * plan["params"]
    if iters_fixed:
        cause, fix = f"max_iters={plan['max_iters']:,} (fixed)", f"max_iters >= {needed / plan['tokens_per_step']:,.0f}"
    elif plan["epochs"] >= 0.95 * MAX_USEFUL_EPOCHS or hours is None:
        cause = f"the data ({MAX_USEFUL_EPOCHS:g} epochs of {plan['tokens_available']:,} tokens)"
        fix = f"{needed / MAX_USEFUL_EPOCHS:,.0f} tokens of data"
    else:
        cause, fix = f"the {hours:g} h budget", f"about {hours * needed / plan['tokens_total']:,.3g} h"
    model = "the model" if plan["fixed_fields"].keys() & {"n_layer", "n_embd", "n_head"} else "the smallest model that fits"
    return (f"goal of {goal:g} tokens/param cannot be met: {model} ({plan['n_layer']}L/{plan['n_embd']}d, "
            f"{plan['params'] / 1e6:.2f} M parameters) gets {plan['tokens_total']:,} tokens from {cause}, "
            f"{plan['tokens_per_param']:.3g} tokens/param; {goal:g} needs {fix}")


def _tokens_in_budget(cfg: TrainConfig, hw: Hardware, hours: float | None) -> float:
    if hours is None:
        return math.inf
    n = param_count(cfg.n_layer, cfg.n_embd, cfg.vocab_size, cfg.block_size, cfg.bias)
    tps = max(cfg.block_size, tokens_per_step_for(n))  # amortises the optimizer update
    per_token = step_seconds(cfg, hw, tokens_per_step=tps) / tps
    return 0.9 * hours * 3600 / per_token  # 10 % of the budget kept for evals and checkpoints


def _size_model(hw, base, fixed, budget, hours, ratio_goal, tokens_available) -> TrainConfig | None:
    """Largest fitting shape whose token budget reaches the tokens:params goal; if none does,
    the fitting shape with the best ratio (the smallest)."""
    target = ratio_goal or CHINCHILLA_TOKENS_PER_PARAM
    data_cap = MAX_USEFUL_EPOCHS * tokens_available
    fitting = []
    for layers, d, heads in candidate_shapes(fixed):
        cfg = _replace(base, n_layer=layers, n_embd=d, n_head=heads)
        if memory_estimate(cfg, hw)["total"] > budget:
            continue
        n = param_count(layers, d, cfg.vocab_size, cfg.block_size, cfg.bias)
        tokens = min(_tokens_in_budget(cfg, hw, hours), data_cap)
        fitting.append((tokens / n >= target, n if tokens / n >= target else -n, cfg))
    if not fitting:
        return None
    good = [f for f in fitting if f[0]]
    return max(good or fitting, key=lambda f: f[1])[2]


def _size_batch(cfg, hw, fixed, soft, budget, hours, ratio_goal, tokens_available, val_tokens, warnings):
    """Micro-batch, grad accumulation, step count and schedule for the chosen shape."""
    n = param_count(cfg.n_layer, cfg.n_embd, cfg.vocab_size, cfg.block_size, cfg.bias)
    tokens = min(_tokens_in_budget(cfg, hw, hours), MAX_USEFUL_EPOCHS * tokens_available)
    if ratio_goal:
        tokens = min(tokens, ratio_goal * n)
    target_tps = min(tokens_per_step_for(n), max(cfg.block_size, tokens / MIN_STEPS[hw.kind]))
    fit = largest_micro_batch(cfg, hw, budget, MAX_MICRO_BATCH[hw.kind])
    mb = fixed.get("micro_batch") or min(fit, _pow2_floor(target_tps / cfg.block_size))
    if "micro_batch" not in fixed and soft.get("micro_batch"):
        seed_cfg = _replace(cfg, micro_batch=soft["micro_batch"])
        if memory_estimate(seed_cfg, hw)["total"] <= budget:
            mb = soft["micro_batch"]
        else:
            warnings.append(f"the seed's micro_batch {soft['micro_batch']} does not fit "
                            f"{budget / GIB:.2f} GiB; using {fit} with more accumulation")
            target_tps = soft["micro_batch"] * soft.get("grad_accum", 1) * cfg.block_size
            mb = fit
    mb = max(1, mb)
    if "grad_accum" in fixed:
        ga = fixed["grad_accum"]
    elif soft.get("grad_accum") and mb == soft.get("micro_batch"):
        ga = soft["grad_accum"]
    else:
        ga = max(1, round(target_tps / (mb * cfg.block_size)))
    tps = mb * ga * cfg.block_size
    max_iters = fixed.get("max_iters") or soft.get("max_iters") or max(10, int(tokens // tps))
    lr = fixed.get("learning_rate", learning_rate_for(n))
    cfg = _replace(cfg, micro_batch=mb, grad_accum=ga, learning_rate=lr, min_lr=round(lr / 10, 7),
                   weight_decay=0.1, beta1=0.9, beta2=0.95,
                   eval_iters=eval_iters_for(val_tokens, mb * cfg.block_size, hw.kind),
                   peak_flops=hw.peak_flops, device="auto", compile="auto",
                   dtype=fixed.get("dtype", hw.dtype if hw.kind == "gpu" else "float32"))
    return cfg, max_iters


def with_schedule(cfg: TrainConfig, max_iters: int) -> TrainConfig:
    """Step-count-dependent fields: warmup ~2 % (<= 2000), cosine decay over the whole run,
    ~5 evals and checkpoints, ~50 log lines."""
    eval_interval = max(1, math.ceil(max_iters / 5))
    return _replace(cfg, max_iters=max_iters, lr_decay_iters=max_iters,
                    warmup_iters=min(2000, max(5, max_iters // 50)), eval_interval=eval_interval,
                    checkpoint_interval=eval_interval, log_interval=max(1, max_iters // 50))


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
    return _replace(cfg, checkpoint_interval=min(cfg.checkpoint_interval, every))


def fit_time_to_budget(cfg: TrainConfig, hours: float, step_s: Callable[[TrainConfig], float]) -> TrainConfig:
    """Shrink max_iters until steps + evals fit the time budget (evals are ~10-25 % on CPU)."""
    for _ in range(5):
        total = cfg.max_iters * step_s(cfg) + eval_seconds(cfg, step_s(cfg) / cfg.grad_accum)
        if total <= hours * 3600 or cfg.max_iters <= 10:
            break
        cfg = with_schedule(cfg, max(10, int(cfg.max_iters * hours * 3600 / total * 0.98)))
    return cfg


def estimate(cfg: TrainConfig, hw: Hardware, tokens_available: int, *,
             price_per_kwh: float = DEFAULT_PRICE_PER_KWH, budget: int | None = None) -> dict[str, Any]:
    """The report for a fixed config: exact counts, estimated time, memory, energy, epochs."""
    budget = budget if budget is not None else memory_budget(hw)
    n = param_count(cfg.n_layer, cfg.n_embd, cfg.vocab_size, cfg.block_size, cfg.bias)
    fpt = flops_per_token(cfg.n_layer, cfg.n_embd, cfg.vocab_size, cfg.block_size, cfg.bias)
    tps = cfg.micro_batch * cfg.grad_accum * cfg.block_size
    tokens_total = tps * cfg.max_iters
    mem = memory_estimate(cfg, hw)
    step_s = step_seconds(cfg, hw)
    micro_s = step_s / cfg.grad_accum
    total_s = cfg.max_iters * step_s + eval_seconds(cfg, micro_s)
    hours = total_s / 3600
    epochs = tokens_total / tokens_available
    kwh = hw.board_watts * hours / 1000
    warnings = []
    if epochs > MAX_USEFUL_EPOCHS:
        warnings.append(f"{epochs:.1f} epochs over the data: beyond ~{MAX_USEFUL_EPOCHS:g}, repeated "
                        "tokens are worth much less than new ones (Muennighoff et al. 2023)")
    plan = cfg.to_dict()
    plan.update(
        plan_version=PLAN_VERSION, tokens_per_step=tps, params=n,
        params_non_embedding=n - cfg.block_size * cfg.n_embd, flops_per_token=fpt,
        total_flops=fpt * tokens_total, peak_memory_bytes=mem["total"], memory_budget_bytes=budget,
        memory_breakdown=mem, est_step_seconds=step_s, est_hours=hours,
        est_tokens_per_second=tps / step_s, expected_mfu=effective_mfu(hw, cfg.n_embd),
        tokens_total=tokens_total, tokens_available=int(tokens_available),
        tokens_per_param=tokens_total / n, epochs=epochs, energy_kwh=kwh,
        energy_cost=kwh * price_per_kwh, price_per_kwh=price_per_kwh, board_watts=hw.board_watts,
        hardware=hw.to_dict(), gpu_name=hw.name, warnings=warnings, measured={},
        provenance={"params": "exact", "flops_per_token": "exact", "peak_flops": _peak_source(hw),
                    "peak_memory_bytes": "estimated", "est_step_seconds": "estimated",
                    "est_hours": "estimated", "energy_kwh": "estimated (board power x hours)"},
    )
    return plan


def _peak_source(hw: Hardware) -> str:
    if hw.measured_at:
        return (f"measured {hw.measured_at} on {hw.machine_id} (kept in FINEGPT_HOME/hardware; "
                "--remeasure takes it afresh)")
    return "measured" if hw.detected and hw.kind == "cpu" else "catalog"


def add_cli(subparsers) -> None:
    """`finegpt plan`: registered by cli.STAGE_MODULES; flags and output live in plan_report."""
    from finegpt_pipeline.plan_report import add_plan_cli

    add_plan_cli(subparsers)
