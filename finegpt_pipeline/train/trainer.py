"""`finegpt train`: GPT training on nanoGPT bins, resumable, single process or under torchrun.

    finegpt train --bins DIR --plan PLAN.json --out DIR [--max-iters N] [--eval-every N]
                  [--checkpoint-every N] [--resume | --overwrite] [--set key=value ...]
                  [--no-mlflow]

`--max-iters N` trains the plan's schedule for N steps (warmup, cosine decay, eval and
checkpoint cadence), as `finegpt plan --set max_iters=N` would plan it; `--eval-every`,
`--checkpoint-every` and `--set` win over it. An --out that holds a run is continued with
--resume, started over with --overwrite, or refused. PLAN is a plan file (`config` read
strictly, `report` kept; a flat version-1 plan or hand-written config also loads); OUT keeps
one, plan.json: the config trained and that report. MLflow tracking is on by default
(MLFLOW_TRACKING_URI, else the store under FINEGPT_HOME); --no-mlflow turns it off.

`python -m finegpt_pipeline.train ...` is the same entry point without the other stages'
imports (the GPU machines have no duckdb/dagster); `torchrun --nproc-per-node N -m
finegpt_pipeline.train ...` runs it with DDP. Everything is validated (plan, bins, block size)
before the model is built, so a bad config fails in a second rather than mid-run.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from finegpt_pipeline import runtime
from finegpt_pipeline.train import allocator, checkpoint, launcher_watch, loss_curve, run_dir
from finegpt_pipeline.train.progress import Progress
from finegpt_pipeline.train.schedule import lr_at
from finegpt_pipeline.atomic import write_json
from finegpt_pipeline.train.batches import BatchSource, Bins
from finegpt_pipeline.config import TrainConfig, make_plan_file
from finegpt_pipeline.plan.costs import flops_per_token
from finegpt_pipeline.hardware import GIB
from finegpt_pipeline.model import GPT, GPTConfig
from finegpt_pipeline.train.plan_file import load_plan, planner_report
from finegpt_pipeline.train.run_dir import PLAN_NAME, SUMMARY_NAME
from finegpt_pipeline.train.reporter import Reporter, mlflow_wanted


def _due(it: int, interval: int) -> bool:
    """Every `interval` steps; an interval of 0 means only at the end (handled by the caller)."""
    return interval > 0 and it % interval == 0


def _logs_at(step: int, log_interval: int, max_iters: int) -> bool:
    """Does step `step` end with a log row (train loss, tokens seen, ...)?"""
    return step > 0 and (_due(step, log_interval) or step == max_iters)


@torch.no_grad()
def estimate_val_loss(model: torch.nn.Module, batches: BatchSource, cfg: TrainConfig,
                      rt: runtime.Runtime) -> float:
    """Mean loss over the same `eval_iters` validation batches every time (rank-averaged)."""
    model.eval()
    total = torch.zeros((), device=rt.device)
    for k in range(cfg.eval_iters):
        x, y = batches.val_batch(k)
        with rt.autocast():
            _, loss = model(x, y)
        total += loss.float()
    model.train()
    # every rank evaluates the same batches; the mean keeps ranks in agreement regardless
    return float(runtime.all_reduce_mean(total / cfg.eval_iters, rt))


def accum_per_process(grad_accum: int, world_size: int) -> int:
    """grad_accum is the plan's, for the whole step: under torchrun each process takes its share
    (as nanoGPT does), so N GPUs keep the planned tokens/step and finish sooner; rounded up."""
    return -(-grad_accum // world_size)


class Trainer:
    def __init__(self, cfg: TrainConfig, bins_dir: str | Path, out_dir: str | Path,
                 resume: bool = False, mlflow: bool | None = None,
                 planner_report: dict[str, Any] | None = None, overwrite: bool = False):
        self.cfg = cfg
        self.planner_report = planner_report or {}
        self.out_dir = Path(out_dir)
        self.ckpt_path = self.out_dir / checkpoint.CKPT_NAME
        # input checks first: nothing is allocated or written for a run that cannot start.
        # The bins stay locked (shared) until close(), so nothing re-tokenizes them mid-run.
        self.bins = Bins(bins_dir)
        self.out_lock, created = None, not self.out_dir.exists()
        try:
            self.bins.check(cfg.block_size, cfg.vocab_size)
            if runtime.is_main_process():  # one trainer per run directory, waited for
                self.out_dir.mkdir(parents=True, exist_ok=True)
                self.out_lock = run_dir.lock(self.out_dir)
            run_dir.check_start(self.out_dir, resume, overwrite)
            self.resume_requested, self.overwrite = resume, overwrite
            self.use_mlflow = mlflow_wanted(mlflow)
            self.rt = runtime.setup(cfg)
        except BaseException:
            self.close()
            if created and self.out_dir.is_dir() and not any(self.out_dir.iterdir()):
                self.out_dir.rmdir()  # a refused run leaves no trace
            raise
        self.accum = accum_per_process(cfg.grad_accum, self.rt.world_size)

    # --- state -------------------------------------------------------------------------
    def _build(self) -> None:
        cfg, rt = self.cfg, self.rt
        torch.manual_seed(cfg.seed + rt.rank)
        self.model = GPT(GPTConfig(**cfg.model_args())).to(rt.device)
        self.optimizer = self.model.configure_optimizer(
            cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), rt.device_type,
            optimizer=cfg.optimizer, matrix_lr=cfg.matrix_lr or cfg.learning_rate)
        self.scaler = rt.grad_scaler()
        self.iter_num = 0
        self.best_val_loss = float("inf")
        self.tokens_seen = 0
        self.elapsed_before = 0.0
        self.history: list[dict[str, float]] = []
        self.val_history: list[dict[str, float]] = []  # {iter, tokens_seen, val_loss}
        self.resumed_from: int | None = None
        self.resumed_world: int | None = None
        self.resumed_mlflow_run: str | None = None
        if self.resume_requested:
            self._restore(checkpoint.load(self.ckpt_path, map_location=rt.device))
        self.train_model = runtime.wrap_model(self.model, rt)
        self.batches = BatchSource(self.bins, cfg.block_size, cfg.micro_batch, cfg.seed, rt.device)

    def _restore(self, ckpt: dict[str, Any]) -> None:
        saved = {k: ckpt["model_args"][k] for k in self.cfg.model_args()}
        if saved != self.cfg.model_args():
            raise ValueError(f"{self.ckpt_path}: checkpoint model {saved} differs from the plan's "
                             f"{self.cfg.model_args()}; use a fresh --out directory")
        self.model.load_state_dict(checkpoint.clean_state_dict(ckpt["model"]))
        if ckpt.get("optimizer") is not None:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        self.iter_num = int(ckpt["iter_num"])
        self.best_val_loss = float(ckpt.get("best_val_loss", float("inf")))
        extra = ckpt.get("resume") or {}
        self.tokens_seen = int(extra.get("tokens_seen", 0))
        self.elapsed_before = float(extra.get("elapsed_s", 0.0))
        self.history = list(extra.get("history", []))
        self.val_history = list(extra.get("val_history", []))
        if "scaler" in extra and extra["scaler"]:
            self.scaler.load_state_dict(extra["scaler"])
        rng = extra.get("rng_by_rank", {}).get(str(self.rt.rank)) or extra.get("rng")
        if rng:
            checkpoint.restore_rng_state(rng)
        self.resumed_from = self.iter_num
        self.resumed_world = int(extra.get("world_size", self.rt.world_size))
        self.resumed_mlflow_run = checkpoint.mlflow_run_id(ckpt)

    def _save(self) -> None:
        # rank 0 writes, so a resumed DDP run restores rank 0's RNG on every rank: dropout
        # streams then differ from the uninterrupted run on ranks > 0 (data order does not)
        resume_state = {
            "tokens_seen": self.tokens_seen,
            "elapsed_s": self.progress.elapsed(),
            "history": self.history, "val_history": self.val_history,
            "rng": checkpoint.rng_state(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "world_size": self.rt.world_size,
        }
        checkpoint.save(self.ckpt_path, self.model, self.optimizer, self.cfg.to_dict(),
                        self.iter_num, self.best_val_loss, resume_state,
                        mlflow_run_id=self.report.mlflow_run_id)

    # --- the loop ----------------------------------------------------------------------
    def _step(self) -> tuple[torch.Tensor, torch.Tensor]:
        cfg, rt = self.cfg, self.rt
        lr = lr_at(self.iter_num, cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        loss_sum = torch.zeros((), device=rt.device)
        for micro in range(self.accum):
            # the step's micro-batches are numbered across ranks, so the data a step sees does
            # not depend on how many processes share it
            x, y = self.batches.train_batch(self.iter_num, rt.rank * self.accum + micro)
            last = micro == self.accum - 1
            # DDP all-reduces gradients only on the last micro-step of the accumulation
            sync = nullcontext() if (last or not rt.distributed) else self.train_model.no_sync()
            with sync:
                with rt.autocast():
                    _, loss = self.train_model(x, y)
                    loss = loss / self.accum
                self.scaler.scale(loss).backward()
            loss_sum += loss.detach().float()
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        else:
            grad_norm = torch.zeros((), device=rt.device)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        # freeing gradients saves memory, except under DDP, where they are views into its
        # buckets: freed, autograd would allocate a fresh copy beside the buckets every step
        self.optimizer.zero_grad(set_to_none=not rt.distributed)
        return loss_sum, grad_norm

    def _claim_out_dir(self) -> None:
        """The run is known to start (inputs checked, checkpoint restored): only now does OUT
        change; a refused run leaves it as it was."""
        if not self.rt.is_main:
            return
        if self.overwrite:
            run_dir.clear(self.out_dir)
        write_json(self.out_dir / PLAN_NAME, make_plan_file(self.cfg.to_dict(), self.planner_report))

    def run(self) -> dict[str, Any]:
        cfg, rt = self.cfg, self.rt
        self._build()
        self._claim_out_dir()
        self.report = Reporter(self.out_dir, enabled=rt.is_main, use_mlflow=self.use_mlflow)
        # the planner's scalar estimates ride along, so MLflow compares planned with measured
        estimates = {f"plan.{k}": v for k, v in self.planner_report.items()
                     if isinstance(v, (int, float, str, bool))}
        self.report.start({**cfg.to_dict(), **estimates}, resuming=self.resumed_from is not None,
                          bins_dir=self.bins.dir, previous_run_id=self.resumed_mlflow_run)
        try:
            return self._loop(cfg.max_iters)
        except BaseException as exc:
            self.report.close(error=exc)
            raise

    def close(self) -> None:
        """Release the bins and the run directory."""
        self.bins.close()
        if self.out_lock is not None:
            self.out_lock.close()

    def _report_process_split(self, tokens_per_step: int) -> None:
        """Warn where the processes do not keep the plan's tokens per step, or a resumed run's."""
        cfg, world = self.cfg, self.rt.world_size
        if self.accum * world != cfg.grad_accum:
            planned = cfg.tokens_per_step
            self.report.warning(
                f"grad_accum {cfg.grad_accum} does not divide among {world} processes: "
                f"{self.accum} each, so a step is {tokens_per_step:,} tokens, not the planned "
                f"{planned:,} ({tokens_per_step / planned:.2f}x the tokens and epochs); set "
                f"grad_accum to a multiple of {world} to keep the plan")
        if self.resumed_world not in (None, world):
            before = accum_per_process(cfg.grad_accum, self.resumed_world) * self.resumed_world
            same = before == self.accum * world
            (self.report.info if same else self.report.warning)(
                f"resumed on {world} processes (checkpoint: {self.resumed_world}); "
                + ("same tokens per step and data order" if same else
                   f"tokens per step change from {before * cfg.tokens_per_micro_step:,}"))

    def _loop(self, max_iters: int) -> dict[str, Any]:
        cfg, rt = self.cfg, self.rt
        tokens_per_step = cfg.tokens_per_micro_step * self.accum * rt.world_size
        self._report_process_split(tokens_per_step)
        fpt = flops_per_token(cfg)
        if self.resumed_from is not None:
            self.report.info(f"resuming from {self.ckpt_path} at iter {self.iter_num}")
            self.report.rewind_log(self.resumed_from)
        self.report.info(f"training {self.model.get_num_params():,} params on {rt.device} "
                        f"({rt.dtype}, compile={rt.compile}, world={rt.world_size}), "
                        f"{tokens_per_step:,} tokens/step, iters {self.iter_num}->{max_iters}")
        self.progress = Progress(cfg, max_iters, self.iter_num, self.elapsed_before, self.report)
        window_t, window_steps = time.time(), 0
        val_loss = float("nan")
        while True:
            it = self.iter_num
            if _due(it, cfg.eval_interval) or it >= max_iters:
                t_eval = time.time()
                val_loss = estimate_val_loss(self.train_model, self.batches, cfg, rt)
                self.best_val_loss = min(self.best_val_loss, val_loss)
                self.val_history.append({"iter": float(it), "tokens_seen": float(self.tokens_seen),
                                         "val_loss": val_loss})
                # tokens_seen once per step (MLflow's charts against a metric pair by index)
                self.progress.at_eval(it, self.tokens_seen, val_loss, self.best_val_loss,
                                      self.val_history, time.time() - t_eval,
                                      log_tokens=not _logs_at(it, cfg.log_interval, max_iters))
                window_t = time.time()  # evaluation time is not training throughput
            due = it > 0 and it != self.resumed_from and (
                _due(it, cfg.checkpoint_interval) or it >= max_iters)
            if due and rt.is_main:
                self._save()
            if it >= max_iters:
                break
            loss_sum, grad_norm = self._step()
            self.iter_num += 1
            self.tokens_seen += tokens_per_step
            window_steps += 1
            if _logs_at(self.iter_num, cfg.log_interval, max_iters):
                loss = float(runtime.all_reduce_mean(loss_sum, rt))  # syncs the device
                dt = time.time() - window_t
                self.progress.steps_timed(self.iter_num, window_steps, dt)
                tps = window_steps * tokens_per_step / max(dt, 1e-9)
                row = {"train_loss": loss, "lr": lr_at(it, cfg), "grad_norm": float(grad_norm),
                       "tokens_per_s": tps, "tokens_seen": float(self.tokens_seen)}
                if cfg.peak_flops > 0:
                    row["mfu"] = fpt * tps / (cfg.peak_flops * rt.world_size)
                if rt.device_type == "cuda":
                    row["gpu_mem_gb"] = runtime.peak_memory_bytes(rt) / GIB
                self.history.append({"iter": float(self.iter_num), **row})
                self.report.metrics(self.iter_num, row)
                self.report.info(f"iter {self.iter_num}: loss {loss:.4f} lr {row['lr']:.2e} "
                                f"grad {row['grad_norm']:.3f} {tps:,.0f} tok/s"
                                + (f" mfu {row['mfu']:.1%}" if "mfu" in row else ""))
                window_t, window_steps = time.time(), 0
        wall, avg_tps = self.progress.elapsed(), self.progress.tokens_per_s(tokens_per_step)
        summary = {
            "steps": self.iter_num, "tokens_seen": self.tokens_seen,
            "best_val_loss": self.best_val_loss, "final_val_loss": val_loss,
            "wall_time_s": wall, "tokens_per_s": avg_tps,
            "mfu": fpt * avg_tps / (cfg.peak_flops * rt.world_size) if cfg.peak_flops > 0 else None,
            "peak_memory_bytes": runtime.peak_memory_bytes(rt),
            "checkpoint": str(self.ckpt_path.resolve()), "params": self.model.get_num_params(),
            "resumed_from": self.resumed_from, "world_size": rt.world_size,
            "device": str(rt.device), "dtype": str(rt.dtype).replace("torch.", ""),
            "compile": rt.compile,
            "mlflow_run_id": self.report.mlflow_run_id, "mlflow_run_url": self.report.mlflow_run_url,
            "curve_forecasts": self.progress.finish(self.val_history, val_loss),
        }
        if rt.is_main:
            write_json(self.out_dir / SUMMARY_NAME, {**summary, "history": self.history,
                                                     "val_history": self.val_history})
            loss_curve.write_loss_curve(self.out_dir)
        artifacts = [self.ckpt_path, self.out_dir / PLAN_NAME, self.out_dir / SUMMARY_NAME,
                     self.out_dir / loss_curve.LOSS_CURVE_NAME]
        self.report.finish(summary, artifacts, data_version=f"{self.out_dir.name}@{self.iter_num}")
        return summary


def train(cfg: TrainConfig, bins_dir: str | Path, out_dir: str | Path, resume: bool = False,
          mlflow: bool | None = None, planner: dict[str, Any] | None = None,
          overwrite: bool = False) -> dict[str, Any]:
    """Train to cfg.max_iters; returns the run summary. `planner` is the plan's report
    (`plan_file.planner_report`), kept beside the run and logged with it. An `out_dir` holding a run
    needs `resume` (continue it) or `overwrite` (start over)."""
    trainer = Trainer(cfg, bins_dir, out_dir, resume=resume, mlflow=mlflow, planner_report=planner,
                      overwrite=overwrite)
    if trainer.rt.device_type == "cpu":
        allocator.keep_freed_memory()
    try:
        return trainer.run()
    finally:
        trainer.close()
        runtime.teardown(trainer.rt)


def _handle(args: argparse.Namespace) -> int:
    overrides = list(args.set or [])
    for flag, key in (("eval_every", "eval_interval"), ("checkpoint_every", "checkpoint_interval")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    launcher_watch.watch()  # launched by the pipeline: stop if the launcher dies
    cfg = load_plan(args.plan, overrides, max_iters=args.max_iters)
    try:
        summary = train(cfg, args.bins, args.out, resume=args.resume, overwrite=args.overwrite,
                        mlflow=args.mlflow, planner=planner_report(args.plan))
    except KeyboardInterrupt:
        if launcher_watch.gone.is_set():
            return 1  # stopped for a launcher that is gone: its one line says so
        raise
    if args.json:
        print(json.dumps(summary, indent=2))
    elif runtime.is_main_process():  # the closing line: what it wrote, where
        out = Path(args.out)
        loss = summary.get("final_val_loss")
        print(f"train: {summary['steps']} steps, {summary['tokens_seen']:,} tokens, val loss "
              + (f"{loss:.4f}" if loss is not None else "n/a")
              + f" (best {summary['best_val_loss']:.4f}); wrote "
              f"{out / 'ckpt.pt'}, plan.json, summary.json, {loss_curve.LOSS_CURVE_NAME}"
              + (f"; MLflow run {summary['mlflow_run_url']}" if summary.get("mlflow_run_url")
                 else ""))
    return 0


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a GPT on nanoGPT bins from a plan",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bins", required=True, help="bins dir (train.bin, val.bin, meta.json) "
                   "or bins set (manifest.json: windows drawn across its members)")
    p.add_argument("--plan", required=True, help="plan JSON (`finegpt plan --json`; a flat "
                   "config also loads)")
    p.add_argument("--out", required=True, help="run directory: ckpt.pt, plan.json (the config "
                   "trained and the plan's report), summary.json")
    p.add_argument("--max-iters", type=int,
                   help="train N steps on the plan's schedule re-derived for N (warmup, decay, "
                        "eval and checkpoint cadence, as `finegpt plan --set max_iters=N`)")
    p.add_argument("--eval-every", type=int, help="val loss every N steps (plan: eval_interval)")
    p.add_argument("--checkpoint-every", type=int,
                   help="checkpoint every N steps (plan: checkpoint_interval)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/ckpt.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in an OUT that holds a run (its files are replaced)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a plan field")
    p.add_argument("--mlflow", action=argparse.BooleanOptionalAction, default=None,
                   help="log to MLflow (default: on, to MLFLOW_TRACKING_URI or the store under "
                        "FINEGPT_HOME; --no-mlflow: off)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON at the end")
    p.set_defaults(func=_handle)
