"""Measured calibration: run a few real training steps of the planned model and re-derive the
plan from measurements: `costs.estimate` is given the measured step time, and on CUDA the
report's peak memory is the measured one. Called by `plan.build_plan`; imports no planner.

Probes the planned micro-batch (halved until it runs within the memory budget) and one twice
as large. On CUDA, peak memory is `torch.cuda.max_memory_allocated` per probe; a line through
the two points picks the largest power-of-two micro-batch that fits the budget with a safety
margin, and grad accumulation is re-derived to keep tokens/step. On CPU only time is measured
(memory stays estimated). Fields the user fixed when planning stay as they were.
The probe builds the program the trainer will run: `runtime.setup` picks device, precision and
compilation from the plan as the trainer does, and `runtime.wrap_model` compiles the model when
the plan compiles on that device (the first, compiling step is not timed). Probes are kept per
machine (`hardware.cached_measurement`), so the same plan calibrates the same way on a re-run;
`remeasure=True` probes afresh.
"""

from __future__ import annotations

import time
from typing import Any

from finegpt_pipeline.config import GPT2_VOCAB_SIZE, TrainConfig, make_plan_file
from finegpt_pipeline.plan.costs import (
    DEFAULT_PRICE_PER_KWH, estimate, fit_time_to_budget, grad_accum_for, measured_peak, memory_estimate,
    replace, with_checkpoint_cadence,
)
from finegpt_pipeline.hardware import GIB, Hardware, cached_measurement
from finegpt_pipeline.layout import json_digest
from finegpt_pipeline.plan.inputs import eval_iters_for

SAFETY = 0.95  # of the memory budget, on top of the budget's own fraction of device memory


def probe(cfg: TrainConfig, device: str, micro_batch: int, steps: int = 3) -> dict[str, Any]:
    """Time `steps` training steps of the trainer's program (forward+backward, gradient
    clipping, optimizer update; compiled when the plan compiles on `device`) after one warm-up
    step, at `micro_batch`; on CUDA also the peak allocated memory. Raises torch's OOM as is."""
    import torch

    from finegpt_pipeline import runtime
    from finegpt_pipeline.model import GPT, GPTConfig

    run_cfg = replace(cfg, device=device, micro_batch=micro_batch)
    rt = runtime.setup(run_cfg)  # the trainer's device, precision and compile decision
    sync = torch.cuda.synchronize if rt.device_type == "cuda" else (lambda: None)
    if rt.compile:
        torch._dynamo.reset()  # compile afresh, as a new training process does
    if rt.device_type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(cfg.seed)
    model = GPT(GPTConfig(**cfg.model_args())).to(rt.device)
    optimizer = model.configure_optimizer(cfg.weight_decay, cfg.learning_rate,
                                          (cfg.beta1, cfg.beta2), rt.device_type)
    train_model = runtime.wrap_model(model, rt)
    scaler = rt.grad_scaler()
    x = torch.randint(0, GPT2_VOCAB_SIZE, (micro_batch, cfg.block_size), device=rt.device)
    y = torch.randint(0, GPT2_VOCAB_SIZE, (micro_batch, cfg.block_size), device=rt.device)
    fwd_bwd, opt = [], []
    try:
        for step in range(steps + 1):
            sync()
            t0 = time.perf_counter()
            with rt.autocast():
                _, loss = train_model(x, y)
            scaler.scale(loss).backward()
            sync()
            t1 = time.perf_counter()
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            sync()
            if step:  # the first step pays for compilation, allocation and kernel selection
                fwd_bwd.append(t1 - t0)
                opt.append(time.perf_counter() - t1)
        peak = torch.cuda.max_memory_allocated(rt.device) if rt.device_type == "cuda" else None
    finally:
        del model, train_model, optimizer, x, y
        if rt.device_type == "cuda":
            torch.cuda.empty_cache()
    return {"micro_batch": micro_batch, "dtype": str(rt.dtype).removeprefix("torch."),
            "compile": rt.compile, "fwd_bwd_seconds": min(fwd_bwd), "optimizer_seconds": min(opt),
            "max_memory_allocated": peak,
            "predicted_allocated": memory_estimate(run_cfg, _hw_stub(rt.device_type))["allocated_estimate"]}


def _hw_stub(device_type: str) -> Hardware:
    return Hardware(key="probe", name="probe", kind="gpu" if device_type == "cuda" else "cpu",
                    peak_flops=1.0, memory_bytes=0, bandwidth_bytes_per_s=1.0, board_watts=0.0,
                    dtype="bfloat16" if device_type == "cuda" else "float32", bf16=False, tf32=False,
                    expected_mfu=1.0)


def wants_calibration(requested: bool | None, plan: dict[str, Any]) -> bool:
    """An explicit yes/no wins; by default a plan for a GPU detected on this machine is probed
    (a catalog GPU may not be the one here, and a CPU probe only costs time)."""
    if requested is not None:
        return requested
    hw = plan["report"].get("hardware") or {}
    return bool(hw.get("detected")) and hw.get("kind") == "gpu"


def probe_name(cfg: TrainConfig, device: str, micro_batch: int, steps: int) -> str:
    """The kept probe's name: everything its timing and memory depend on, hashed."""
    inputs = {"model": cfg.model_args(), "micro_batch": micro_batch, "device": device, "steps": steps,
              "dtype": cfg.dtype, "compile": str(cfg.compile).lower(), "grad_clip": cfg.grad_clip > 0}
    digest = json_digest(inputs, 10)
    return f"probe-{cfg.n_layer}x{cfg.n_embd}-T{cfg.block_size}-b{micro_batch}-{digest}"


def _probe_or_oom(cfg: TrainConfig, device: str, micro_batch: int, steps: int,
                  remeasure: bool = False) -> dict[str, Any]:
    import torch

    def measure() -> dict[str, Any]:
        try:
            return probe(cfg, device, micro_batch, steps)
        except torch.cuda.OutOfMemoryError:
            return {"micro_batch": micro_batch, "oom": True}

    return cached_measurement(probe_name(cfg, device, micro_batch, steps), measure, remeasure,
                              required=("micro_batch",))


def calibrate_plan(plan: dict[str, Any], device: str | None = None, steps: int = 3,
                   remeasure: bool = False) -> dict[str, Any]:
    """The plan file with measured step time (and CUDA memory); its report says what was
    measured. Fields the user fixed when planning (`fixed_fields`) are kept, as the planner
    keeps them. Probes this machine already ran for the same inputs are reused unless
    `remeasure`."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    is_cuda = device.startswith("cuda")
    planned = plan["report"]
    hw = Hardware(**planned["hardware"])
    fixed = dict(planned.get("fixed_fields") or {})
    cfg = TrainConfig.from_plan(plan)
    budget = planned["memory_budget_bytes"]
    limit = SAFETY * budget

    def fits(p: dict[str, Any]) -> bool:
        return not p.get("oom") and (not is_cuda or measured_peak(p["max_memory_allocated"]) <= limit)

    # the planned micro-batch, halved until it runs within the budget (each try recorded)
    probes: list[dict[str, Any]] = []
    mb = cfg.micro_batch
    while True:
        probes.append(_probe_or_oom(cfg, device, mb, steps, remeasure))
        if fits(probes[-1]):
            break
        if mb == 1 or "micro_batch" in fixed:
            need = ("runs out of memory" if probes[-1].get("oom") else
                    f"needs {measured_peak(probes[-1]['max_memory_allocated']) / GIB:.2f} GiB")
            raise ValueError(f"calibration: {cfg.n_layer}L/{cfg.n_embd}d at block_size {cfg.block_size} "
                             f"{need} on {device} at micro_batch {mb}, over the "
                             f"{budget / GIB:.2f} GiB budget; plan a smaller "
                             f"{'micro_batch' if mb > 1 else 'model'}")
        mb //= 2
    base = probes[-1]
    chosen, measured_alloc = mb, base["max_memory_allocated"]
    if "micro_batch" not in fixed:
        # one twice as large: the time per sample there, and on CUDA a line for memory
        bigger = _probe_or_oom(cfg, device, mb * 2, steps, remeasure)
        probes.append(bigger)
        if is_cuda and not bigger.get("oom"):
            per_sample = max(1.0, (bigger["max_memory_allocated"] - measured_alloc) / mb)
            fixed_bytes = measured_alloc - per_sample * mb
            max_mb = max(mb, cfg.tokens_per_step // cfg.block_size)
            while (chosen * 2 <= max_mb
                   and measured_peak(int(fixed_bytes + per_sample * chosen * 2)) <= limit):
                chosen *= 2
            measured_alloc = int(fixed_bytes + per_sample * chosen)
    fitted = [p for p in probes if not p.get("oom")]
    ref = min(fitted, key=lambda p: abs(p["micro_batch"] - chosen))
    per_sample_s = ref["fwd_bwd_seconds"] / ref["micro_batch"]
    grad_accum = fixed.get("grad_accum") or grad_accum_for(cfg.tokens_per_step, chosen, cfg.block_size)
    cfg = replace(cfg, micro_batch=chosen, grad_accum=grad_accum)
    if planned.get("val_tokens"):
        cfg = replace(cfg, eval_iters=eval_iters_for(planned["val_tokens"], cfg.tokens_per_micro_step, hw.kind))
    step_s = per_sample_s * cfg.micro_batch * cfg.grad_accum + ref["optimizer_seconds"]
    if planned.get("goal") == "hours" and planned.get("hours_budget"):
        cfg = fit_time_to_budget(cfg, planned["hours_budget"], lambda c: step_s)
    cfg = with_checkpoint_cadence(cfg, step_s)
    cfg = TrainConfig.from_dict({**cfg.to_dict(), **fixed}, source="plan fixed_fields")
    price = planned.get("price_per_kwh", DEFAULT_PRICE_PER_KWH)
    predicted = estimate(cfg, hw, planned["tokens_available"], price_per_kwh=price, budget=budget)
    fresh = estimate(cfg, hw, planned["tokens_available"], price_per_kwh=price, budget=budget,
                     measured_step_s=step_s)
    # the planner's own keys (goal, fixed fields, claims, ...) stay; what estimate() derives is new
    report = {**planned, **fresh, "warnings": list(dict.fromkeys(planned.get("warnings", []) + fresh["warnings"]))}
    when = f"{ref['measured_at']} on {ref['machine_id']}" if "measured_at" in ref else "now"
    provenance = dict(fresh["provenance"], est_step_seconds=f"measured {when}", est_hours="measured step x iters")
    if is_cuda:
        breakdown = dict(fresh["memory_breakdown"], measured_allocated=measured_alloc)
        report.update(peak_memory_bytes=measured_peak(measured_alloc), memory_breakdown=breakdown)
        provenance["peak_memory_bytes"] = ("measured (max_memory_allocated)" if chosen == mb else
                                           "fitted to two measured probes") + f" + allocator slack and context; {when}"
    if planned.get("goal") == "hours" and report["est_hours"] > 1.05 * planned["hours_budget"]:
        report["warnings"].append(f"measured: {report['est_hours']:.3g} h exceeds the {planned['hours_budget']:g} h "
                                  "budget even at the minimum step count")
    report["provenance"] = provenance
    report["measured"] = {"est_step_seconds": step_s, "device": device, "measured_at": ref.get("measured_at"),
                          "machine_id": ref.get("machine_id")}
    report["calibration"] = {"device": device, "steps": steps, "probes": probes, "chosen_micro_batch": chosen,
                             "predicted": {"est_step_seconds": predicted["est_step_seconds"],
                                           "peak_memory_bytes": predicted["peak_memory_bytes"]}}
    return make_plan_file(cfg.to_dict(), report)
