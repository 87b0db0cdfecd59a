"""The plan's human side: the "requirements" markdown report of a plan file (its config and
report, see `config.make_plan_file`), with the checked claims when there are any."""

from __future__ import annotations

from typing import Any

from finegpt_pipeline.data.progress import duration
from finegpt_pipeline.plan import loss_forecast
from finegpt_pipeline.plan.claims import format_verdicts
from finegpt_pipeline.hardware import GIB


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def requirements_rows(plan: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The requirements, (requirement, value, source) per row: what the plan needs and where
    each figure comes from (exact, plan, estimated, measured, ...)."""
    cfg, rep = plan["config"], plan["report"]
    hw = rep["hardware"]
    mem = rep["memory_breakdown"]
    prov = rep.get("provenance", {})

    def src(key):
        return prov.get(key, "estimated")

    rows = [
        ("Hardware", f"{hw['name']} ({hw['kind']}, {_gib(hw['memory_bytes'])}, "
                     f"{hw['peak_flops'] / 1e12:.3g} TFLOP/s dense {hw['dtype']})", src("peak_flops")),
        ("Model", f"{cfg['n_layer']}L / {cfg['n_head']}H / {cfg['n_embd']}d, block {cfg['block_size']}, "
                  f"vocab {cfg['vocab_size']}", "plan"),
        ("Parameters", f"{rep['params']:,} ({rep['params'] / 1e6:.1f} M)", "exact"),
        ("Batch", f"{cfg['micro_batch']} x {cfg['grad_accum']} accum x {cfg['block_size']} = "
                  f"{rep['tokens_per_step']:,} tokens/step", "plan"),
        ("Schedule", f"{cfg['max_iters']:,} iters, lr {cfg['learning_rate']:g} -> {cfg['min_lr']:g}, "
                     f"warmup {cfg['warmup_iters']}", "plan"),
        *[(f"Recipe: {k.replace('_', ' ')}", v, "plan") for k, v in rep.get("recipe", {}).items()],
        ("Tokens", f"{rep['tokens_total']:,} seen = {rep['tokens_per_param']:.3g} tokens/param "
                   f"(Chinchilla ~20)", "exact"),
        ("Epochs", f"{rep['epochs']:.2f} over {rep['tokens_available']:,} tokens", "exact"),
        ("FLOPs/token", f"{rep['flops_per_token'] / 1e6:,.1f} M (6N + 12·L·d·T attention)", "exact"),
        ("Total FLOPs", f"{rep['total_flops']:.3g}", "exact"),
        ("Step time", f"{rep['est_step_seconds']:.3g} s ({1 / rep['est_step_seconds']:.3g} it/s) at "
                      f"MFU {rep['expected_mfu']:.2f}", src("est_step_seconds")),
        ("Wall time", duration(rep["est_hours"] * 3600), src("est_hours")),
        ("Peak memory", f"{_gib(rep['peak_memory_bytes'])} of {_gib(rep['memory_budget_bytes'])} budget "
                        f"(weights+grads+AdamW {_gib(mem['weights'] + mem['gradients'] + mem['adamw_state'])}, "
                        f"activations {_gib(mem['activations'])}, logits {_gib(mem['logits'])}, "
                        f"overhead {_gib(mem['allocator_slack'] + mem['context'])})", src("peak_memory_bytes")),
        ("Energy", f"{rep['energy_kwh']:.3g} kWh at {rep['board_watts']:g} W = "
                   f"${rep['energy_cost']:.2f} at ${rep['price_per_kwh']:g}/kWh", "estimated"),
    ]
    forecast = rep.get("loss_forecast")
    if forecast:
        value = (f"{forecast['val_loss']:.2f} nats/token at N = {forecast['n']:,} params, D = "
                 f"{forecast['d']:,} tokens" if forecast.get("trusted", True) else
                 loss_forecast.shown(forecast))
        rows.append(("Loss forecast", value, forecast["label"]))
    return rows


def requirements_notes(plan: dict[str, Any]) -> list[str]:
    """The Markdown lines after the table: the plan's warnings and its checked claims."""
    rep = plan["report"]
    lines = []
    if rep.get("warnings"):
        lines += ["", "Warnings:"] + [f"- {w}" for w in rep["warnings"]]
    if rep.get("claim_verdicts"):
        seed = {v["claim"] for v in rep["claim_verdicts"]} == set(rep.get("claims") or {})
        lines += ["", "Seed claims:" if seed else "Claims:", "", format_verdicts(rep["claim_verdicts"])]
    return lines


def requirements_report(plan: dict[str, Any]) -> str:
    """A markdown "requirements" table in the spirit of the seed notes, with our arithmetic."""
    lines = ["| requirement | value | source |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {source} |" for name, value, source in requirements_rows(plan)]
    return "\n".join(lines + requirements_notes(plan)) + "\n"
