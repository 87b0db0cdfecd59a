"""bench/token_efficiency.py's logic without nanoGPT: steps-to-target from loss tables, the lr
sweep's pick and edge, the commands both trainers get, the tables. The bench itself needs a
nanoGPT work tree (`--nanogpt`; `--smoke` runs it end to end in about a minute); its figures
live in docs/benchmarks.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import token_efficiency as te  # noqa: E402
import token_efficiency_report as ter  # noqa: E402

from finegpt_pipeline.plan.planner import learning_rate_for  # noqa: E402

LADDER = {50: 7.6, 60: 7.5, 75: 7.3, 100: 7.1}


def test_steps_to_target_is_the_first_ladder_point_at_or_below_it_with_an_interpolation():
    r = ter.steps_to_target(LADDER, 7.4, 100)
    assert (r["steps_needed"], r["ratio"], r["goal_met"], r["upper_bound"]) == (75, 0.75, True, False)
    assert r["interpolated"] == pytest.approx(60 + 0.5 * 15)  # 7.5 -> 7.3 crosses 7.4 halfway
    assert r["ratio_interpolated"] == pytest.approx(0.675)


def test_steps_to_target_at_n_only_or_never_misses_the_goal():
    at_n = ter.steps_to_target(LADDER, 7.15, 100)
    assert (at_n["steps_needed"], at_n["ratio"], at_n["goal_met"]) == (100, 1.0, False)
    never = ter.steps_to_target(LADDER, 7.0, 100)
    assert never["steps_needed"] is None and never["ratio"] is None and not never["goal_met"]
    assert "not reached by 100 steps" in ter._ratio_text(never)


def test_steps_to_target_needs_every_larger_budget_to_stay_below_and_bounds_the_smallest():
    # M=50 dips below by chance, M=60 does not: the count is 75, not 50
    noisy = ter.steps_to_target({50: 7.35, 60: 7.45, 75: 7.38, 100: 7.2}, 7.4, 100)
    assert noisy["steps_needed"] == 75
    assert noisy["interpolated"] == pytest.approx(60 + 15 * 0.05 / 0.07)
    early = ter.steps_to_target({50: 7.3, 100: 7.1}, 7.4, 100)
    assert (early["steps_needed"], early["upper_bound"], early["interpolated"]) == (50, True, None)
    assert ter._ratio_text(early).startswith("<= 0.50x")


def test_the_lr_sweep_picks_the_lowest_loss_and_extends_past_an_edge():
    sweep = {1.5e-3: 8.0, 6e-3: 7.0, 2e-2: 6.5}
    assert ter.pick_lr(sweep) == (2e-2, "high")
    assert ter.pick_lr({**sweep, 2e-2: 7.2}) == (6e-3, None)
    assert ter.pick_lr({**sweep, 1.5e-3: 6.0}) == (1.5e-3, "low")
    assert ter.pick_lr({6e-3: 7.0}) == (6e-3, None)
    ratio = (2e-2 / 1.5e-3) ** 0.5
    assert ter.beyond_edge(list(sweep), "high") == pytest.approx(2e-2 * ratio, rel=1e-2)
    assert ter.beyond_edge(list(sweep), "low") == pytest.approx(1.5e-3 / ratio, rel=1e-2)


def test_ladder_and_sizes_parse():
    assert ter.ladder_steps(100, [1.0, 0.5, 0.6, 0.75]) == [50, 60, 75, 100]
    assert ter.ladder_steps(8, [0.5, 1.0]) == [4, 8]
    with pytest.raises(ValueError):
        ter.ladder_steps(100, [1.5])
    assert ter.parse_sizes("2x64, 4X128") == [(2, 64), (4, 128)]
    with pytest.raises(ValueError, match="LAYERSxWIDTH"):
        ter.parse_sizes("2-64")


def _last_flags(cmd: list[str]) -> dict[str, str]:
    """What nanoGPT's configurator ends with: the last `--key=value` of each key wins."""
    return dict(a[2:].split("=", 1) for a in cmd if a.startswith("--"))


def test_nanogpt_gets_the_tuned_adamw_schedule_and_a_seed_config(tmp_path):
    nano, bins, work = tmp_path / "nanoGPT", tmp_path / "bins", tmp_path / "run"
    nano.mkdir(), bins.mkdir(), work.mkdir()
    model = dict(n_layer=2, n_head=1, n_embd=64, block_size=64, bias=False, dropout=0.0)
    cmd = te.nanogpt_args(nano, bins, work, model, 100, 6e-3, 0, 16)
    flags = _last_flags(cmd)
    assert cmd[1] == "train.py" and not any(a.endswith("seed.py") for a in cmd)
    assert {k: flags[k] for k in ("max_iters", "eval_interval", "lr_decay_iters", "warmup_iters",
                                  "learning_rate", "min_lr", "batch_size", "block_size", "n_layer",
                                  "n_embd", "n_head", "gradient_accumulation_steps",
                                  "always_save_checkpoint", "dtype", "compile", "device",
                                  "weight_decay", "beta2")} == {
        "max_iters": "100", "eval_interval": "100", "lr_decay_iters": "100",
        "warmup_iters": "10", "learning_rate": "0.006", "min_lr": "0.0006", "batch_size": "16",
        "block_size": "64", "n_layer": "2", "n_embd": "64", "n_head": "1",
        "gradient_accumulation_steps": "1", "always_save_checkpoint": "True",
        "dtype": "float32", "compile": "False", "device": "cpu", "weight_decay": "0.1",
        "beta2": "0.95"}
    assert (nano / "data" / "finegpt_bench" / "train.bin").is_symlink()
    seeded = te.nanogpt_args(nano, bins, work, model, 100, 6e-3, 2, 16)
    assert seeded[2] == str(work / "seed.py")  # a config file: before the --key=value flags
    assert "+ 2)" in (work / "seed.py").read_text()


def test_the_seed_config_offsets_torch_manual_seed():
    original = torch.manual_seed
    try:
        exec(te.SEED_CONFIG.format(k=3), {})
        torch.manual_seed(1337)
        shifted = torch.rand(4)
    finally:
        torch.manual_seed = original
    torch.manual_seed(1340)
    assert torch.equal(shifted, torch.rand(4))


def test_ours_runs_the_planners_default_recipe_for_each_ladder_budget(tmp_path):
    plan = te.ours_plan(4, 128, 100, 64, 16, 199_859, 16_231)
    cfg = plan["config"]
    assert (cfg["optimizer"], cfg["lr_schedule"], cfg["cooldown_frac"]) == ("muon", "wsd", 0.3)
    assert cfg["learning_rate"] == cfg["matrix_lr"] == learning_rate_for(128)
    assert cfg["min_lr"] == pytest.approx(cfg["learning_rate"] / 10)
    assert (cfg["n_layer"], cfg["n_embd"], cfg["block_size"], cfg["micro_batch"],
            cfg["grad_accum"], cfg["dtype"], cfg["compile"], cfg["device"]) == (
        4, 128, 64, 16, 1, "float32", "false", "cpu")
    cmd = te.ours_args(tmp_path / "plan.json", tmp_path / "bins", tmp_path / "out", 60, 1)
    assert cmd[cmd.index("--max-iters") + 1] == "60" and cmd[-1] == "seed=1338"
    assert "--no-mlflow" in cmd


def test_a_size_summary_and_its_tables():
    size = {"name": "2L/64d", "params": 3.3e6, "steps": 100, "unigram_loss": 8.0,
            "nanogpt": {"sweep": {1.5e-3: 8.1, 6e-3: 7.45, 2e-2: 7.5}, "best_lr": 6e-3,
                        "edge": None, "seeds": {0: 7.46, 1: 7.36}},
            "ours": {"learning_rate": 7.2e-3,
                     "losses": {m: {0: v - 0.05, 1: v + 0.05} for m, v in LADDER.items()}}}
    ter.summarize_size(size)
    assert size["nanogpt"]["target"] == pytest.approx(7.41)
    assert size["ours"]["mean"][75] == pytest.approx(7.3)
    assert size["result"]["steps_needed"] == 75 and size["result"]["goal_met"]
    table = ter.render_markdown([size])
    assert "| 2L/64d | 3.30 M | 100 | 0.0015: 8.100, 0.006: 7.450, 0.02: 7.500 | 0.006 | 7.410 ± 0.071 (2) | 7.100 |" in table
    assert "0.75x (75/100), interpolated 0.67x | **met** |" in table
    assert "| 75 | 0.75 | 7.250 | 7.350 | 7.300 | ✓ |" in table
    assert "| 60 | 0.60 | 7.450 | 7.550 | 7.500 |  |" in table


def test_a_previous_runs_json_is_reused_with_its_keys_as_numbers(tmp_path):
    size = {"name": "2L/64d", "steps": 100, "block_size": 64, "micro_batch": 16,
            "unigram_loss": 8.0,
            "nanogpt": {"sweep": {6e-3: 8.0, 2e-2: 8.1}, "best_lr": 6e-3, "seeds": {0: 8.0, 1: 8.1}},
            "ours": {"losses": {50: {0: 7.7, 1: 7.8}}}}
    tokens = {"train": 199_859, "val": 16_231}
    path = tmp_path / "prior.json"
    path.write_text(json.dumps({"bins_tokens": tokens, "sizes": [size]}))
    prior = te.load_prior(str(path), 100, 64, 16, tokens)["2L/64d"]
    assert prior["nanogpt"]["sweep"] == {6e-3: 8.0, 2e-2: 8.1}
    assert prior["nanogpt"]["seeds"] == {0: 8.0, 1: 8.1}
    assert prior["ours"]["losses"] == {50: {0: 7.7, 1: 7.8}}
    assert te.load_prior(None, 100, 64, 16, tokens) == {}
    with pytest.raises(SystemExit, match="N=100"):
        te.load_prior(str(path), 150, 64, 16, tokens)
    with pytest.raises(SystemExit, match="other bins"):
        te.load_prior(str(path), 100, 64, 16, {"train": 1, "val": 1})
