"""Token efficiency: the steps our default recipe needs to reach nanoGPT's tuned-AdamW loss.

    python bench/token_efficiency.py --nanogpt PATH/TO/nanoGPT [--bins DIR] [--sizes 2x64,4x128]
        [--steps 100] [--seeds 2] [--lrs 1.5e-3,6e-3,2e-2] [--ladder 0.5,0.6,0.75,1.0]
        [--jobs 2] [--threads 1] [--json FILE] [--markdown FILE] [--reuse FILE] [--smoke]

Per model size (LxD: layers x width; heads as our planner picks them, nanoGPT gets the same),
on the same bins, block size, micro-batch (grad_accum 1), fp32, CPU, no torch.compile:

1. nanoGPT's `train.py`, run from its own checkout (never copied here) as bench/train_cpu.py
   drives it, with AdamW at each `--lrs` value: warmup 10 % of N steps, cosine to min_lr = lr/10
   at step N, weight decay 0.1, betas (0.9, 0.95), grad clip 1. Its checkpoint after exactly N
   updates is scored on every val token; the best lr wins. A best lr at either end of the sweep
   gets one more lr beyond that end (the sweep's own ratio), so the winner is a bracketed one.
2. nanoGPT at the best lr for every seed: the mean of their full-val losses is the target.
   nanoGPT's train.py has no seed setting (it seeds 1337); seed k > 0 is a config file, its own
   documented override mechanism, that adds k to the seed it passes to `torch.manual_seed`.
3. Ours: the plan `finegpt plan` makes for this model (its default recipe: Muon for the blocks'
   matrices + AdamW for the rest, lr ~ 1/width, warmup-stable-decay), trained by
   `python -m finegpt_pipeline.train --max-iters M` for each M of the ladder (fractions of N;
   the schedule is re-derived for each M, so each M is a whole run, not a checkpoint of a
   longer one), every seed, each final checkpoint scored on every val token.

Steps-to-target = the smallest ladder M whose mean (over seeds) full-val loss is at or below
the target and stays there for every larger M; ratio = M / N (goal: <= 0.75). A linear
interpolation between the ladder points around the crossing is reported beside it. It counts
steps, not seconds, so a shared machine changes only how long it takes: runs go `--jobs` at a
time with `--threads` torch threads each (1 thread x 2 jobs beats 2 threads x 1 on a loaded
2-core box). nanoGPT processes get glibc's `MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_` (what our
trainer does in-process, docs/benchmarks.md): speed only, not a step of its arithmetic.

`--reuse FILE` takes the runs a previous `--json FILE` measured (same N, bins, block and
micro-batch) and runs only what is missing: e.g. `--ladder 0.2,0.3,0.4` adds lower budgets for
ours against the same nanoGPT runs, and the tables show the union.

`--smoke`: one tiny size, a few steps, one seed, one lr: the harness end to end in about a
minute. The full bench needs a nanoGPT work tree (`--nanogpt`); the unit tests
(tests/bench/test_token_efficiency.py) cover the pure logic without one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from train_cpu import nanogpt_command, timed, tokenize_sample  # noqa: E402

BLOCK, MICRO_BATCH = 64, 16
FULL = dict(sizes="2x64,4x128", steps=100, seeds=2, lrs="1.5e-3,6e-3,2e-2", ladder="0.5,0.6,0.75,1.0")
SMOKE = dict(sizes="1x32", steps=8, seeds=1, lrs="6e-3", ladder="0.5,1.0", block=32, micro_batch=4)
ALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "2147483647"}
SEED_CONFIG = ("# bench/token_efficiency.py: nanoGPT seeds torch with 1337 (+ DDP rank); this adds {k}\n"
               "import torch as _torch\n_manual_seed = _torch.manual_seed\n"
               "_torch.manual_seed = lambda seed: _manual_seed(seed + {k})\n")


# the pure logic (parsing, lr pick, steps to target, the table): token_efficiency_report
from token_efficiency_report import (_ratio_text, beyond_edge, ladder_steps, parse_floats,  # noqa: E402
                                     parse_sizes, pick_lr, render_markdown, summarize_size)


# --- the two trainers' commands ----------------------------------------------------------------

_symlinks = threading.Lock()  # nanogpt_command re-links data/finegpt_bench in the checkout


def nanogpt_args(nano: Path, bins: Path, work: Path, model: dict[str, Any], steps: int,
                 lr: float, seed: int, micro_batch: int) -> list[str]:
    """nanoGPT's train.py as bench/train_cpu.py runs it, then this bench's settings (its
    configurator applies later `--key=value`s over earlier ones): the checkpoint it writes at
    its eval at step `steps` holds the model after exactly `steps` updates (it then takes one
    more step, never saved). A seed > 0 adds a config file (see SEED_CONFIG)."""
    with _symlinks:
        cmd = nanogpt_command(nano, bins, work, steps + 1)  # max_iters = eval_interval = steps
    config = []
    if seed:
        (work / "seed.py").write_text(SEED_CONFIG.format(k=seed))
        config = [str(work / "seed.py")]
    flags = {**model, "batch_size": micro_batch, "gradient_accumulation_steps": 1,
             "learning_rate": float(lr), "min_lr": float(f"{lr / 10:.6g}"), "warmup_iters": steps // 10,
             "lr_decay_iters": steps, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95,
             "grad_clip": 1.0, "decay_lr": True, "always_save_checkpoint": True}
    return cmd[:2] + config + cmd[2:] + [f"--{k}={v!r}" if isinstance(v, float) else f"--{k}={v}"
                                          for k, v in flags.items()]


def ours_plan(layers: int, width: int, steps: int, block: int, micro_batch: int,
              train_tokens: int, val_tokens: int) -> dict[str, Any]:
    """The plan file `finegpt plan --bins B --set ...` makes for this model: the default
    recipe, nothing of it fixed but the model, batch, step count and CPU fp32 eager."""
    from finegpt_pipeline.plan.planner import make_plan

    fixed = dict(n_layer=layers, n_embd=width, block_size=block, micro_batch=micro_batch,
                 grad_accum=1, max_iters=steps, dtype="float32", compile="false", device="cpu")
    return make_plan("cpu", train_tokens, val_tokens=val_tokens,
                     overrides=[f"{k}={v}" for k, v in fixed.items()])


def ours_args(plan: Path, bins: Path, out: Path, steps: int, seed: int) -> list[str]:
    return [sys.executable, "-m", "finegpt_pipeline.train", "--bins", str(bins), "--plan",
            str(plan), "--out", str(out), "--no-mlflow", "--max-iters", str(steps),
            "--eval-every", str(steps), "--checkpoint-every", str(steps), "--set",
            f"seed={1337 + seed}"]


def full_val_loss(ckpt_path: Path, bins: Path, updates: int) -> dict[str, float]:
    """A checkpoint of either trainer on every val token; it must hold `updates` steps."""
    from finegpt_pipeline.evaluate.measure import measure_on_bins
    from finegpt_pipeline.train import checkpoint

    ckpt = checkpoint.load(ckpt_path)
    if int(ckpt["iter_num"]) != updates:
        raise SystemExit(f"{ckpt_path}: iter_num {ckpt['iter_num']}, expected {updates}")
    numbers, _, _ = measure_on_bins(checkpoint.model_from_checkpoint(ckpt), bins)
    return {"val_loss": numbers["val_loss"], "unigram_loss": numbers["unigram_loss"],
            "tokens": numbers["tokens"]}


# --- running them: a small priority pool ----------------------------------------------------

class Pool:
    """`jobs` worker threads taking the lowest (priority, order) job first: nanoGPT's runs go
    before ours, so the runs that depend on its sweep start as early as they can."""

    def __init__(self, jobs: int):
        self.q: queue.PriorityQueue = queue.PriorityQueue()
        self.n = 0
        self.threads = [threading.Thread(target=self._work, daemon=True) for _ in range(jobs)]
        for t in self.threads:
            t.start()

    def submit(self, priority: int, fn: Callable[[], Any]) -> Future:
        fut: Future = Future()
        self.n += 1
        self.q.put((priority, self.n, fn, fut))
        return fut

    def _work(self) -> None:
        while True:
            _, _, fn, fut = self.q.get()
            if fn is None:
                return
            try:
                fut.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on it
                fut.set_exception(exc)

    def close(self) -> None:
        for _ in self.threads:
            self.q.put((math.inf, math.inf, None, None))


def done(value: Any) -> Future:
    fut: Future = Future()
    fut.set_result(value)
    return fut


def load_prior(path: str | None, steps: int, block: int, micro_batch: int,
               tokens: dict[str, int]) -> dict[str, dict[str, Any]]:
    """A previous run's sizes by name, keys back to numbers, if it measured what this run
    would (same N, bins token counts, block size, micro-batch); {} without `path`."""
    if not path:
        return {}
    prior = json.loads(Path(path).read_text())
    if prior["bins_tokens"] != tokens:
        raise SystemExit(f"{path}: measured on other bins ({prior['bins_tokens']} tokens)")
    sizes = {}
    for size in prior["sizes"]:
        if (size["steps"], size["block_size"], size["micro_batch"]) != (steps, block, micro_batch):
            raise SystemExit(f"{path}: {size['name']} ran N={size['steps']}, block "
                             f"{size['block_size']}, micro-batch {size['micro_batch']}")
        nano = size["nanogpt"]
        nano["sweep"] = {float(k): v for k, v in nano["sweep"].items()}
        nano["seeds"] = {int(k): v for k, v in nano["seeds"].items()}
        size["ours"]["losses"] = {int(m): {int(k): v for k, v in per.items()}
                                  for m, per in size["ours"]["losses"].items()}
        sizes[size["name"]] = size
    return sizes


def machine() -> dict[str, Any]:
    import torch

    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
                 platform.processor() or platform.machine())
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model, "nproc": usable, "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "muon": hasattr(torch.optim, "Muon")}


def nanogpt_commit(nano: Path) -> str:
    proc = subprocess.run(["git", "-C", str(nano), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)
    return proc.stdout.strip() or "unknown (not a git work tree)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nanogpt", required=True, help="a nanoGPT checkout (work tree)")
    ap.add_argument("--bins", help="bins dir (default: the shared sample, tokenized)")
    ap.add_argument("--sizes", help=f"LxD list (default {FULL['sizes']})")
    ap.add_argument("--steps", type=int, help=f"nanoGPT's step budget N (default {FULL['steps']})")
    ap.add_argument("--seeds", type=int, help=f"seeds per trainer (default {FULL['seeds']})")
    ap.add_argument("--lrs", help=f"nanoGPT's AdamW lr sweep (default {FULL['lrs']})")
    ap.add_argument("--ladder", help=f"ours' step budgets as fractions of N (default {FULL['ladder']})")
    ap.add_argument("--block", type=int, help=f"block size (default {BLOCK})")
    ap.add_argument("--micro-batch", type=int, help=f"micro-batch (default {MICRO_BATCH})")
    ap.add_argument("--no-extend", action="store_true", help="no extra lr past a sweep edge")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    ap.add_argument("--work", help="work dir (default: a new temp dir)")
    ap.add_argument("--keep-checkpoints", action="store_true",
                    help="keep every run's ckpt.pt (and a temp work dir)")
    ap.add_argument("--reuse", metavar="JSON", help="a previous --json: run only what it lacks")
    ap.add_argument("--smoke", action="store_true", help="tiny: the harness end to end")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--markdown", help="write the tables here")
    args = ap.parse_args()
    preset = {**FULL, "block": BLOCK, "micro_batch": MICRO_BATCH, **(SMOKE if args.smoke else {})}
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)

    nano = Path(args.nanogpt).resolve()
    if not (nano / "train.py").exists():
        raise SystemExit(f"{nano}: no nanoGPT train.py there")
    import torch

    torch.set_num_threads(args.threads)  # scoring runs in this process, beside the jobs
    started, load_start = time.time(), os.getloadavg()
    work = Path(args.work or tempfile.mkdtemp(prefix="finegpt-token-eff-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    bins = Path(args.bins).resolve() if args.bins else tokenize_sample(work / "bins")
    meta = json.loads((bins / "meta.json").read_text())
    sizes, lrs = parse_sizes(args.sizes), parse_floats(args.lrs)
    n, ladder = args.steps, ladder_steps(args.steps, parse_floats(args.ladder))
    seeds = list(range(args.seeds))
    threads_env = {k: str(args.threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    base_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    nano_env = {**base_env, **threads_env, **ALLOC_ENV}
    ours_env = {**base_env, **threads_env, "PYTHONPATH": str(REPO)}
    prior = load_prior(args.reuse, n, args.block, args.micro_batch,
                       {"train": meta["train_tokens"], "val": meta["val_tokens"]})
    pool = Pool(args.jobs)
    print(f"work dir {work}; bins {bins}; N={n}, ladder {ladder}, seeds {seeds}, lrs {lrs}, "
          f"{args.jobs} jobs x {args.threads} threads", flush=True)

    def scored(name: str, cmd: list[str], cwd: Path, env: dict[str, str], run_dir: Path,
               updates: int) -> dict[str, Any]:
        run = timed(cmd, cwd, env)
        score = full_val_loss(run_dir / "out" / "ckpt.pt", bins, updates)
        if not args.keep_checkpoints:
            (run_dir / "out" / "ckpt.pt").unlink()
        print(f"{name}: full-val loss {score['val_loss']:.4f} ({run['wall_s']:.0f} s)", flush=True)
        return {**score, "wall_s": run["wall_s"]}

    def nanogpt_job(name: str, model: dict[str, Any], lr: float, seed: int) -> Future:
        run_dir = work / name / f"nanogpt-lr{lr:g}-seed{seed}"
        run_dir.mkdir(parents=True)
        cmd = nanogpt_args(nano, bins, run_dir, model, n, lr, seed, args.micro_batch)
        return pool.submit(0, lambda: scored(f"{name} nanoGPT lr {lr:g} seed {seed}", cmd, nano,
                                             nano_env, run_dir, n))

    def ours_job(name: str, plan: Path, m: int, seed: int) -> Future:
        run_dir = work / name / f"ours-M{m}-seed{seed}"
        run_dir.mkdir(parents=True)
        cmd = ours_args(plan, bins, run_dir / "out", m, seed)
        # longest first, so the last runs to finish are short ones
        return pool.submit(1 + n - m, lambda: scored(f"{name} ours M {m} seed {seed}", cmd, REPO,
                                                     ours_env, run_dir, m))

    results, pending = [], []
    try:
        for layers, width in sizes:
            name = f"{layers}L/{width}d"
            plan = ours_plan(layers, width, n, args.block, args.micro_batch,
                             meta["train_tokens"], meta["val_tokens"])
            cfg = plan["config"]
            (work / name).mkdir(parents=True)
            plan_path = work / name / "plan.json"
            plan_path.write_text(json.dumps(plan, indent=2, default=str))
            model = {k: cfg[k] for k in ("n_layer", "n_head", "n_embd", "block_size", "bias",
                                         "dropout")}
            old = prior.get(name, {})
            old_nano = old.get("nanogpt", {"sweep": {}, "seeds": {}, "best_lr": None})
            old_ours = old.get("ours", {"losses": {}})["losses"]
            sweep = {lr: done({"val_loss": loss}) for lr, loss in old_nano["sweep"].items()}
            sweep.update({lr: nanogpt_job(name, model, lr, 0) for lr in lrs if lr not in sweep})
            ours = {(m, seed): done({"val_loss": loss, "unigram_loss": old["unigram_loss"]})
                    for m, per in old_ours.items() for seed, loss in per.items()}
            ours.update({(m, seed): ours_job(name, plan_path, m, seed) for m in ladder
                         for seed in seeds if (m, seed) not in ours})
            pending.append((name, model, cfg, plan["report"], sweep, ours, old_nano))
        # every size's sweep (and its extension) settled before any waits on ours' runs, so
        # the nanoGPT runs that depend on it are queued ahead of them
        extended, seed_runs_by_size = {}, {}
        for name, model, cfg, report, sweep, ours, old_nano in pending:
            best, edge = pick_lr({lr: f.result()["val_loss"] for lr, f in sweep.items()})
            if edge and best in lrs and not args.no_extend:  # once: not past an added lr
                extra = beyond_edge(list(sweep), edge)
                print(f"{name}: best lr {best:g} at the sweep's {edge} end; adding {extra:g}",
                      flush=True)
                extended[name] = (extra, nanogpt_job(name, model, extra, 0))
        for name, model, cfg, report, sweep, ours, old_nano in pending:
            if name in extended:
                sweep[extended[name][0]] = extended[name][1]
            losses = {lr: f.result()["val_loss"] for lr, f in sweep.items()}
            best, edge = pick_lr(losses)
            reused = old_nano["seeds"] if old_nano["best_lr"] == best else {}
            seed_runs = {seed: done({"val_loss": loss}) for seed, loss in reused.items() if seed}
            seed_runs.update({seed: nanogpt_job(name, model, best, seed) for seed in seeds
                              if seed and seed not in seed_runs})
            seed_runs_by_size[name] = (best, edge, losses, seed_runs)
        for name, model, cfg, report, sweep, ours, old_nano in pending:
            best, edge, losses, seed_runs = seed_runs_by_size[name]
            per_m: dict[int, dict[int, float]] = {}
            unigram = None
            for (m, seed), f in ours.items():
                r = f.result()
                per_m.setdefault(m, {})[seed] = r["val_loss"]
                unigram = r["unigram_loss"]
            size = {
                "name": name, "model": model, "params": _params(cfg), "steps": n,
                "block_size": cfg["block_size"], "micro_batch": cfg["micro_batch"],
                "unigram_loss": unigram,
                "nanogpt": {"sweep": losses, "best_lr": best, "edge": edge,
                            "seeds": {0: losses[best], **{k: f.result()["val_loss"]
                                                          for k, f in seed_runs.items()}}},
                "ours": {"losses": per_m, "learning_rate": cfg["learning_rate"],
                         "recipe": report.get("recipe", {}),
                         "optimizer": cfg["optimizer"], "lr_schedule": cfg["lr_schedule"]},
            }
            results.append(summarize_size(size))
            print(f"{name}: target {size['nanogpt']['target']:.4f}; ours "
                  + ", ".join(f"M={m}: {v:.4f}" for m, v in sorted(size["ours"]["mean"].items()))
                  + f"; steps-to-target {_ratio_text(size['result'])}", flush=True)
    finally:
        pool.close()
    summary = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": machine(), "nanogpt_commit": nanogpt_commit(nano), "bins": str(bins),
        "bins_tokens": {"train": meta["train_tokens"], "val": meta["val_tokens"]},
        "settings": {"steps": n, "ladder": ladder, "seeds": seeds, "lrs": lrs, "smoke": args.smoke,
                     "jobs": args.jobs, "threads": args.threads, "reused": args.reuse},
        "load_avg_start": load_start, "load_avg_end": os.getloadavg(),
        "wall_s": time.time() - started, "sizes": results,
    }
    table = render_markdown(results)
    print(table)
    print(f"wall {summary['wall_s'] / 60:.1f} min, load average {load_start[0]:.2f} -> "
          f"{summary['load_avg_end'][0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if not args.keep_checkpoints and not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _params(cfg: dict[str, Any]) -> int:
    from finegpt_pipeline.config import TrainConfig
    from finegpt_pipeline.plan.costs import param_count

    return param_count(TrainConfig.from_dict(cfg))


if __name__ == "__main__":
    raise SystemExit(main())
