"""Device and precision choices, including the GPU branches, checked on a CPU-only machine by
standing in for what `torch.cuda` reports."""

from __future__ import annotations

import pytest
import torch

from finegpt_pipeline import runtime

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
    with pytest.raises(ValueError, match="float16 needs a CUDA device"):
        runtime.resolve_dtype("float16", cpu)
    assert not runtime.Runtime(device=cpu, dtype=torch.float32, compile=False).needs_grad_scaler


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
