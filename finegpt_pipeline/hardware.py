"""Hardware the planner sizes for: a catalog of accelerators with their datasheet figures, and
detection of the machine we run on.

Peak FLOP/s are DENSE (no 2:4 sparsity) tensor-core rates for the dtype training uses: bf16
with FP32 accumulation (what PyTorch autocast runs; GeForce cards run it at half their
marketed FP16-accumulate rate), or fp16 on cards without bf16 (T4), fp32 on CPU. Sources:
- RTX 4070 / 4070 Ti / 4080 / 4090: NVIDIA Ada Lovelace architecture whitepaper v1.1,
  appendix A, "Peak BF16 Tensor TFLOPS with FP32 Accumulate", dense column (58.3 / 80.2 /
  97.5 / 165.2), memory bandwidth and total graphics power from the same tables.
- RTX 3090 (71 TFLOPS), RTX A6000 (154.8): NVIDIA Ampere GA102 whitepaper, appendix A.
- L4: datasheet, 242 TFLOPS BF16 with sparsity -> 121 dense, 300 GB/s, 72 W.
- T4: datasheet, 65 TFLOPS FP16 mixed precision (Turing has no bf16), 320 GB/s, 70 W.
- A100 40/80 GB SXM4: datasheet, 312 TFLOPS BF16 dense, 1,555 / 2,039 GB/s, 400 W.
- H100 SXM: datasheet, 1,979 TFLOPS BF16 sparse -> 989.4 dense, 3.35 TB/s, 700 W;
  H100 PCIe: 1,513 sparse -> 756 dense, 2.0 TB/s, 350 W.
- H200 SXM: datasheet, 989.4 TFLOPS BF16 dense, 141 GB, 4.8 TB/s, 700 W.
`expected_mfu` is our prior for nanoGPT-style training at GPT-2-small width (datacenter parts
~40-45 % with torch.compile, consumer parts lower); the calibration probe replaces it.

Measurements (the CPU's matmul rate, an uncatalogued GPU's, calibration probes) are taken once
per machine and kept under `$FINEGPT_HOME/hardware/<machine-id>/`, so the same machine gives
the same plan; `remeasure=True` (`finegpt plan --remeasure`) takes them afresh. The machine id
names the hardware (CPU model and cores, RAM, GPUs, torch build), not the host name, which
changes with every container.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

GB = 10**9
GIB = 2**30  # the project's one binary-GiB constant: memory figures divide by it
TFLOPS = 1e12


@dataclass(frozen=True)
class Hardware:
    key: str
    name: str
    kind: str  # "gpu" | "cpu"
    peak_flops: float  # dense FLOP/s in `dtype`
    memory_bytes: int
    bandwidth_bytes_per_s: float
    board_watts: float
    dtype: str  # the training dtype the peak is quoted for
    bf16: bool
    tf32: bool
    expected_mfu: float
    compute_capability: str = ""
    source: str = ""
    detected: bool = False
    measured_at: str = ""  # when peak_flops was measured on this machine ("": not measured)
    machine_id: str = ""  # the measurement's machine (its file: hardware/<machine_id>/)

    @property
    def device_type(self) -> str:
        """torch's device type for this hardware: "cuda" or "cpu"."""
        return "cuda" if self.kind == "gpu" else "cpu"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _gpu(key, name, tflops, mem_gib, bw_gbs, watts, cc, source, *, mfu, bf16=True):
    return Hardware(key=key, name=name, kind="gpu", peak_flops=tflops * TFLOPS,
                    memory_bytes=int(mem_gib * GIB), bandwidth_bytes_per_s=bw_gbs * GB,
                    board_watts=watts, dtype="bfloat16" if bf16 else "float16", bf16=bf16,
                    tf32=bf16, expected_mfu=mfu, compute_capability=cc, source=source)


_ADA = "Ada Lovelace whitepaper v1.1 app. A (BF16, FP32 accumulate, dense)"
_GA102 = "Ampere GA102 whitepaper app. A (BF16, FP32 accumulate, dense)"

# Memory as torch reports it (binary GiB); the H200's 141 GB is decimal.
CATALOG: dict[str, Hardware] = {h.key: h for h in [
    _gpu("rtx3090", "NVIDIA GeForce RTX 3090", 71.0, 24, 936, 350, "8.6", _GA102, mfu=0.35),
    _gpu("rtx4070", "NVIDIA GeForce RTX 4070", 58.3, 12, 504, 200, "8.9", _ADA, mfu=0.35),
    _gpu("rtx4070ti", "NVIDIA GeForce RTX 4070 Ti", 80.2, 12, 504, 285, "8.9", _ADA, mfu=0.35),
    _gpu("rtx4080", "NVIDIA GeForce RTX 4080", 97.5, 16, 717, 320, "8.9", _ADA, mfu=0.35),
    _gpu("rtx4090", "NVIDIA GeForce RTX 4090", 165.2, 24, 1008, 450, "8.9", _ADA, mfu=0.35),
    _gpu("a6000", "NVIDIA RTX A6000", 154.8, 48, 768, 300, "8.6", _GA102, mfu=0.35),
    _gpu("l4", "NVIDIA L4", 121.0, 22.5, 300, 72, "8.9", "L4 datasheet (242 sparse / 2)", mfu=0.35),
    _gpu("t4", "Tesla T4", 65.0, 15, 320, 70, "7.5", "T4 datasheet (FP16 mixed precision)",
         mfu=0.30, bf16=False),
    _gpu("a100-40gb", "NVIDIA A100-SXM4-40GB", 312.0, 40, 1555, 400, "8.0", "A100 datasheet (SXM4)", mfu=0.45),
    _gpu("a100-80gb", "NVIDIA A100-SXM4-80GB", 312.0, 80, 2039, 400, "8.0", "A100 datasheet (SXM4)", mfu=0.45),
    _gpu("h100-pcie", "NVIDIA H100 PCIe", 756.0, 80, 2000, 350, "9.0", "H100 datasheet (1,513 sparse / 2)", mfu=0.40),
    _gpu("h100-sxm", "NVIDIA H100 80GB HBM3", 989.4, 80, 3350, 700, "9.0", "H100 datasheet (1,979 sparse / 2)", mfu=0.40),
    _gpu("h200", "NVIDIA H200", 989.4, 141e9 / GIB, 4800, 700, "9.0", "H200 datasheet (1,979 sparse / 2)", mfu=0.40),
    # A small CPU box: fp32 "peak" = a model-shaped sgemm on 2 AVX2 cores (~90 GFLOP/s idle);
    # training sustains ~55 % of it at width 128 (~1,100 tokens/s for 4L x 128d, block 128).
    Hardware(key="cpu", name="CPU (2-core reference box)", kind="cpu", peak_flops=90e9,
             memory_bytes=16 * GIB, bandwidth_bytes_per_s=20 * GB, board_watts=65.0, dtype="float32",
             bf16=False, tf32=False, expected_mfu=0.55,
             source="reference: 2-core AVX2 box, ~1,100 tokens/s for 4L x 128d (docs/benchmarks.md)"),
]}

# torch device-name fragments, most specific first -> catalog key ("A100" is split by memory).
_NAME_PATTERNS = [("4070 ti", "rtx4070ti"), ("4070", "rtx4070"), ("4080", "rtx4080"),
                  ("4090", "rtx4090"), ("3090", "rtx3090"), ("a6000", "a6000"),
                  ("h200", "h200"), ("h100 pcie", "h100-pcie"), ("h100", "h100-sxm"), ("t4", "t4")]


def get_hardware(key: str, remeasure: bool = False) -> Hardware:
    """A catalog entry by key (case-insensitive); `detect` probes this machine."""
    norm = key.strip().lower().replace("_", "-").replace(" ", "")
    if norm in ("detect", "auto"):
        return detect(remeasure)
    if norm in CATALOG:
        return CATALOG[norm]
    raise ValueError(f"unknown GPU {key!r}; known: {', '.join(sorted(CATALOG))} (or 'detect')")


def match_device_name(name: str, memory_bytes: int) -> str | None:
    """Catalog key for a CUDA device name such as 'NVIDIA A100-SXM4-80GB', or None."""
    low = name.lower().replace("-", " ")
    if "a100" in low:
        return "a100-80gb" if memory_bytes > 48 * GIB else "a100-40gb"
    if low.split()[-1:] == ["l4"]:
        return "l4"  # only as the whole model name, not inside "L40S"
    for pattern, key in _NAME_PATTERNS:
        if pattern in low:
            return key
    return None


def native_bf16() -> bool:
    """bf16 in hardware (Ampere and later). torch's default check also counts emulation, which
    says yes on a V100 or T4, where bf16 runs far slower than fp16."""
    import torch

    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch without the argument (< 2.3) checks hardware support only
        return torch.cuda.is_bf16_supported()


def detect(remeasure: bool = False) -> Hardware:
    """This machine: CUDA device 0 if torch sees one, else the CPU (both partly measured, the
    measurement cached per machine unless `remeasure`)."""
    import torch

    if not torch.cuda.is_available():
        return detect_cpu(remeasure)
    props = torch.cuda.get_device_properties(0)
    cc = f"{props.major}.{props.minor}"
    bf16 = native_bf16()
    key = match_device_name(props.name, props.total_memory)
    if key is not None:
        return dataclasses.replace(CATALOG[key], name=props.name, memory_bytes=props.total_memory,
                                   compute_capability=cc, detected=True)
    # Not in the catalog: a measured matmul rate stands in for the peak (it is below it).
    dtype = "bfloat16" if bf16 else "float16"
    m = cached_measurement(f"matmul-cuda-{dtype}-4096", lambda: {"flops": measure_matmul_flops("cuda", dtype)},
                           remeasure, required=("flops",))
    return Hardware(key="detected-gpu", name=props.name, kind="gpu", peak_flops=m["flops"],
                    memory_bytes=props.total_memory, bandwidth_bytes_per_s=500 * GB,
                    board_watts=300.0, dtype=dtype, bf16=bf16, tf32=props.major >= 8,
                    expected_mfu=0.5, compute_capability=cc, detected=True,
                    source=f"not in catalog: peak = measured {dtype} matmul; bandwidth, power assumed",
                    measured_at=m["measured_at"], machine_id=m["machine_id"])


def detect_cpu(remeasure: bool = False) -> Hardware:
    """The CPU, its fp32 rate measured on a model-shaped matmul (128-wide activations times the
    50,304-wide output layer, a small GPT's dominant cost). Measured once per machine and kept
    (see `cached_measurement`), so plans repeat; a box that was loaded then plans smaller until
    `remeasure`."""
    m = cached_measurement("matmul-cpu-float32-512x128x50304", lambda: {"flops": measure_matmul_flops(
        "cpu", "float32", shape=(512, 128, 50304), seconds=0.3)}, remeasure, required=("flops",))
    rate = m["flops"]
    return dataclasses.replace(
        CATALOG["cpu"], name=f"CPU ({os.cpu_count() or 1} cores, detected)", peak_flops=rate,
        memory_bytes=_system_memory(), detected=True,
        source=f"measured: sgemm 512x128x50304 at {rate / 1e9:.0f} GFLOP/s",
        measured_at=m["measured_at"], machine_id=m["machine_id"])


def machine_identity() -> dict[str, Any]:
    """What this machine's measurements depend on: CPU model, cores (all and usable), torch's
    threads, RAM, the visible GPUs and the torch build. No host name (new in every container)."""
    import torch

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append(f"{props.name} ({props.total_memory} B)")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"arch": platform.machine(), "cpu_model": _cpu_model(), "cpu_count": os.cpu_count() or 1,
            "usable_cpus": usable or 1, "torch_threads": torch.get_num_threads(),
            "memory_bytes": _system_memory(), "gpus": gpus, "torch": torch.__version__}


def machine_id(identity: dict[str, Any]) -> str:
    """A readable, stable name for `identity`: the main device, the core count and a hash."""
    lead = identity["gpus"][0].split(" (")[0] if identity["gpus"] else "cpu"
    slug = re.sub(r"[^a-z0-9]+", "-", lead.lower()).strip("-")
    from finegpt_pipeline.layout import json_digest

    digest = json_digest(identity, 10)
    return f"{slug}-{identity['cpu_count']}c-{digest}"


def cached_measurement(name: str, measure: Callable[[], dict[str, Any]], remeasure: bool = False,
                       required: tuple[str, ...] = (), home: Path | None = None) -> dict[str, Any]:
    """`measure()`'s result for this machine, taken once and kept in
    `$FINEGPT_HOME/hardware/<machine-id>/<name>.json` (atomically); `remeasure` takes it afresh.
    The result gains `measured_at` (UTC) and `machine_id`; a kept one must hold `required`."""
    from finegpt_pipeline.atomic import write_json
    from finegpt_pipeline.paths import home as artifact_home

    identity = machine_identity()
    mid = machine_id(identity)
    path = artifact_home(home).hardware / mid / f"{name}.json"
    if path.exists() and not remeasure:
        return _read_measurement(path, required)
    result = dict(measure())
    if path.exists() and not remeasure:  # another process measured meanwhile: one figure for all
        return _read_measurement(path, required)
    result.update(measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"), machine_id=mid)
    write_json(path, {"name": name, "identity": identity, "measured_on": socket.gethostname(),
                      "result": result})
    return result


def _read_measurement(path: Path, required: tuple[str, ...]) -> dict[str, Any]:
    fix = "delete it or plan with --remeasure"
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable hardware measurement ({exc}); {fix}") from None
    result = record.get("result") if isinstance(record, dict) else None
    if not isinstance(result, dict) or not isinstance(result.get("measured_at"), str):
        raise ValueError(f"{path}: not a hardware measurement (no 'result' with 'measured_at'); {fix}")
    missing = [k for k in required if k not in result]
    if missing:
        raise ValueError(f"{path}: hardware measurement lacks {missing}; {fix}")
    return result


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure_matmul_flops(device: str = "cpu", dtype: str = "float32",
                         shape: tuple[int, int, int] = (4096, 4096, 4096), seconds: float = 0.3) -> float:
    """Achieved FLOP/s of an (m x k) @ (k x n) matmul: the fastest of the repetitions that fit
    in ~`seconds` (at least 3), a floor for the peak that a moment of other work on the machine
    lowers less than an average would (the figure is kept for the machine's later plans)."""
    import torch

    m, k, n = shape
    a = torch.randn(m, k, device=device, dtype=getattr(torch, dtype))
    b = torch.randn(k, n, device=device, dtype=getattr(torch, dtype))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a @ b
    sync()
    best, start, reps = float("inf"), time.perf_counter(), 0
    while reps < 3 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
        reps += 1
    return 2.0 * m * k * n / best


def _system_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return CATALOG["cpu"].memory_bytes
