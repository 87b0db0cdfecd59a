"""The plan stage's front door: `build_plan` sizes a model, batch and schedule for a device's
memory and a time budget (`make_plan`), measures it on this machine when asked
(`calibrate.calibrate_plan`), checks claimed figures against it (`claims`), and returns the
plan file `{"plan_version": 2, "config": {...}, "report": {...}}` (see `config`). The
`training_config` asset and `finegpt plan` (registered here) both call it.

What a config costs (counts, memory, time, energy, the schedule) is `costs`; the shapes searched
are `plan_shapes`; what the bins allow is `plan_data`; the markdown report is `plan_report`.
A plan is a function of its inputs (hardware, data, goal, overrides): a machine's measurements
are kept per machine (`hardware.cached_measurement`), so the same inputs give the same plan.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Iterable

from finegpt_pipeline import paths
from finegpt_pipeline.plan import calibrate, claims as claims_mod, loss_forecast
from finegpt_pipeline.config import (
    TrainConfig, _coerce, make_plan_file, padded_vocab_size, parse_assignment,
)
from finegpt_pipeline.plan.costs import (
    DEFAULT_PRICE_PER_KWH, MAX_USEFUL_EPOCHS, estimate, fit_time_to_budget, grad_accum_for,
    memory_budget, memory_estimate, param_count, replace, reschedule, step_seconds, with_schedule,
)
from finegpt_pipeline.hardware import CATALOG, GIB, Hardware, detect, get_hardware
from finegpt_pipeline.layout import bin_path, is_set, val_sha256
from finegpt_pipeline.plan.inputs import block_size_for, eval_iters_for, tokens_from_meta
from finegpt_pipeline.plan.report import requirements_report
from finegpt_pipeline.plan.shapes import candidate_shapes

CHINCHILLA_TOKENS_PER_PARAM = 20.0  # Hoffmann et al. 2022
DEFAULT_HOURS = {"gpu": 12.0, "cpu": 2.0 / 60}  # CPU default: the CI demo trains in ~2 minutes
# A full FineWeb 2.15 GB parquet shard holds ~0.75 B GPT-2 tokens (measured; not the 6-7 B
# that popular advice claims).
SHARD_TOKENS_ESTIMATE = 750_000_000
GPT2_SMALL_PARAMS = 124e6
GPT2_TOKENS_PER_STEP = 2**19  # ~0.5 M tokens per step at GPT-2-small scale (GPT-3 paper table 2.1)
MIN_STEPS = {"gpu": 200, "cpu": 100}  # CPU: small steps learn more per token at tiny scale

DEFAULT_BLOCK = {"gpu": 1024, "cpu": 64}
MAX_MICRO_BATCH = {"gpu": 64, "cpu": 16}  # CPU: bigger micro-batches only add memory, not speed


def build_plan(hw: Hardware | str | None = None, tokens_available: int | None = None, *,
               calibration: bool | None = None, claims: dict[str, Any] | None = None,
               bins_dir: str | None = None, remeasure: bool = False,
               home: Path | None = None, **sizing) -> dict[str, Any]:
    """The plan file for these inputs: `make_plan(hw, tokens_available, **sizing)`, calibrated
    when `calibration` says so (None: for a GPU detected here, `calibrate.wants_calibration`),
    then the claimed figures checked: `claims`, or else the preset's seed claims, if any.
    `bins_dir` records which bins it was sized for; the loss forecast is fitted to the runs
    eval_report measured on its val.bin (kept under the FINEGPT_HOME `home`), else published."""
    plan = make_plan(hw, tokens_available, remeasure=remeasure, **sizing)
    if calibrate.wants_calibration(calibration, plan):
        plan = calibrate.calibrate_plan(plan, remeasure=remeasure)
    report = plan["report"]
    checked = claims or report.get("claims")
    if checked:
        report["claim_verdicts"] = claims_mod.check_claims(plan, checked)
    if bins_dir is not None:
        report["bins_dir"] = str(bins_dir)
    # fitted to the points file eval_report keeps per val.bin (a declared input: the plan
    # names it), else the published coefficients
    points, points_file = [], None
    if bins_dir and (is_set(bins_dir) or bin_path(bins_dir, "val").exists()):
        points_file = paths.home(home).forecast_points(val_sha256(bins_dir))
        points = loss_forecast.load_points(points_file)
    report["loss_forecast"] = loss_forecast.forecast(report["params"], report["tokens_total"],
                                                     points)
    report["loss_forecast"]["points_file"] = str(points_file) if points else None
    return plan


def learning_rate_for(n_embd: int) -> float:
    """Peak lr ~ 1/width (muP-like): GPT-2 small's 6e-4 at width 768, 7.2e-3 at 64, capped at
    1e-2. The same value for AdamW (embeddings, gains) and Muon (matrices, RMS-matched to
    AdamW), so one rule serves both groups."""
    return round(min(1e-2, max(1e-5, 6e-4 * 768 / n_embd)), 7)


def recipe_note(cfg: TrainConfig, fixed: dict[str, Any]) -> dict[str, str]:
    """What the plan chose for the optimizer, learning rate and schedule, and why (the
    measurements: docs/benchmarks.md, bench/token_efficiency.py)."""
    lr_why = ("fixed by --set" if "learning_rate" in fixed else
              f"6e-4 x 768 / n_embd ({cfg.n_embd}), capped at 1e-2: lr ~ 1/width, GPT-2 small's "
              "6e-4 at 768")
    muon = cfg.optimizer == "muon"
    return {
        "optimizer": ("Muon (torch.optim.Muon, RMS-matched to AdamW) for the blocks' 2-D matrices, "
                      "AdamW for embeddings, head and gains; AdamW throughout where torch lacks "
                      "Muon" if muon else "AdamW for every parameter"),
        "learning_rate": f"{cfg.learning_rate:g}: {lr_why}",
        "schedule": (f"warmup {cfg.warmup_iters} steps, flat, linear cool-down over the last "
                     f"{cfg.cooldown_frac:.0%} to {cfg.min_lr:g} (warmup-stable-decay)"
                     if cfg.lr_schedule == "wsd" else
                     f"warmup {cfg.warmup_iters} steps, cosine to {cfg.min_lr:g}"),
        "why": "it reaches nanoGPT's tuned-AdamW val loss in 0.40x its steps at 2L/64d and "
               "4L/128d (bench/token_efficiency.py, docs/benchmarks.md)",
    }


def tokens_per_step_for(params: int) -> int:
    """~0.5 M tokens at 124 M parameters, shrinking as sqrt(N) for smaller models."""
    return int(min(2**20, GPT2_TOKENS_PER_STEP * math.sqrt(params / GPT2_SMALL_PARAMS)))


def _pow2_floor(x: float) -> int:
    return 1 << max(0, int(math.floor(math.log2(max(1.0, x)))))


def largest_micro_batch(cfg: TrainConfig, hw: Hardware, budget: int, cap: int) -> int:
    """Largest power-of-two micro-batch <= cap whose peak memory fits the budget (0: none)."""
    best, mb = 0, 1
    while mb <= cap:
        trial = replace(cfg, micro_batch=mb)
        if memory_estimate(trial, hw)["total"] > budget:
            break
        best, mb = mb, mb * 2
    return best


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
    """Size a model, batch and schedule for `hw` and the data; return the plan file (config and
    report, `config.make_plan_file`), uncalibrated and with no claims checked (`build_plan` does).

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
        spec = claims_mod.get_preset(preset)
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
    report = estimate(cfg, hw, tokens_available, price_per_kwh=price_per_kwh, budget=budget)
    report.update(goal=goal, hours_budget=hours, preset=preset or "", fixed_fields=fixed,
                  val_tokens=val_tokens, warnings=warnings + report["warnings"],
                  recipe=recipe_note(cfg, fixed))
    if preset_claims:
        report["claims"] = preset_claims
    if report["peak_memory_bytes"] > budget:
        message = (f"planned peak memory {report['peak_memory_bytes'] / GIB:.2f} GiB exceeds the "
                   f"budget {budget / GIB:.2f} GiB on {hw.name}")
        if strict:
            raise ValueError(message + "; lower micro_batch/block_size/n_embd")
        report["warnings"].append("OVER BUDGET: " + message)
    if goal == "hours" and report["est_hours"] > hours * 1.05:
        report["warnings"].append(f"estimated {report['est_hours']:.2f} h exceeds the {hours:g} h budget")
    elif goal == "hours" and report["est_hours"] < 0.5 * hours and report["epochs"] >= 0.95 * MAX_USEFUL_EPOCHS:
        report["warnings"].append(f"data-limited: {MAX_USEFUL_EPOCHS:g} epochs take {report['est_hours']:.2f} h "
                                  f"of the {hours:g} h budget; more data would allow a larger model")
    if tokens_per_param and report["tokens_per_param"] < 0.9 * tokens_per_param:
        report["warnings"].append(_unmet_ratio(cfg, report, tokens_per_param, hours, iters_fixed))
    return make_plan_file(cfg.to_dict(), report)


def _unmet_ratio(cfg: TrainConfig, report: dict[str, Any], goal: float, hours: float | None,
                 iters_fixed: bool) -> str:
    """Why a tokens:params goal is not reached, and what would reach it."""
    needed = goal * report["params"]
    if iters_fixed:
        cause, fix = f"max_iters={cfg.max_iters:,} (fixed)", f"max_iters >= {needed / cfg.tokens_per_step:,.0f}"
    elif report["epochs"] >= 0.95 * MAX_USEFUL_EPOCHS or hours is None:
        cause = f"the data ({MAX_USEFUL_EPOCHS:g} epochs of {report['tokens_available']:,} tokens)"
        fix = f"{needed / MAX_USEFUL_EPOCHS:,.0f} tokens of data"
    else:
        cause, fix = f"the {hours:g} h budget", f"about {hours * needed / report['tokens_total']:,.3g} h"
    model = "the model" if report["fixed_fields"].keys() & {"n_layer", "n_embd", "n_head"} else "the smallest model that fits"
    return (f"goal of {goal:g} tokens/param cannot be met: {model} ({cfg.n_layer}L/{cfg.n_embd}d, "
            f"{report['params'] / 1e6:.2f} M parameters) gets {report['tokens_total']:,} tokens from {cause}, "
            f"{report['tokens_per_param']:.3g} tokens/param; {goal:g} needs {fix}")


def _tokens_in_budget(cfg: TrainConfig, hw: Hardware, hours: float | None) -> float:
    if hours is None:
        return math.inf
    n = param_count(cfg)
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
        cfg = replace(base, n_layer=layers, n_embd=d, n_head=heads)
        if memory_estimate(cfg, hw)["total"] > budget:
            continue
        n = param_count(cfg)
        tokens = min(_tokens_in_budget(cfg, hw, hours), data_cap)
        fitting.append((tokens / n >= target, n if tokens / n >= target else -n, cfg))
    if not fitting:
        return None
    good = [f for f in fitting if f[0]]
    return max(good or fitting, key=lambda f: f[1])[2]


def _size_batch(cfg, hw, fixed, soft, budget, hours, ratio_goal, tokens_available, val_tokens, warnings):
    """Micro-batch, grad accumulation, step count and schedule for the chosen shape."""
    n = param_count(cfg)
    tokens = min(_tokens_in_budget(cfg, hw, hours), MAX_USEFUL_EPOCHS * tokens_available)
    if ratio_goal:
        tokens = min(tokens, ratio_goal * n)
    target_tps = min(tokens_per_step_for(n), max(cfg.block_size, tokens / MIN_STEPS[hw.kind]))
    fit = largest_micro_batch(cfg, hw, budget, MAX_MICRO_BATCH[hw.kind])
    mb = fixed.get("micro_batch") or min(fit, _pow2_floor(target_tps / cfg.block_size))
    if "micro_batch" not in fixed and soft.get("micro_batch"):
        seed_cfg = replace(cfg, micro_batch=soft["micro_batch"])
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
        ga = grad_accum_for(target_tps, mb, cfg.block_size)
    cfg = replace(cfg, micro_batch=mb, grad_accum=ga)
    max_iters = fixed.get("max_iters") or soft.get("max_iters") or max(10, int(tokens // cfg.tokens_per_step))
    lr = fixed.get("learning_rate", learning_rate_for(cfg.n_embd))
    # Muon for the blocks' matrices, AdamW for the rest, both at lr; warmup, a flat lr, and a
    # linear cool-down to lr/10 over the last 30 % (warmup-stable-decay)
    cfg = replace(cfg, learning_rate=lr, min_lr=round(lr / 10, 8), matrix_lr=lr,
                  optimizer="muon", lr_schedule="wsd", cooldown_frac=0.3,
                  weight_decay=0.1, beta1=0.9, beta2=0.95,
                  eval_iters=eval_iters_for(val_tokens, cfg.tokens_per_micro_step, hw.kind),
                  # MFU needs a true peak: a GPU's datasheet figure; a CPU's measured matmul
                  # rate is not one (the run beat it: "109 %"), so a CPU plan reports no MFU
                  peak_flops=hw.peak_flops if hw.kind == "gpu" else 0.0,
                  device="auto", compile="auto",
                  dtype=fixed.get("dtype", hw.dtype if hw.kind == "gpu" else "float32"))
    return cfg, max_iters




def add_cli(subparsers) -> None:
    """`finegpt plan` (registered by cli.STAGE_MODULES)."""
    p = subparsers.add_parser(
        "plan", help="size a model, batch and schedule for a GPU/CPU and a time budget",
        description='Print a hardware-sized training plan (JSON: {"plan_version": 2, "config": '
                    'TrainConfig, "report": estimates}).')
    where = p.add_mutually_exclusive_group()
    where.add_argument("--gpu", help=f"catalog key: {', '.join(sorted(CATALOG))}")
    where.add_argument("--detect", action="store_true", help="probe this machine (the default "
                       "without --gpu/--preset)")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--tokens", type=float, help="training tokens available")
    data.add_argument("--bins", help="tokenized_bins directory (reads meta.json) or bins set "
                      "(its members' tokens summed)")
    p.add_argument("--hours", type=float,
                   help=f"time budget in hours (default: {DEFAULT_HOURS['gpu']:g} on a GPU, "
                        f"{DEFAULT_HOURS['cpu'] * 60:g} minutes on a CPU)")
    p.add_argument("--tokens-per-param", type=float, help="goal tokens:params ratio (e.g. 20)")
    p.add_argument("--preset", help="a seed configuration: " + "; ".join(
        f"{name} ({preset['description']})" for name, preset in sorted(claims_mod.PRESETS.items())))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="fix any TrainConfig field (repeatable)")
    p.add_argument("--price-per-kwh", type=float, default=DEFAULT_PRICE_PER_KWH,
                   help="electricity price in US dollars per kWh (default 0.30)")
    p.add_argument("--calibrate", action=argparse.BooleanOptionalAction, default=None,
                   help="measure a few steps on this machine and re-derive time (and memory on "
                        "CUDA); default: on for a detected GPU, off otherwise")
    p.add_argument("--remeasure", action="store_true", help="measure this machine afresh (its "
                   "matmul rate and calibration probes are otherwise kept under "
                   "FINEGPT_HOME/hardware and reused, so the same inputs give the same plan)")
    p.add_argument("--check", action="store_true", help="check --claim figures (default: the "
                   "preset's seed claims) against the plan, which may then exceed the memory budget")
    p.add_argument("--claim", action="append", default=[], metavar="KEY=VALUE",
                   help="claimed figure: params, it_per_s, s_per_it, hours, vram_gb, watts, "
                        "tokens_available, epochs (value or lo-hi)")
    p.add_argument("--out", help="also write the plan JSON here (atomically)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--list", action="store_true", help="list GPUs and presets")
    p.set_defaults(func=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    from finegpt_pipeline.atomic import write_json

    if args.list:
        for key, hw in sorted(CATALOG.items()):
            print(f"gpu {key:11s} {hw.name}: {hw.peak_flops / 1e12:.1f} TFLOP/s {hw.dtype}, "
                  f"{hw.memory_bytes / GIB:.0f} GiB, {hw.board_watts:g} W")
        for key, spec in sorted(claims_mod.PRESETS.items()):
            print(f"preset {key}: {spec['description']}")
        return 0
    _parse_overrides(args.overrides)  # a bad --set fails before anything is measured or written
    claims_mod.parse_claims(args.claim)
    if args.gpu:
        hw = args.gpu
    elif args.detect or not args.preset:
        hw = detect(args.remeasure)
    else:
        hw = None  # the preset's GPU
    tokens = int(args.tokens) if args.tokens is not None else None
    val_tokens = None
    if args.bins:
        from finegpt_pipeline.layout import meta_source, read_meta

        meta, source = read_meta(args.bins), meta_source(args.bins)
        tokens = tokens_from_meta(meta, source)
        val_tokens = tokens_from_meta(meta, source, key="val_tokens")
    plan = build_plan(
        hw, tokens, calibration=args.calibrate, claims=claims_mod.parse_claims(args.claim) or None,
        bins_dir=args.bins, remeasure=args.remeasure, hours=args.hours,
        tokens_per_param=args.tokens_per_param, overrides=args.overrides, preset=args.preset,
        price_per_kwh=args.price_per_kwh, strict=not args.check, val_tokens=val_tokens)
    if args.out:
        write_json(args.out, plan)
    if args.json:
        print(json.dumps(plan, indent=2, sort_keys=True, default=str))
    else:
        print(requirements_report(plan))
        if args.check and not plan["report"].get("claim_verdicts"):
            print("no claims to check (pass --claim key=value or a --preset with seed claims)")
    return 0
