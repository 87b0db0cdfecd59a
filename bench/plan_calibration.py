"""Predicted vs measured peak memory and step time for several model sizes on this machine.

    python bench/plan_calibration.py [--sizes 6x384,12x768,24x1024] [--block 1024] [--steps 3]

Plans each size for the detected device (`plan.build_plan`, uncalibrated: model fixed, the
planner picks the micro-batch),
then probes it with `finegpt_pipeline.plan.calibrate.probe` (a few steps of the trainer's program,
compiled on CUDA as the plan is, eager on CPU) and prints a markdown table for
docs/benchmarks.md. Targets: memory within +-10 %, step time within +-25 %. The peak FLOP/s is
this machine's kept measurement (FINEGPT_HOME/hardware; `--remeasure` takes it afresh). Needs
only torch (no dagster/mlflow).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from finegpt_pipeline.plan.calibrate import probe  # noqa: E402
from finegpt_pipeline.config import TrainConfig  # noqa: E402
from finegpt_pipeline.plan.costs import memory_estimate, step_seconds  # noqa: E402
from finegpt_pipeline.hardware import GIB, detect  # noqa: E402
from finegpt_pipeline.plan.planner import build_plan  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="6x384,12x768,24x1024")
    ap.add_argument("--block", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--micro-batch", type=int, default=0, help="fix it instead of the planner's pick")
    ap.add_argument("--remeasure", action="store_true", help="measure the machine afresh")
    args = ap.parse_args()
    hw = detect(args.remeasure)
    device = hw.device_type
    print(f"device: {hw.name} ({hw.key}), {platform.processor() or platform.machine()}, "
          f"peak {hw.peak_flops / 1e12:.3g} TFLOP/s {hw.dtype}"
          + (f" (measured {hw.measured_at})" if hw.measured_at else "") + "\n")
    print("| model | micro_batch | pred alloc GiB | meas alloc GiB | mem err | pred s/micro-step "
          "| meas s/micro-step | time err |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        layers, width = (int(x) for x in size.split("x"))
        overrides = [f"n_layer={layers}", f"n_embd={width}", f"n_head={max(1, width // 64)}",
                     f"block_size={args.block}", "grad_accum=1", "max_iters=10"]
        if args.micro_batch:
            overrides.append(f"micro_batch={args.micro_batch}")
        plan = build_plan(hw, 10**9, calibration=False, overrides=overrides, strict=False)
        cfg = TrainConfig.from_plan(plan)
        measured = probe(cfg, device, cfg.micro_batch, steps=args.steps)
        pred_mem = memory_estimate(cfg, hw)["allocated_estimate"]
        pred_s = step_seconds(cfg, hw)
        meas_s = measured["fwd_bwd_seconds"] + measured["optimizer_seconds"]
        meas_mem = measured["max_memory_allocated"]
        mem_cols = (f"{meas_mem / GIB:.2f} | {pred_mem / meas_mem - 1:+.0%}" if meas_mem
                    else "n/a (CPU) | n/a")
        print(f"| {layers}L/{width}d T={args.block} | {cfg.micro_batch} | {pred_mem / GIB:.2f} | "
              f"{mem_cols} | {pred_s:.3g} | {meas_s:.3g} | {pred_s / meas_s - 1:+.0%} |")


if __name__ == "__main__":
    main()
