"""The data job at full scale: wall time and peak RSS per asset on a generated FineWeb-schema
shard of a real shard's size (~2.15 GB), against one `finegpt tokenize` pass of the same shard
measured in the same invocation. Targets: the whole job (validate, stats, bins, checks) within
1.2x the tokenize pass, peak RSS under 2 GB.

    python bench/data_scale.py --size 2.15GB [--modes default,serial] [--workdir DIR]
                               [--keep-shard] [--json out.json]

What it does: generates the shard (`finegpt_pipeline.data.synthetic`: real sample paragraphs
resampled, FineWeb's 1000-row row groups); runs one `python -m finegpt_pipeline.data tokenize`
pass over it (the baseline: wall time and peak RSS); then, per mode, `python -m assets.launch -j
data_job` (as `make data-job`) on its partition in a fresh FINEGPT_HOME and DAGSTER_HOME:
  * default  the job's own run config, as `make data-job` runs it (steps forked from a
             forkserver, as many at once as cores: token_stats and tokenized_bins overlap);
  * serial   the same, one step at a time, so each sample of the process tree's RSS (every
             0.2 s, /proc) belongs to one step: the per-step figures.
Per step: wall time from Dagster's own event log (STEP_START to STEP_SUCCESS) and the peak
summed RSS of the job's process tree while it ran (the job's parent process included). It
also says whether tokenized_bins split the ids token_stats kept (`tokenized_once`) and how
much FINEGPT_HOME's `token_ids/` holds afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from tokenize_speed import _tree_pss, _tree_rss, machine, peak_rss as tokenize_pass  # noqa: E402

from finegpt_pipeline.data import synthetic

SAMPLE = REPO.parent / "shared" / "data" / "fineweb-cc-main-2013-20-head300.parquet"
# `serial`: the jobs' default run config (assets/jobs.RUN_DEFAULTS), one step at a time
SERIAL_CONFIG = ("execution: {config: {multiprocess: {max_concurrent: 1, start_method: "
                 "{forkserver: {preload_modules: [assets.definitions]}}}}}\n"
                 "loggers: {console: {config: {log_level: INFO}}}\n")
MODES = ("default", "serial")
TARGET_RATIO, TARGET_RSS = 1.2, 2 * 10**9


def step_windows(dagster_home: Path) -> dict[str, tuple[float, float, str]]:
    """step key -> (start, end, outcome) from the one run's event log."""
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs(limit=1)
        out, starts = {}, {}
        for entry in instance.all_logs(run.run_id):
            event = entry.dagster_event
            if event is None or entry.step_key is None:
                continue
            kind = event.event_type_value
            if kind == "STEP_START":
                starts[entry.step_key] = entry.timestamp
            elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
                out[entry.step_key] = (starts.get(entry.step_key, entry.timestamp),
                                       entry.timestamp, kind)
        return out


def run_data_job(shard: Path, work: Path, mode: str) -> dict:
    home, dagster_home = work / "finegpt", work / "dagster"
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(dagster_home, ignore_errors=True)
    dagster_home.mkdir(parents=True)
    shutil.copy(REPO / "docker" / "dagster.yaml", dagster_home / "dagster.yaml")
    config = []
    if mode == "serial":
        (work / "run.yaml").write_text(SERIAL_CONFIG)
        config = ["-c", str(work / "run.yaml")]
    env = {**os.environ, "FINEGPT_HOME": str(home), "DAGSTER_HOME": str(dagster_home),
           "FINEGPT_SHARD": str(shard), "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1",
           "PYTHONPATH": str(REPO)}
    # the shard's partition first (the data assets are partitioned by shard), as `make run` does
    tags = subprocess.run([sys.executable, "-m", "assets.shards", "add", "--tags", str(shard)],
                          cwd=REPO, env=env, capture_output=True, text=True, check=True).stdout
    cmd = [sys.executable, "-m", "assets.launch", "-j", "data_job", *config, "--tags", tags.strip()]
    samples: list[tuple[float, int, int]] = []  # (time, summed RSS, summed PSS)
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(work / "job.log", "w"),
                            stderr=subprocess.STDOUT)

    def sample():
        while proc.poll() is None:
            samples.append((time.time(), _tree_rss(proc.pid), _tree_pss(proc.pid)))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    proc.wait()
    sampler.join()
    wall = time.time() - t0
    if proc.returncode:
        tail = (work / "job.log").read_text()[-3000:]
        raise SystemExit(f"data_job failed ({proc.returncode}):\n{tail}")
    steps = {}
    for key, (start, end, outcome) in sorted(step_windows(dagster_home).items(),
                                             key=lambda kv: kv[1][0]):
        inside = [(rss, pss) for t, rss, pss in samples if start <= t <= end]
        steps[key] = {"seconds": end - start,
                      "peak_rss_mib": max((r for r, _ in inside), default=0) / 2**20,
                      "peak_pss_mib": max((p for _, p in inside), default=0) / 2**20,
                      "outcome": outcome}
    log = (work / "job.log").read_text()
    ids = home / "token_ids"
    return {"wall_s": wall, "peak_rss_mib": max((r for _, r, _ in samples), default=0) / 2**20,
            "peak_pss_mib": max((p for _, _, p in samples), default=0) / 2**20,
            "steps": steps, "samples": len(samples),
            # did tokenized_bins split the ids token_stats kept (or keep them itself, first)?
            "tokenized_once": "from the ids kept in" in log or "from the ids built in" in log,
            "token_ids_bytes": sum(p.stat().st_size for p in ids.rglob("*") if p.is_file())
            if ids.exists() else 0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="2.15GB", help="generated shard size")
    ap.add_argument("--workdir", default=None, help="where the shard and the run go (a temp dir)")
    ap.add_argument("--shard", default=None, help="an existing shard instead of generating one")
    ap.add_argument("--keep-shard", action="store_true")
    ap.add_argument("--sample", default=str(SAMPLE), help="real FineWeb parquet to resample")
    ap.add_argument("--modes", default=",".join(MODES), help="data_job modes to run, in order")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args()
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(REPO.parent / "shared" / "tiktoken-cache"))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="finegpt-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    shard = Path(args.shard) if args.shard else work / "shard.parquet"
    try:
        gen = None
        if not args.shard:
            t0 = time.time()
            gen = synthetic.generate_shard(args.sample, shard, synthetic.parse_size(args.size))
            gen["generate_s"] = time.time() - t0
        load = os.getloadavg()[0]
        print(f"machine: {machine()}\nshard: {shard} ({shard.stat().st_size:,} bytes) {gen or ''}"
              f"\nload average at start: {load:.2f}", flush=True)
        base = tokenize_pass(shard, work / "tokenize-pass")
        shutil.rmtree(work / "tokenize-pass", ignore_errors=True)
        print(f"one tokenize pass: {base['seconds']:.1f} s, peak RSS (tree) "
              f"{base['tree_peak_rss_mib']:.0f} MiB, {base['tokens']:,} tokens", flush=True)
        result = {"machine": machine(), "shard_bytes": shard.stat().st_size, "generated": gen,
                  "load_start": load, "tokenize_pass": base, "modes": {}}
        for mode in args.modes.split(","):
            run = result["modes"][mode] = run_data_job(shard, work, mode)
            run["ratio_to_tokenize_pass"] = run["wall_s"] / base["seconds"]
            print(f"\n{mode}: | step | wall s | peak RSS (tree) MiB | peak PSS (tree) MiB |\n"
                  f"|---|---|---|---|")
            for key, s in run["steps"].items():
                print(f"| {key} | {s['seconds']:.1f} | {s['peak_rss_mib']:.0f} | "
                      f"{s['peak_pss_mib']:.0f} |")
            print(f"| **data_job, {mode} (process, incl. start-up)** | **{run['wall_s']:.1f}** = "
                  f"{run['ratio_to_tokenize_pass']:.2f}x one tokenize pass (target <= "
                  f"{TARGET_RATIO}) | {run['peak_rss_mib']:.0f} | **{run['peak_pss_mib']:.0f}** "
                  f"(target < {TARGET_RSS / 2**20:.0f}) |")
            print(f"tokenized once: {run['tokenized_once']}; token_ids/ holds "
                  f"{run['token_ids_bytes']:,} bytes", flush=True)
        result["load_end"] = os.getloadavg()[0]
        print(f"load average at end: {result['load_end']:.2f}")
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
        return 0
    finally:
        if not args.keep_shard and not args.shard:
            shard.unlink(missing_ok=True)
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
