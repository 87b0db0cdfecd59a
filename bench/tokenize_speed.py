"""Benchmark `finegpt tokenize` against the usual per-document multiprocessing.Pool pattern.

Same generated shard, same run, alternating rounds (best of each kept, so a noisy neighbour
hurts both alike):
  * ceiling   tiktoken `encode_ordinary` single-thread rate on the shard's first documents x cores
  * pool      build-nanogpt/llm.c FineWeb style: Pool(cores).imap(tokenize, docs, chunksize=16),
              tokenize = [EOT] + encode_ordinary(doc) -> np.uint16, copied into one buffer
  * finegpt   `python -m finegpt_pipeline.data tokenize SHARD --out DIR` as a subprocess
              (interpreter start, sha256 of the shard and fsync included)
Then peak RSS of `finegpt tokenize` on a >= 1 GB shard: ru_maxrss of the child (its largest
process) and the peak summed RSS of its whole process tree, sampled every 50 ms.

    python bench/tokenize_speed.py [--size 300MB] [--rss-size 1.1GB] [--rounds 2] [--workdir DIR]

Generated files live in a temp dir (or --workdir) and are deleted at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the stdlib `tokenize` (which `inspect` imports): keep its folder off
# the import path so the stdlib module is the one found.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import subprocess
import tempfile
import threading
import time

import numpy as np
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from finegpt_pipeline.data import synthetic, tokenizer
from finegpt_pipeline.config import EOT_TOKEN  # noqa: E402
from finegpt_pipeline.layout import META_NAME  # noqa: E402

SAMPLE = REPO.parent / "shared" / "data" / "fineweb-cc-main-2013-20-head300.parquet"

_enc = None


def _pool_tokenize(doc: str) -> np.ndarray:
    """The per-document worker of build-nanogpt's fineweb.py (EOT first, uint16)."""
    global _enc
    if _enc is None:
        _enc = tokenizer.get_encoding()
    tokens = [EOT_TOKEN]
    tokens.extend(_enc.encode_ordinary(doc))
    arr = np.array(tokens)
    assert (0 <= arr).all() and (arr < 2**16).all()
    return arr.astype(np.uint16)


def _texts(path: Path):
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024, columns=["text"]):
        yield from batch.column(0).to_pylist()


def _cpu_seconds(who) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def run_pool(path: Path, cores: int, total_tokens: int) -> tuple[float, float, int]:
    """(wall s, CPU s of this process and its workers, tokens)."""
    cpu0 = _cpu_seconds(resource.RUSAGE_SELF) + _cpu_seconds(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = np.empty(total_tokens, dtype=np.uint16)
    n = 0
    pool = mp.get_context("fork").Pool(cores)
    for arr in pool.imap(_pool_tokenize, _texts(path), chunksize=16):
        out[n:n + len(arr)] = arr
        n += len(arr)
    pool.close()
    pool.join()  # reaped workers' CPU time lands in RUSAGE_CHILDREN
    dt = time.perf_counter() - t0
    cpu = _cpu_seconds(resource.RUSAGE_SELF) + _cpu_seconds(resource.RUSAGE_CHILDREN) - cpu0
    return dt, cpu, n


def run_finegpt(path: Path, out: Path) -> tuple[float, float, int]:
    """(wall s, CPU s of the subprocess and its workers, tokens)."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "finegpt_pipeline.data", "tokenize", str(path), "--out", str(out)]
    cpu0 = _cpu_seconds(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    dt = time.perf_counter() - t0
    cpu = _cpu_seconds(resource.RUSAGE_CHILDREN) - cpu0
    meta = json.loads((out / META_NAME).read_text())
    return dt, cpu, meta["train_tokens"] + meta["val_tokens"]


def single_thread_rate(path: Path, docs: int = 20000) -> tuple[float, float]:
    """tiktoken encode_ordinary tokens per wall second and per CPU second, one thread."""
    enc = tokenizer.get_encoding()
    texts = []
    for t in _texts(path):
        texts.append(t)
        if len(texts) >= docs:
            break
    t0, c0 = time.perf_counter(), time.process_time()
    n = sum(len(enc.encode_ordinary(t)) for t in texts)
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def _tree_pids(pid: int) -> list[int]:
    """pid and its live descendants, from /proc."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/task/{p}/children") as fh:
                todo += [int(c) for c in fh.read().split()]
            pids.append(p)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return pids


def _tree_rss(pid: int) -> int:
    """Summed RSS (bytes) of pid and its descendants, from /proc. Pages that forked processes
    share count once per process: `_tree_pss` counts them once."""
    total = 0
    for p in _tree_pids(pid):
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def _tree_pss(pid: int) -> int:
    """Summed PSS (bytes) of pid and its descendants: each shared page split among the
    processes sharing it, so the tree's real memory (/proc/<pid>/smaps_rollup)."""
    total = 0
    for p in _tree_pids(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                total += next(int(line.split()[1]) for line in fh if line.startswith("Pss:")) * 1024
        except (FileNotFoundError, ProcessLookupError, PermissionError, StopIteration):
            pass
    return total


_RUSAGE_WRAPPER = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)
"""


def peak_rss(path: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "finegpt_pipeline.data", "tokenize", str(path), "--out", str(out)]
    t0 = time.perf_counter()
    # A fresh parent, so RUSAGE_CHILDREN's ru_maxrss is this run's (not an earlier child's).
    proc = subprocess.Popen([sys.executable, "-c", _RUSAGE_WRAPPER, *cmd], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    peak = [0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    maxrss_kib = int(proc.communicate()[0].split()[-1])
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"finegpt tokenize failed with exit code {proc.returncode}")
    meta = json.loads((out / META_NAME).read_text())
    return {"shard_bytes": path.stat().st_size, "seconds": time.perf_counter() - t0,
            "tokens": meta["train_tokens"] + meta["val_tokens"],
            "ru_maxrss_mib": maxrss_kib / 1024,
            "tree_peak_rss_mib": peak[0] / 2**20}


def machine() -> str:
    model = "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except FileNotFoundError:
        pass
    return f"{model}, {tokenizer.default_threads()} cores, {platform.platform()}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="300MB", help="shard size for the throughput comparison")
    ap.add_argument("--rss-size", default="1.1GB", help="shard size for the peak-RSS run (0 skips)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--sample", default=str(SAMPLE), help="real FineWeb parquet to resample")
    args = ap.parse_args()
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(REPO.parent / "shared" / "tiktoken-cache"))
    cores = tokenizer.default_threads()
    work = Path(tempfile.mkdtemp(prefix="finegpt-bench-", dir=args.workdir))
    try:
        shard = work / "shard.parquet"
        if not synthetic.parse_size(args.size):
            args.rounds = 0
        gen = synthetic.generate_shard(args.sample, shard, synthetic.parse_size(args.size) or 1)
        print(f"machine: {machine()}\nshard: {gen}", flush=True)
        r1, r1_cpu = single_thread_rate(shard)
        n = 0
        ours, pool, ours_cpu, pool_cpu = [], [], [], []
        for i in range(args.rounds):
            dt, cpu, n = run_finegpt(shard, work / "bins")
            ours.append(n / dt)
            ours_cpu.append(n / cpu)
            print(f"round {i}: finegpt {n / dt / 1e6:.3f} Mtok/s ({dt:.1f} s wall, {cpu:.1f} s CPU)",
                  flush=True)
            dt, cpu, n_pool = run_pool(shard, cores, n)
            assert n_pool == n, (n_pool, n)
            pool.append(n / dt)
            pool_cpu.append(n / cpu)
            print(f"round {i}: pool    {n / dt / 1e6:.3f} Mtok/s ({dt:.1f} s wall, {cpu:.1f} s CPU)",
                  flush=True)
        if args.rounds:
            result = {
                "cores": cores, "tokens": n, "load_average_1m": os.getloadavg()[0],
                "single_thread_mtok_s": r1 / 1e6, "ceiling_mtok_s": r1 * cores / 1e6,
                "finegpt_mtok_s": max(ours) / 1e6, "pool_mtok_s": max(pool) / 1e6,
                "speedup_vs_pool": max(ours) / max(pool), "share_of_ceiling": max(ours) / (r1 * cores),
                # Per CPU-second: what each approach costs, robust to other load on the machine.
                "single_thread_mtok_per_cpu_s": r1_cpu / 1e6,
                "finegpt_mtok_per_cpu_s": max(ours_cpu) / 1e6, "pool_mtok_per_cpu_s": max(pool_cpu) / 1e6,
                "cpu_efficiency_vs_pool": max(ours_cpu) / max(pool_cpu),
            }
            print(json.dumps(result, indent=2), flush=True)
        shutil.rmtree(work / "bins", ignore_errors=True)
        if synthetic.parse_size(args.rss_size):
            shard.unlink()
            big = work / "big.parquet"
            gen = synthetic.generate_shard(args.sample, big, synthetic.parse_size(args.rss_size), seed=1)
            print(f"big shard: {gen}", flush=True)
            print(json.dumps({"peak_rss": peak_rss(big, work / "bins")}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
