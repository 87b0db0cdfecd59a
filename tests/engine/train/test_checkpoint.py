"""Checkpoints: nanoGPT layout, exact reload, SIGKILL mid-run then --resume, `finegpt sample`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests._bins_fixture import child_env, sample_bins, write_plan  # noqa: F401
from finegpt_pipeline.train import checkpoint
from finegpt_pipeline.evaluate import sample
from finegpt_pipeline.config import TrainConfig
from finegpt_pipeline.model import GPT, GPTConfig

NANOGPT_MODEL_ARGS = {"block_size", "vocab_size", "n_layer", "n_head", "n_embd", "dropout", "bias"}


def _tiny_trained_model() -> tuple[GPT, TrainConfig, torch.optim.Optimizer]:
    cfg = TrainConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, bias=True)
    torch.manual_seed(0)
    model = GPT(GPTConfig(**cfg.model_args()))
    opt = model.configure_optimizer(0.1, 1e-2, (0.9, 0.95), "cpu")
    for _ in range(3):  # move weights off their init so a reload has something to reproduce
        x = torch.randint(0, 50257, (2, 16))
        _, loss = model(x, torch.roll(x, -1, 1))
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model, cfg, opt


def test_reload_reproduces_logits_exactly_and_strips_wrapper_prefixes(tmp_path):
    model, cfg, opt = _tiny_trained_model()
    wrapped = torch.nn.DataParallel(model)  # names gain "module.", as under DDP
    assert next(iter(wrapped.state_dict())).startswith("module.")
    path = checkpoint.save(tmp_path / "ckpt.pt", wrapped, opt, cfg.to_dict(), 3, 4.5,
                           resume={"rng": checkpoint.rng_state(), "tokens_seen": 96})
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert {"model_args", "model", "optimizer", "iter_num", "best_val_loss", "config"} <= set(ckpt)
    assert set(ckpt["model_args"]) == NANOGPT_MODEL_ARGS
    names = list(ckpt["model"])
    assert not [n for n in names if n.startswith(("module.", "_orig_mod."))]
    for expected in ("transformer.wte.weight", "transformer.wpe.weight", "lm_head.weight",
                     "transformer.h.0.attn.c_attn.weight", "transformer.h.1.mlp.c_fc.weight",
                     "transformer.h.1.mlp.c_proj.bias", "transformer.ln_f.weight"):
        assert expected in names
    assert (ckpt["iter_num"], ckpt["best_val_loss"]) == (3, 4.5)
    assert TrainConfig.from_dict(ckpt["config"]) == cfg

    reloaded = checkpoint.model_from_checkpoint(checkpoint.load(path))
    x = torch.randint(0, 50257, (3, 16))
    model.eval(), reloaded.eval()
    with torch.no_grad():
        assert torch.equal(model(x, x)[0], reloaded(x, x)[0])


def test_compiled_prefix_is_stripped():
    state = {"_orig_mod.lm_head.weight": torch.zeros(1), "module._orig_mod.transformer.wte.weight": torch.zeros(1)}
    assert set(checkpoint.clean_state_dict(state)) == {"lm_head.weight", "transformer.wte.weight"}


def test_unreadable_checkpoint_named_in_error(tmp_path):
    bad = tmp_path / "ckpt.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=str(bad)):
        checkpoint.load(bad)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        checkpoint.load(tmp_path / "missing.pt")


def test_non_checkpoint_given_to_sample_is_one_line_naming_it(tmp_path):
    bad = tmp_path / "notes.pt"
    bad.write_bytes(b"\x80\x02not a checkpoint at all")
    proc = subprocess.run([sys.executable, "-m", "finegpt_pipeline", "sample", "--ckpt", str(bad)],
                          capture_output=True, text=True, env=child_env(), timeout=60)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"finegpt sample: error: {bad}: not a loadable checkpoint (")
    assert "weights_only" not in line and "expected a ckpt.pt" in line
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(2), tensor)
    with pytest.raises(ValueError, match="holds a Tensor, not a dict"):
        checkpoint.load(tensor)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.pt", "tensor.pt"]


def _train_cmd(bins, plan, out, *extra):
    return [sys.executable, "-m", "finegpt_pipeline.train", "--bins", str(bins), "--plan",
            str(plan), "--out", str(out), "--no-mlflow", *extra]


def _losses(out) -> dict[int, float]:
    """Train loss per step from the run's summary history (the last record of a step wins)."""
    history = json.loads((out / "summary.json").read_text())["history"]
    return {int(row["iter"]): row["train_loss"] for row in history}


def test_sigkill_then_resume_continues_at_the_checkpoint(sample_bins, tmp_path):
    max_iters = 48
    plan = write_plan(tmp_path / "plan.json", max_iters=max_iters, lr_decay_iters=max_iters,
                      checkpoint_interval=8, eval_interval=24)
    env = child_env(threads=1)
    # run A (uninterrupted) and run B (to be killed) side by side on the two cores
    run_a = subprocess.Popen(_train_cmd(sample_bins, plan, tmp_path / "a"), env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out_b = tmp_path / "b"
    run_b = subprocess.Popen(_train_cmd(sample_bins, plan, out_b), env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not (out_b / "ckpt.pt").exists():
        assert run_b.poll() is None, "run B ended before writing its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.01)
    os.kill(run_b.pid, signal.SIGKILL)
    assert run_b.wait(30) == -signal.SIGKILL
    killed_at = checkpoint.load(out_b / "ckpt.pt")["iter_num"]
    assert 0 < killed_at < max_iters, "the kill must land mid-training"

    resumed = subprocess.run(_train_cmd(sample_bins, plan, out_b, "--resume"), env=env,
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"at iter {killed_at}" in resumed.stdout
    out_a, _ = run_a.communicate(timeout=120)
    assert run_a.returncode == 0, out_a

    ckpt_a, ckpt_b = (checkpoint.load(d / "ckpt.pt") for d in (tmp_path / "a", out_b))
    assert ckpt_a["iter_num"] == ckpt_b["iter_num"] == max_iters
    losses_a, losses_b = _losses(tmp_path / "a"), _losses(out_b)
    assert sorted(losses_b) == list(range(1, max_iters + 1))  # the curve continues, no gap
    after = range(killed_at + 1, max_iters + 1)  # same batches, same RNG: the same losses
    assert [losses_b[i] for i in after] == pytest.approx([losses_a[i] for i in after], abs=1e-5)
    for name, tensor in ckpt_a["model"].items():
        torch.testing.assert_close(ckpt_b["model"][name], tensor, rtol=0, atol=1e-5)
    summary_b = json.loads((out_b / "summary.json").read_text())
    assert summary_b["tokens_seen"] == max_iters * 4 * 32

    # the finished checkpoint generates text through `finegpt sample`
    texts = sample.generate(str(out_b / "ckpt.pt"), prompt="The weather", max_new_tokens=8,
                            top_k=20, num_samples=2)
    assert len(texts) == 2 and all(t.startswith("The weather") and len(t) > 11 for t in texts)
