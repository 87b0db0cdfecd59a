"""Where and how training runs: device, precision, compilation, distributed setup.

Every GPU path has a CPU fallback, so the same entry point runs on a laptop, one GPU, or under
`torchrun --nproc-per-node N` (NCCL on GPUs, gloo on CPU).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass

import torch

from finegpt_pipeline.config import TrainConfig
from finegpt_pipeline.hardware import native_bf16  # a hardware fact, asked when picking a dtype

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Runtime:
    device: torch.device
    dtype: torch.dtype  # autocast dtype; float32 means no autocast
    compile: bool
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def device_type(self) -> str:
        return self.device.type

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    @property
    def needs_grad_scaler(self) -> bool:
        """fp16 gradients underflow without loss scaling (on any device); bf16 has fp32's
        exponent range."""
        return self.dtype == torch.float16

    def grad_scaler(self):
        return torch.amp.GradScaler(self.device_type, enabled=self.needs_grad_scaler)


def _distributed_env() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) as torchrun sets them; (0, 0, 1) when run plainly."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 0, 1
    return int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world


def is_main_process() -> bool:
    """Rank 0, or the only process; known before `setup` (from torchrun's environment)."""
    return _distributed_env()[0] == 0


def resolve_device(spec: str, local_rank: int, distributed: bool) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r} requested but CUDA is not available")
        # under torchrun each process owns the GPU matching its local rank
        return torch.device(f"cuda:{local_rank}" if distributed or spec == "cuda" else spec)
    if spec != "cpu":
        raise ValueError(f"device must be auto|cpu|cuda|cuda:N (got {spec!r})")
    return torch.device("cpu")


def resolve_dtype(spec: str, device: torch.device) -> torch.dtype:
    if device.type != "cuda":
        if spec in ("auto", "float32"):
            return torch.float32
        # CPU autocast supports bf16 and fp16 (with the CPU GradScaler): an explicit request is
        # honoured, so the GPU precision paths also run, and are tested, on a CPU
        return DTYPES[spec]
    if spec in ("auto", "bfloat16") and not native_bf16():
        # plans name bf16 for the GPU they were sized on; on an older GPU (V100, T4) fp16 with
        # loss scaling is the same memory and the fast path there
        if spec == "bfloat16":
            warnings.warn(f"{torch.cuda.get_device_name(device)} has no bf16: training in float16 "
                          "with loss scaling instead", stacklevel=2)
        return torch.float16
    return torch.bfloat16 if spec == "auto" else DTYPES[spec]


def setup(cfg: TrainConfig) -> Runtime:
    """Initialise the process group (under torchrun), pick device/dtype, set matmul precision."""
    rank, local_rank, world = _distributed_env()
    device = resolve_device(cfg.device, local_rank, world > 1)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        # TF32 for the fp32 matmuls that remain under autocast (and for dtype=float32 runs)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Runtime(device=device, dtype=resolve_dtype(cfg.dtype, device),
                   compile=cfg.compiles_on(device.type),
                   rank=rank, local_rank=local_rank, world_size=world)


def teardown(rt: Runtime) -> None:
    if rt.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def all_reduce_mean(value: torch.Tensor, rt: Runtime) -> torch.Tensor:
    if rt.distributed:
        import torch.distributed as dist

        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= rt.world_size
    return value


def wrap_model(model: torch.nn.Module, rt: Runtime) -> torch.nn.Module:
    """Compile, then wrap in DDP: the returned module trains, `model` itself is what we save."""
    if rt.compile:
        model = torch.compile(model)
    if rt.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # gradients as views into DDP's all-reduce buckets; with the trainer zeroing (not
        # freeing) them under DDP, no second gradient copy exists, as the planner assumes
        model = DDP(model, device_ids=[rt.local_rank] if rt.device_type == "cuda" else None,
                    gradient_as_bucket_view=True)
    return model


def peak_memory_bytes(rt: Runtime) -> int:
    return int(torch.cuda.max_memory_allocated(rt.device)) if rt.device_type == "cuda" else 0
