"""Checkpoints in nanoGPT's `ckpt.pt` layout, written atomically, loadable with weights_only.

nanoGPT's keys (`model_args`, `model`, `optimizer`, `iter_num`, `best_val_loss`, `config`) let
its `sample.py` load our checkpoints; the extra `resume` entry carries what an exact resume
needs (RNG states, tokens seen, wall time so far), and `mlflow_run_id` the MLflow run the
training logs to, so a resumed run continues it wherever the checkpoint goes. Everything saved is a plain dict, list,
tensor, int, float, bool or string, so `torch.load(weights_only=True)` accepts it.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

from finegpt_pipeline.atomic import atomic_path
from finegpt_pipeline.config import MODEL_KEYS
from finegpt_pipeline.model import GPT, GPTConfig
from finegpt_pipeline.train.run_dir import CKPT_NAME  # noqa: F401  (re-exported)

# wrappers that prefix parameter names: torch.compile and DistributedDataParallel
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")


def clean_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """GPT-2/nanoGPT names, whatever wrapped the model when it was saved."""
    out = {}
    for name, tensor in state.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in _WRAPPER_PREFIXES:
                if name.startswith(prefix):
                    name, stripped = name[len(prefix):], True
        out[name] = tensor
    return out


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    while True:
        if hasattr(model, "module"):  # DDP
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        else:
            return model


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
         config: dict[str, Any], iter_num: int, best_val_loss: float,
         resume: dict[str, Any] | None = None, mlflow_run_id: str | None = None) -> Path:
    path = Path(path)
    model_args = {k: config[k] for k in MODEL_KEYS}
    state = {
        "model_args": model_args,
        "model": clean_state_dict(unwrap(model).state_dict()),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "iter_num": int(iter_num),
        "best_val_loss": float(best_val_loss),
        "config": dict(config),
        "resume": dict(resume or {}),
        "mlflow_run_id": mlflow_run_id,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    kwargs = {"map_location": map_location}
    if "weights_only" in inspect.signature(torch.load).parameters:
        kwargs["weights_only"] = True
    try:
        ckpt = torch.load(path, **kwargs)
    except Exception as exc:  # a truncated or foreign file: say which, in one line
        raise ValueError(f"{path}: not a loadable checkpoint ({_reason(exc)}); expected a "
                         "ckpt.pt written by `finegpt train` or nanoGPT") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{path}: not a nanoGPT-layout checkpoint (holds a "
                         f"{type(ckpt).__name__}, not a dict)")
    missing = [k for k in ("model_args", "model", "iter_num") if k not in ckpt]
    if missing:
        raise ValueError(f"{path}: not a nanoGPT-layout checkpoint (missing {missing})")
    return ckpt


def mlflow_run_id(ckpt: dict[str, Any]) -> str | None:
    """The MLflow run a checkpoint's training logs to (None: untracked, or older checkpoints)."""
    return ckpt.get("mlflow_run_id") or None


def _reason(exc: Exception) -> str:
    """torch's own words, less its advice: a weights-only refusal names the real cause after
    "WeightsUnpickler error:" and then suggests weights_only=False, which we never use."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return first[:200]


def model_from_checkpoint(ckpt: dict[str, Any], device: str | torch.device = "cpu") -> GPT:
    args = {k: ckpt["model_args"][k] for k in MODEL_KEYS}
    model = GPT(GPTConfig(**args))
    model.load_state_dict(clean_state_dict(ckpt["model"]))
    return model.to(device)
