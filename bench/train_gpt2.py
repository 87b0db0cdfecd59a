"""GPT-2 124M training throughput: our trainer, and nanoGPT's train.py beside it, same bins.

    python bench/train_gpt2.py [--nanogpt PATH/TO/nanoGPT] [--bins DIR] [--steps 60]
    python bench/train_gpt2.py --smoke --nanogpt PATH --steps 12 --warmup 2 --micro-batch 4 --grad-accum 1

Without --bins it writes a synthetic FineWeb-schema shard and tokenizes it (tiktoken's GPT-2
BPE; if pyarrow/tiktoken are missing it writes Zipf-distributed GPT-2 ids instead: throughput
does not depend on the text). Both trainers run GPT-2 124M (12L x 768d x 12 heads, block 1024,
vocab 50304, no bias, no dropout), bf16 autocast, torch.compile, fused AdamW, the same micro-batch
and accumulation. Figures are the median over steps after `--warmup` (compilation excluded);
MFU uses the same FLOPs-per-token formula and peak for both. nanoGPT is run unmodified from its
own checkout (never copied here); its peak memory comes from `torch.cuda.max_memory_allocated`
read after its script returns in the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from finegpt_pipeline.config import TrainConfig  # noqa: E402
from finegpt_pipeline.plan.costs import flops_per_token  # noqa: E402
from finegpt_pipeline.hardware import GIB, detect  # noqa: E402
from finegpt_pipeline.layout import write_meta  # noqa: E402

GPT2 = dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304, bias=False,
            dropout=0.0)
GPU_RUN = dict(device="cuda", dtype="bfloat16", compile=True)
# --smoke: the whole harness (bins, both trainers, log parsing) on a CPU; its figures mean nothing
SMOKE = dict(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab_size=50304, bias=False, dropout=0.0)
SMOKE_RUN = dict(device="cpu", dtype="float32", compile=False)
EOT = 50256


def synthetic_bins(out: Path, tokens: int, seed: int = 0) -> str:
    """train.bin/val.bin of about `tokens` GPT-2 ids; returns how they were made."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(REPO.parent / "shared" / "tiktoken-cache"))
        from finegpt_pipeline.data.tokenizer import encode_batch

        words = ("the of and to in a is that for it as was with be by on not he this are or his "
                 "from at which but have an they you were her she there one all we their can has "
                 "data model training river city music science history water energy people").split()
        docs = []
        while sum(len(d) for d in docs) < tokens * 4.5:  # ~4.5 characters per GPT-2 token
            n = int(rng.integers(100, 2000))
            docs.append(" ".join(rng.choice(words, size=n, p=None)).capitalize() + ".")
        shard = pa.table({  # the FineWeb schema, as the pipeline's raw shard has it
            "text": docs, "id": [f"<urn:uuid:{i}>" for i in range(len(docs))],
            "dump": ["CC-MAIN-2013-20"] * len(docs), "url": [None] * len(docs),
            "date": [None] * len(docs), "file_path": [None] * len(docs),
            "language": ["en"] * len(docs), "language_score": [0.9] * len(docs),
            "token_count": [0] * len(docs)})
        pq.write_table(shard, out / "synthetic_fineweb.parquet")
        ids = [t for doc in encode_batch(docs) for t in (EOT, *doc)]
        arr, how = np.array(ids, dtype=np.uint16), "synthetic FineWeb-schema shard, tiktoken GPT-2"
    except ImportError:
        ranks = np.arange(1, EOT + 1)
        p = 1.0 / ranks
        arr = rng.choice(EOT, size=tokens, p=p / p.sum()).astype(np.uint16)
        arr[:: 800] = EOT
        how = "Zipf-distributed GPT-2 ids (pyarrow/tiktoken not installed)"
    split = int(len(arr) * 0.95)
    arr[:split].tofile(out / "train.bin")
    arr[split:].tofile(out / "val.bin")
    write_meta(out)
    return how


def run_ours(bins: Path, work: Path, args, peak: float) -> dict:
    plan = {**args.model, "micro_batch": args.micro_batch, "grad_accum": args.grad_accum,
            "max_iters": args.steps, "lr_decay_iters": args.steps, "warmup_iters": 10,
            "learning_rate": 6e-4, "min_lr": 6e-5, "eval_interval": args.steps, "eval_iters": 1,
            "log_interval": 1, "checkpoint_interval": args.steps, "device": args.run["device"],
            "dtype": args.run["dtype"], "compile": str(args.run["compile"]).lower(), "peak_flops": peak}
    (work / "plan.json").write_text(json.dumps(plan))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(REPO)
    cmd = [sys.executable, "-m", "finegpt_pipeline.train", "--bins", str(bins), "--plan",
           str(work / "plan.json"), "--out", str(work / "ours"), "--no-mlflow"]
    subprocess.run(cmd, check=True, env=env)
    summary = json.loads((work / "ours" / "summary.json").read_text())
    rates = [r["tokens_per_s"] for r in summary["history"] if r["iter"] > args.warmup]
    return {"tokens_per_s": statistics.median(rates), "peak_memory_gib": summary["peak_memory_bytes"] / GIB}


def run_nanogpt(bins: Path, work: Path, args) -> dict:
    nano = Path(args.nanogpt).resolve()
    if not (nano / "train.py").exists():
        raise SystemExit(f"{nano}: no nanoGPT train.py there")
    data = nano / "data" / "finegpt_bench"  # nanoGPT reads data/<dataset>/{train,val}.bin
    data.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        (data / f"{split}.bin").unlink(missing_ok=True)
        (data / f"{split}.bin").symlink_to((bins / f"{split}.bin").resolve())
    flags = ["--dataset=finegpt_bench", f"--out_dir={work / 'nanogpt'}", f"--batch_size={args.micro_batch}",
             f"--gradient_accumulation_steps={args.grad_accum}", f"--device={args.run['device']}",
             *(f"--{k}={v}" for k, v in args.model.items() if k != "vocab_size"),
             f"--max_iters={args.steps}", f"--lr_decay_iters={args.steps}", "--warmup_iters=10",
             "--eval_interval=100000", "--eval_iters=1", "--log_interval=1", f"--dtype={args.run['dtype']}",
             f"--compile={args.run['compile']}", "--always_save_checkpoint=False", "--wandb_log=False"]
    runner = ("import runpy, sys, torch; sys.argv = ['train.py'] + sys.argv[1:]; "
              "runpy.run_path('train.py', run_name='__main__'); "
              "print('PEAK_MEMORY_BYTES', torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0)")
    proc = subprocess.run([sys.executable, "-c", runner, *flags], cwd=nano, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"nanoGPT failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    times = [float(ms) for it, ms in re.findall(r"iter (\d+): loss [\d.]+, time ([\d.]+)ms", proc.stdout)
             if int(it) > args.warmup]
    peak = int(re.search(r"PEAK_MEMORY_BYTES (\d+)", proc.stdout).group(1))
    tokens_per_iter = args.micro_batch * args.grad_accum * args.model["block_size"]
    return {"tokens_per_s": tokens_per_iter / (statistics.median(times) / 1000),
            "peak_memory_gib": peak / GIB}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bins", help="existing bins dir (default: generate synthetic ones)")
    ap.add_argument("--nanogpt", help="path to a nanoGPT checkout to run beside ours")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10, help="steps left out of the median")
    ap.add_argument("--micro-batch", type=int, default=12)
    ap.add_argument("--grad-accum", type=int, default=4)
    ap.add_argument("--peak-flops", type=float, default=0.0,
                    help="default: the hardware catalog's dense bf16 peak for this GPU")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--smoke", action="store_true",
                    help="check the harness on a CPU: tiny model, fp32, no compile (figures meaningless)")
    args = ap.parse_args()

    import torch

    args.model, args.run = (SMOKE, SMOKE_RUN) if args.smoke else (GPT2, GPU_RUN)
    if args.smoke:
        device = "cpu (smoke run)"
    elif torch.cuda.is_available():
        device = torch.cuda.get_device_name(0)
    else:
        print("no CUDA device: this benchmark needs a GPU (--smoke checks the harness on CPU)",
              file=sys.stderr)
        return 1
    peak = args.peak_flops or detect().peak_flops  # the planner's catalog (dense bf16 on GPUs)
    work = Path(tempfile.mkdtemp(prefix="finegpt-bench-"))
    if args.bins:
        bins, how = Path(args.bins), f"given bins {args.bins}"
    else:
        bins = work / "bins"
        floor = 50_000 if args.smoke else 2_000_000
        how = synthetic_bins(bins, tokens=max(floor, args.micro_batch * (args.model["block_size"] + 1) * 64))
    m = args.model
    fpt = flops_per_token(TrainConfig(**m))
    results = {"device": device, "torch": torch.__version__, "bins": how, "peak_flops": peak,
               "micro_batch": args.micro_batch, "grad_accum": args.grad_accum, "steps": args.steps}
    runs = {"finegpt": run_ours(bins, work, args, peak)}
    if args.nanogpt:
        runs["nanogpt"] = run_nanogpt(bins, work, args)
    for name, r in runs.items():
        r["mfu"] = fpt * r["tokens_per_s"] / peak if peak else None
        results[name] = r
    if "nanogpt" in runs:
        results["tokens_per_s_ratio"] = runs["finegpt"]["tokens_per_s"] / runs["nanogpt"]["tokens_per_s"]
    print(f"\n{device}, torch {torch.__version__}; {m['n_layer']}L/{m['n_embd']}d, block "
          f"{m['block_size']}, micro-batch {args.micro_batch} x accum {args.grad_accum}, "
          f"{args.run['dtype']}, compile={args.run['compile']}; {how}")
    print(f"{'trainer':10} {'tokens/s':>12} {'MFU':>7} {'peak GiB':>9}")
    for name, r in runs.items():
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        print(f"{name:10} {r['tokens_per_s']:12,.0f} {mfu:>7} {r['peak_memory_gib']:9.2f}")
    if "tokens_per_s_ratio" in results:
        print(f"finegpt / nanoGPT tokens/s: {results['tokens_per_s_ratio']:.3f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
