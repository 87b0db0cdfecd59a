"""Device and precision choices, including the GPU branches, checked on a CPU-only machine by
standing in for what `torch.cuda` reports."""

from __future__ import annotations

import json

import pytest
import torch

from tests._bins_fixture import sample_bins, write_plan  # noqa: F401
from finegpt_pipeline import runtime
from finegpt_pipeline.train import checkpoint, plan_file, trainer as train

CUDA = torch.device("cuda", 0)


@pytest.fixture
def gpu_without_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100-SXM2-16GB")


def test_bf16_on_gpus_that_have_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert runtime.resolve_dtype("auto", CUDA) == torch.bfloat16
    assert runtime.resolve_dtype("bfloat16", CUDA) == torch.bfloat16
    assert runtime.resolve_dtype("float32", CUDA) == torch.float32
    rt = runtime.Runtime(device=CUDA, dtype=torch.bfloat16, compile=True)
    assert not rt.needs_grad_scaler


def test_fp16_with_loss_scaling_where_bf16_is_missing(gpu_without_bf16):
    assert runtime.resolve_dtype("auto", CUDA) == torch.float16
    # a plan sized on a bf16 GPU still runs on an older one, in fp16, and says so
    with pytest.warns(UserWarning, match="V100.*no bf16.*float16"):
        assert runtime.resolve_dtype("bfloat16", CUDA) == torch.float16
    assert runtime.resolve_dtype("float16", CUDA) == torch.float16
    assert runtime.Runtime(device=CUDA, dtype=torch.float16, compile=True).needs_grad_scaler


def test_cpu_trains_in_fp32_unless_told_otherwise():
    cpu = torch.device("cpu")
    assert runtime.resolve_dtype("auto", cpu) == torch.float32
    assert runtime.resolve_dtype("bfloat16", cpu) == torch.bfloat16
    assert runtime.resolve_dtype("float16", cpu) == torch.float16
    assert not runtime.Runtime(device=cpu, dtype=torch.float32, compile=False).needs_grad_scaler
    assert runtime.Runtime(device=cpu, dtype=torch.float16, compile=False).needs_grad_scaler


def test_cuda_requested_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.resolve_device("auto", 0, False) == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        runtime.resolve_device("cuda", 0, False)
    with pytest.raises(ValueError, match="device must be"):
        runtime.resolve_device("tpu", 0, False)


def test_each_torchrun_process_owns_its_local_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.resolve_device("auto", 3, True) == torch.device("cuda", 3)
    assert runtime.resolve_device("cuda:1", 0, False) == torch.device("cuda", 1)


# The GPU code paths that a CPU can run, run here: bf16 autocast, fp16 with the GradScaler,
# torch.compile (inductor's CPU backend) and its checkpoint.

def _plan(tmp_path, **fields):
    base = dict(max_iters=2, lr_decay_iters=2, warmup_iters=1, eval_interval=2, eval_iters=1,
                checkpoint_interval=1, log_interval=1, n_layer=1, n_head=1, n_embd=16,
                block_size=16, micro_batch=2, device="cpu")
    return plan_file.load_plan(write_plan(tmp_path / "plan.json", **{**base, **fields}))


def test_bf16_autocast_trains_on_cpu(sample_bins, tmp_path):
    summary = train.train(_plan(tmp_path, dtype="bfloat16"), sample_bins, tmp_path / "run",
                          mlflow=False)
    assert summary["dtype"] == "bfloat16" and summary["steps"] == 2
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in
               json.loads((tmp_path / "run" / "summary.json").read_text())["history"])


def test_fp16_trains_with_the_grad_scaler_and_resumes_its_state(sample_bins, tmp_path):
    out = tmp_path / "run"
    train.train(_plan(tmp_path, dtype="float16"), sample_bins, out, mlflow=False)
    scaler = checkpoint.load(out / "ckpt.pt")["resume"]["scaler"]
    assert scaler["scale"] == 65536.0 and scaler["_growth_tracker"] == 2  # 2 finite steps
    longer = _plan(tmp_path, dtype="float16", max_iters=3, lr_decay_iters=3)
    summary = train.train(longer, sample_bins, out, resume=True, mlflow=False)
    assert summary["dtype"] == "float16" and summary["resumed_from"] == 2
    # the resumed run continued the saved scaler, not a fresh one
    assert checkpoint.load(out / "ckpt.pt")["resume"]["scaler"]["_growth_tracker"] == 3


def test_compiled_model_trains_and_saves_a_checkpoint_with_clean_names(sample_bins, tmp_path):
    summary = train.train(_plan(tmp_path, compile="true", checkpoint_interval=2), sample_bins,
                          tmp_path / "run", mlflow=False)
    assert summary["compile"] is True
    ckpt = checkpoint.load(tmp_path / "run" / "ckpt.pt")
    assert "transformer.wte.weight" in ckpt["model"]
    assert not [n for n in ckpt["model"] if "_orig_mod" in n or n.startswith("module.")]
    # reloaded uncompiled, it gives the compiled model's validation loss
    model = checkpoint.model_from_checkpoint(ckpt).eval()
    batches = train.BatchSource(train.Bins(sample_bins), 16, 2, 1337, torch.device("cpu"))
    with torch.no_grad():
        _, loss = model(*batches.val_batch(0))
    assert float(loss) == pytest.approx(summary["final_val_loss"], abs=1e-4)
