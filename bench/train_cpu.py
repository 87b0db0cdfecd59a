"""CPU training speed: `finegpt train` against nanoGPT's train.py, whole process, same bins.

    python bench/train_cpu.py --nanogpt PATH/TO/nanoGPT [--bins DIR] [--steps 20] [--rounds 3]
                              [--compare NAME=REPO_PATH[:KEY=VALUE,...]]

Both run 4L/4h/128d, block 128, batch 16, no bias, no dropout, fp32, no torch.compile, on the
CPU, as separate processes timed from start to exit (interpreter start, imports, data, model,
every step, evaluation, checkpoint), alternating which goes first each round, since the
machine may be shared. Equal work: nanoGPT runs `max_iters + 1` steps, so it gets
`--max_iters=steps-1`; it evaluates train and val with `eval_iters` batches each at its first
and last step, we evaluate val only, so ours gets twice its eval_iters; both write one
checkpoint. The ratio is nanoGPT's wall time over ours (above 1: we are faster), per round and
the median of rounds; the same for CPU time (user + sys of the process), which holds up better
when other work shares the machine. `--compare` adds another checkout's trainer (e.g. the main branch, with
glibc `MALLOC_*` variables) as a third contestant. nanoGPT's code is run from its own checkout,
never copied here. Without `--bins` the shared FineWeb sample is tokenized into a temp dir.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "fineweb-cc-main-2013-20-head300.parquet"
MODEL = dict(n_layer=4, n_head=4, n_embd=128, block_size=128, bias=False, dropout=0.0)
BATCH = 16
EVAL_ITERS = 1  # nanoGPT's, per split


def ours_command(repo: Path, bins: Path, work: Path, steps: int) -> list[str]:
    plan = {**MODEL, "micro_batch": BATCH, "grad_accum": 1, "max_iters": steps,
            "lr_decay_iters": steps, "warmup_iters": 10, "learning_rate": 6e-4, "min_lr": 6e-5,
            "eval_interval": steps, "eval_iters": 2 * EVAL_ITERS, "log_interval": 1,
            "checkpoint_interval": steps, "device": "cpu", "dtype": "float32", "compile": "false"}
    (work / "plan.json").write_text(json.dumps(plan))
    out = work / "out"
    flags = ["--no-mlflow"] if "--no-mlflow" in _train_help(repo) else []
    return [sys.executable, "-m", "finegpt_pipeline.train", "--bins", str(bins), "--plan",
            str(work / "plan.json"), "--out", str(out), *flags]


def _train_help(repo: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(repo)}
    return subprocess.run([sys.executable, "-m", "finegpt_pipeline.train", "--help"], env=env,
                          cwd=repo, capture_output=True, text=True).stdout


def nanogpt_command(nano: Path, bins: Path, work: Path, steps: int) -> list[str]:
    data = nano / "data" / "finegpt_bench"  # nanoGPT reads data/<dataset>/{train,val}.bin
    data.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        (data / f"{split}.bin").unlink(missing_ok=True)
        (data / f"{split}.bin").symlink_to((bins / f"{split}.bin").resolve())
    flags = [f"--{k}={v}" for k, v in MODEL.items()]
    return [sys.executable, "train.py", "--dataset=finegpt_bench", f"--out_dir={work / 'out'}",
            f"--batch_size={BATCH}", "--gradient_accumulation_steps=1", "--device=cpu",
            "--dtype=float32", "--compile=False", *flags, f"--max_iters={steps - 1}",
            f"--lr_decay_iters={steps}", "--warmup_iters=10", f"--eval_interval={steps - 1}",
            f"--eval_iters={EVAL_ITERS}", "--log_interval=1", "--always_save_checkpoint=False",
            "--wandb_log=False"]


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> dict[str, float]:
    """Wall and CPU (user + sys) seconds of one whole process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    sys_s = after.ru_stime - before.ru_stime
    return {"wall_s": wall, "cpu_s": cpu, "sys_s": sys_s}


def tokenize_sample(out: Path) -> Path:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.setdefault("TIKTOKEN_CACHE_DIR", str(REPO.parent / "shared" / "tiktoken-cache"))
    subprocess.run([sys.executable, "-m", "finegpt_pipeline.data", "tokenize", str(SAMPLE),
                    "--out", str(out)], env=env, check=True, capture_output=True)
    return out


def parse_compare(spec: str) -> tuple[str, Path, dict[str, str]]:
    name, _, rest = spec.partition("=")
    path, _, env = rest.partition(":")
    extra = dict(item.split("=", 1) for item in env.split(",") if item)
    return name, Path(path).resolve(), extra


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nanogpt", required=True, help="a nanoGPT checkout (work tree)")
    ap.add_argument("--bins", help="bins dir (default: the shared sample, tokenized)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--compare", action="append", default=[], metavar="NAME=REPO[:K=V,...]",
                    help="another finegpt checkout to time as well, with extra environment")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    nano = Path(args.nanogpt).resolve()
    if not (nano / "train.py").exists():
        raise SystemExit(f"{nano}: no nanoGPT train.py there")
    tmp = Path(tempfile.mkdtemp(prefix="finegpt-cpu-bench-"))
    bins = Path(args.bins) if args.bins else tokenize_sample(tmp / "bins")
    base_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    contestants = {"finegpt": (REPO, {}), "nanogpt": (nano, {})}
    for spec in args.compare:
        name, path, extra = parse_compare(spec)
        contestants[name] = (path, extra)

    def command(name: str, work: Path) -> tuple[list[str], Path, dict[str, str]]:
        path, extra = contestants[name]
        if name == "nanogpt":
            return nanogpt_command(nano, bins, work, args.steps), nano, {**base_env, **extra}
        env = {**base_env, "PYTHONPATH": str(path), **extra}
        return ours_command(path, bins, work, args.steps), path, env

    load_start = os.getloadavg()
    rounds = []
    names = list(contestants)
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        result = {}
        for name in order:
            work = tmp / f"r{r}-{name}"
            work.mkdir()
            cmd, cwd, env = command(name, work)
            result[name] = timed(cmd, cwd, env)
            print(f"round {r + 1} {name:10} wall {result[name]['wall_s']:6.2f} s  cpu "
                  f"{result[name]['cpu_s']:6.2f} s (sys {result[name]['sys_s']:5.2f})", flush=True)
        result["ratio"] = result["nanogpt"]["wall_s"] / result["finegpt"]["wall_s"]
        result["cpu_ratio"] = result["nanogpt"]["cpu_s"] / result["finegpt"]["cpu_s"]
        print(f"round {r + 1} nanoGPT / finegpt: wall {result['ratio']:.3f}x, cpu "
              f"{result['cpu_ratio']:.3f}x", flush=True)
        rounds.append(result)
    summary = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(), "steps": args.steps, "bins": str(bins),
        "load_avg_start": load_start, "load_avg_end": os.getloadavg(), "rounds": rounds,
        "median_ratio": statistics.median(r["ratio"] for r in rounds),
        "median_cpu_ratio": statistics.median(r["cpu_ratio"] for r in rounds),
    }
    for name in names:
        for what in ("wall_s", "cpu_s"):
            summary[f"median_{what}.{name}"] = statistics.median(r[name][what] for r in rounds)
    print(f"median nanoGPT / finegpt: wall {summary['median_ratio']:.3f}x, cpu "
          f"{summary['median_cpu_ratio']:.3f}x (load average {load_start[0]:.2f} -> "
          f"{summary['load_avg_end'][0]:.2f})")
    for name in names:
        print(f"  {name:10} median wall {summary[f'median_wall_s.{name}']:7.2f} s, cpu "
              f"{summary[f'median_cpu_s.{name}']:7.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
