"""Seed presets and the claims check: the corrected arithmetic for what users read."""

from __future__ import annotations

import argparse
import json

import pytest

from finegpt_pipeline.plan import planner
from finegpt_pipeline.config import TrainConfig
from finegpt_pipeline.plan.costs import flops_per_token, param_count
from finegpt_pipeline.plan.claims import PRESETS, check_claims, parse_claims, parse_range


def _verdicts(plan, claims):
    return {v["claim"]: v for v in check_claims(plan, claims)}


def test_seed_plan_for_the_rtx4070_corrected():
    plan = planner.make_plan(None, 850_000_000, preset="rtx4070-one-shard", strict=False)
    assert plan["report"]["gpu_name"] == "NVIDIA GeForce RTX 4070"
    assert (plan["config"]["micro_batch"], plan["config"]["grad_accum"], plan["config"]["block_size"]) == (12, 40, 1024)
    assert plan["report"]["tokens_per_step"] == 491_520
    assert plan["report"]["params"] == 64_041_472  # padded vocab; 64,017,408 with GPT-2's 50257
    shape = dict(n_layer=12, n_head=8, n_embd=512, block_size=1024, bias=False)
    assert param_count(TrainConfig(**shape, vocab_size=50257)) == 64_017_408
    assert plan["report"]["tokens_total"] == 250_000 * 491_520 == 122_880_000_000

    v = _verdicts(plan, PRESETS["rtx4070-one-shard"]["claims"])
    assert v["params"]["verdict"] == "wrong"
    assert v["params"]["ratio"][0] == pytest.approx(110e6 / 64_041_472)  # 1.72x
    # 22-26 it/s x 491,520 tokens x 456.6 MFLOP/token = 4.9-5.8 PFLOP/s vs 58.3 TFLOP/s
    fpt = flops_per_token(TrainConfig(**shape, vocab_size=50304))
    assert v["it_per_s"]["verdict"] == "impossible"
    assert 22 * 491_520 * fpt / 58.3e12 == pytest.approx(84.7, abs=0.1)
    assert 26 * 491_520 * fpt / 58.3e12 == pytest.approx(100.1, abs=0.1)
    assert "84.7-100x" in v["it_per_s"]["detail"]
    # 2.5 s/iteration would need 1.54x the peak
    assert v["s_per_it"]["verdict"] == "impossible"
    assert "1.54x" in v["s_per_it"]["detail"]
    # 250,000 iterations at 22-26 it/s is 2.7-3.2 hours, not 110-130
    assert v["hours"]["verdict"] == "inconsistent"
    assert "2.67-3.16 h" in v["hours"]["detail"]
    assert plan["report"]["est_hours"] > 250_000 * 491_520 * fpt / 58.3e12 / 3600  # never faster than peak
    # 122.9 B tokens is 18.9 epochs even of the claimed 6.5 B, ~145 of a real shard
    assert v["epochs"]["verdict"] == "inconsistent"
    assert "18.9 epochs" in v["epochs"]["detail"]
    assert plan["report"]["epochs"] == pytest.approx(144.6, abs=0.1)
    assert v["tokens_available"]["verdict"] == "wrong"
    assert any("epochs" in w for w in plan["report"]["warnings"])
    # 180-220 W: a 200 W board cannot sustain 220
    assert v["watts"]["verdict"] == "wrong"
    assert "top of the range is above the 200 W" in v["watts"]["detail"]
    assert _verdicts(plan, {"watts": "250-300"})["watts"]["verdict"] == "impossible"
    assert _verdicts(plan, {"watts": "170-200"})["watts"]["verdict"] == "ok"


@pytest.mark.parametrize("preset, params, verdict", [
    ("80gb-350m", 124_373_760, "wrong"),  # GPT-2 small shape (no bias), not 350 M
    ("24gb-160m", 82_015_360, "wrong"),
    ("12gb-40m", 30_331_776, "wrong"),
])
def test_vram_table_rows_parameter_counts(preset, params, verdict):
    plan = planner.make_plan(None, 10**9, preset=preset)
    assert plan["report"]["params"] == params
    assert plan["report"]["peak_memory_bytes"] <= plan["report"]["memory_budget_bytes"]
    assert _verdicts(plan, PRESETS[preset]["claims"])["params"]["verdict"] == verdict


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_plans_within_budget_or_says_so(preset):
    plan = planner.make_plan(None, 10**9, preset=preset, strict=False)
    over = plan["report"]["peak_memory_bytes"] > plan["report"]["memory_budget_bytes"]
    assert over == any(w.startswith("OVER BUDGET") for w in plan["report"]["warnings"])
    spec = PRESETS[preset]
    assert all(plan["config"][k] == v for k, v in spec["model"].items())


def test_plausible_claims_pass():
    plan = planner.make_plan("h100-sxm", 10**9, hours=10, overrides=["n_layer=12", "n_head=12", "n_embd=768"])
    its = 1 / plan["report"]["est_step_seconds"]
    v = _verdicts(plan, {"params": str(plan["report"]["params"]), "it_per_s": f"{its * 0.9}-{its * 1.1}",
                         "vram_gb": str(plan["report"]["peak_memory_bytes"] / 2**30), "watts": "650-700"})
    assert {k: x["verdict"] for k, x in v.items()} == {"params": "ok", "it_per_s": "ok",
                                                       "vram_gb": "ok", "watts": "ok"}


def test_vram_over_the_device_is_impossible():
    plan = planner.make_plan("rtx4070", 10**9, hours=5)
    assert _verdicts(plan, {"vram_gb": "20"})["vram_gb"]["verdict"] == "impossible"


def test_parse_range_and_claims():
    assert parse_range("24") == (24.0, 24.0)
    assert parse_range("22-26") == (22.0, 26.0)
    assert parse_range("110e6-200e6") == (110e6, 200e6)
    assert parse_range("1e-3") == (1e-3, 1e-3)
    assert parse_range("2.5–4.5") == (2.5, 4.5)
    with pytest.raises(ValueError, match="it_per_s"):
        parse_range("fast", "it_per_s")
    with pytest.raises(ValueError, match="lo <= hi"):
        parse_range("26-22")
    with pytest.raises(ValueError, match="--claim expects"):
        parse_claims(["speed=3"])
    assert parse_claims(["it_per_s=24", "params=110e6"]) == {"it_per_s": "24", "params": "110e6"}
    with pytest.raises(ValueError, match="unknown preset"):
        planner.make_plan(None, 10**9, preset="nope")


def test_cli_check_prints_verdicts(capsys):
    parser = argparse.ArgumentParser()
    planner.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["plan", "--preset", "rtx4070-one-shard", "--gpu", "rtx4070", "--check",
                              "--claim", "it_per_s=24", "--claim", "params=110e6",
                              "--claim", "hours=120", "--claim", "vram_gb=10.5"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "**impossible**" in out and "**wrong**" in out and "**inconsistent**" in out
    assert "92.4x" in out  # 24 it/s needs 92.4x the 4070's dense bf16 peak


def test_check_states_its_tolerance_and_counts_memory_in_gib_throughout(capsys):
    import re

    parser = argparse.ArgumentParser()
    planner.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["plan", "--gpu", "rtx4070", "--tokens", "1e9", "--hours", "5", "--check",
                              "--claim", "vram_gb=10-11", "--claim", "params=30e6"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "within 25% of ours (parameters 10%" in out
    assert "GiB" in out and not re.search(r"\d GB\b", out)  # the report and the verdicts: one unit
    assert "device 12.00 GiB" in out  # the catalog's 12 GiB card, not "12.9 GB"
    plan = planner.make_plan("rtx4070", 10**9, hours=5)
    verdict = _verdicts(plan, {"vram_gb": str(plan["report"]["peak_memory_bytes"] / 2**30)})["vram_gb"]
    assert verdict["verdict"] == "ok" and verdict["tolerance"] == 0.25
    assert verdict["ours"] == pytest.approx(plan["report"]["peak_memory_bytes"] / 2**30)


def test_one_rule_for_checking_claims_in_the_cli_and_the_asset(capsys):
    """build_plan checks the claims given, else the preset's seed claims: `finegpt plan` and
    the training_config asset (which both call it) report the same verdicts."""
    plan = planner.build_plan("rtx4070", 10**9, calibration=False, preset="12gb-40m", hours=6)
    seed = plan["report"]["claim_verdicts"]
    assert [v["claim"] for v in seed] == list(PRESETS["12gb-40m"]["claims"])
    parser = argparse.ArgumentParser()
    planner.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["plan", "--gpu", "rtx4070", "--tokens", "1e9", "--preset", "12gb-40m",
                              "--hours", "6", "--no-calibrate", "--json"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["report"]["claim_verdicts"] == seed
    given = planner.build_plan("rtx4070", 10**9, calibration=False, preset="12gb-40m", hours=6,
                               claims={"params": "30e6"})
    assert [v["claim"] for v in given["report"]["claim_verdicts"]] == ["params"]
    assert "claim_verdicts" not in planner.build_plan("cpu", 10**6, calibration=False)["report"]
