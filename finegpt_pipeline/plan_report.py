"""The plan's human side: the "requirements" markdown report and the `finegpt plan` command."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from finegpt_pipeline.hardware import CATALOG, GIB


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def _duration(hours: float) -> str:
    if hours < 1:
        return f"{hours * 60:.1f} min"
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours:,.0f} h ({hours / 24:.1f} days)"


def requirements_report(plan: dict[str, Any]) -> str:
    """A markdown "requirements" table in the spirit of the seed notes, with our arithmetic."""
    hw = plan["hardware"]
    mem = plan["memory_breakdown"]
    prov = plan.get("provenance", {})

    def src(key):
        return prov.get(key, "estimated")

    rows = [
        ("Hardware", f"{hw['name']} ({hw['kind']}, {_gib(hw['memory_bytes'])}, "
                     f"{hw['peak_flops'] / 1e12:.3g} TFLOP/s dense {hw['dtype']})", src("peak_flops")),
        ("Model", f"{plan['n_layer']}L / {plan['n_head']}H / {plan['n_embd']}d, block {plan['block_size']}, "
                  f"vocab {plan['vocab_size']}", "plan"),
        ("Parameters", f"{plan['params']:,} ({plan['params'] / 1e6:.1f} M)", "exact"),
        ("Batch", f"{plan['micro_batch']} x {plan['grad_accum']} accum x {plan['block_size']} = "
                  f"{plan['tokens_per_step']:,} tokens/step", "plan"),
        ("Schedule", f"{plan['max_iters']:,} iters, lr {plan['learning_rate']:g} -> {plan['min_lr']:g}, "
                     f"warmup {plan['warmup_iters']}", "plan"),
        ("Tokens", f"{plan['tokens_total']:,} seen = {plan['tokens_per_param']:.3g} tokens/param "
                   f"(Chinchilla ~20)", "exact"),
        ("Epochs", f"{plan['epochs']:.2f} over {plan['tokens_available']:,} tokens", "exact"),
        ("FLOPs/token", f"{plan['flops_per_token'] / 1e6:,.1f} M (6N + 12·L·d·T attention)", "exact"),
        ("Total FLOPs", f"{plan['total_flops']:.3g}", "exact"),
        ("Step time", f"{plan['est_step_seconds']:.3g} s ({1 / plan['est_step_seconds']:.3g} it/s) at "
                      f"MFU {plan['expected_mfu']:.2f}", src("est_step_seconds")),
        ("Wall time", _duration(plan["est_hours"]), src("est_hours")),
        ("Peak memory", f"{_gib(plan['peak_memory_bytes'])} of {_gib(plan['memory_budget_bytes'])} budget "
                        f"(weights+grads+AdamW {_gib(mem['weights'] + mem['gradients'] + mem['adamw_state'])}, "
                        f"activations {_gib(mem['activations'])}, logits {_gib(mem['logits'])}, "
                        f"overhead {_gib(mem['allocator_slack'] + mem['context'])})", src("peak_memory_bytes")),
        ("Energy", f"{plan['energy_kwh']:.3g} kWh at {plan['board_watts']:g} W = "
                   f"{plan['energy_cost']:.2f} at {plan['price_per_kwh']:g}/kWh", "estimated"),
    ]
    lines = ["| requirement | value | source |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {source} |" for name, value, source in rows]
    if plan.get("warnings"):
        lines += ["", "Warnings:"] + [f"- {w}" for w in plan["warnings"]]
    return "\n".join(lines) + "\n"


def add_plan_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "plan", help="size a model, batch and schedule for a GPU/CPU and a time budget",
        description="Print a hardware-sized training plan (flat JSON = TrainConfig + estimates).")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--gpu", help=f"catalog key: {', '.join(sorted(CATALOG))}")
    where.add_argument("--detect", action="store_true", help="probe this machine (the default "
                       "without --gpu/--preset)")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--tokens", type=float, help="training tokens available")
    data.add_argument("--bins", help="tokenized_bins directory (reads meta.json)")
    p.add_argument("--hours", type=float, help="time budget in hours")
    p.add_argument("--tokens-per-param", type=float, help="goal tokens:params ratio (e.g. 20)")
    p.add_argument("--preset", help="a seed configuration (see --list)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="fix any TrainConfig field (repeatable)")
    p.add_argument("--price-per-kwh", type=float, default=None, help="electricity price (default 0.30)")
    p.add_argument("--calibrate", action=argparse.BooleanOptionalAction, default=None,
                   help="measure a few steps on this machine and re-derive time (and memory on "
                        "CUDA); default: on for a detected GPU, off otherwise")
    p.add_argument("--remeasure", action="store_true", help="measure this machine afresh (its "
                   "matmul rate and calibration probes are otherwise kept under "
                   "FINEGPT_HOME/hardware and reused, so the same inputs give the same plan)")
    p.add_argument("--check", action="store_true", help="check --claim figures against the plan")
    p.add_argument("--claim", action="append", default=[], metavar="KEY=VALUE",
                   help="claimed figure: params, it_per_s, s_per_it, hours, vram_gb, watts, "
                        "tokens_available, epochs (value or lo-hi)")
    p.add_argument("--out", help="also write the plan JSON here (atomically)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--list", action="store_true", help="list GPUs and presets")
    p.set_defaults(func=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    from finegpt_pipeline import calibrate
    from finegpt_pipeline import claims as claims_mod
    from finegpt_pipeline import plan as plan_mod
    from finegpt_pipeline.atomic import write_json
    from finegpt_pipeline.hardware import detect

    if args.list:
        for key, hw in sorted(CATALOG.items()):
            print(f"gpu {key:11s} {hw.name}: {hw.peak_flops / 1e12:.1f} TFLOP/s {hw.dtype}, "
                  f"{hw.memory_bytes / GIB:.0f} GiB, {hw.board_watts:g} W")
        for key, spec in sorted(claims_mod.PRESETS.items()):
            print(f"preset {key}: {spec['description']}")
        return 0
    if args.gpu:
        hw = args.gpu
    elif args.detect or not args.preset:
        hw = detect(args.remeasure)
    else:
        hw = None  # the preset's GPU
    tokens = int(args.tokens) if args.tokens is not None else None
    val_tokens = None
    if args.bins:
        from finegpt_pipeline.bins import META_NAME, read_meta

        meta, source = read_meta(args.bins), str(Path(args.bins) / META_NAME)
        tokens = plan_mod.tokens_from_meta(meta, source)
        val_tokens = plan_mod.tokens_from_meta(meta, source, key="val_tokens")
    claimed = claims_mod.parse_claims(args.claim)
    if args.check and args.preset and not args.claim:
        claimed = dict(claims_mod.get_preset(args.preset).get("claims", {}))
    plan = plan_mod.make_plan(
        hw, tokens, hours=args.hours, tokens_per_param=args.tokens_per_param,
        overrides=args.overrides, preset=args.preset,
        price_per_kwh=args.price_per_kwh if args.price_per_kwh is not None else plan_mod.DEFAULT_PRICE_PER_KWH,
        strict=not args.check, val_tokens=val_tokens, remeasure=args.remeasure)
    if calibrate.wants_calibration(args.calibrate, plan):
        plan = calibrate.calibrate_plan(plan, remeasure=args.remeasure)
    verdicts = claims_mod.check_claims(plan, claimed) if args.check else []
    if args.check:
        plan["claim_verdicts"] = verdicts
    if args.out:
        write_json(args.out, plan)
    if args.json:
        print(json.dumps(plan, indent=2, sort_keys=True, default=str))
    else:
        print(requirements_report(plan))
        if args.check:
            print(claims_mod.format_verdicts(verdicts) if verdicts else "no claims to check "
                  "(pass --claim key=value or a --preset with seed claims)")
    return 0
