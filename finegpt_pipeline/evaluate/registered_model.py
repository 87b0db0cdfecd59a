"""A registered version as an MLflow model whose one weighty artifact is the training run's
`ckpt.pt` itself (nanoGPT's layout, not a re-pickled module), and its loader.

The model directory (a logged model of the training run) holds:

    ckpt.pt            the checkpoint (a hard link to the run's file where the store is local)
    MLmodel            flavors `finegpt` and `python_function` (loader: this module)
    requirements.txt, python_env.yaml, conda.yaml

`mlflow.pyfunc.load_model("models:/finegpt@champion")` imports this module and calls
`_load_pyfunc`: the result generates text (`predict`, the same path as `finegpt sample`) and
hands out the GPT module (`get_raw_model()`); `tracking.models.load_gpt` returns that module.
Loading needs this package importable and reads the checkpoint with `weights_only=True`.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from finegpt_pipeline.evaluate import sample
from finegpt_pipeline.tracking.models import FINEGPT_FLAVOR
from finegpt_pipeline.train import checkpoint

CKPT_FILE = checkpoint.CKPT_NAME  # the checkpoint's name inside the model directory
# what `predict` takes as params, with `sample.generate`'s defaults
PARAM_NAMES = ("max_new_tokens", "temperature", "top_k", "seed")


def _defaults() -> dict[str, Any]:
    params = inspect.signature(sample.generate).parameters
    return {name: params[name].default for name in PARAM_NAMES}


def signature():
    """Input: prompts (strings: a list, or a DataFrame's one column); output: one generated
    text each; params: the sampling settings (`top_k` 0 means all tokens)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    types = {int: "long", float: "double"}
    return ModelSignature(
        inputs=Schema([ColSpec("string")]), outputs=Schema([ColSpec("string")]),
        params=ParamSchema([ParamSpec(name, types[type(value)], value)
                            for name, value in _defaults().items()]))


def save_model(path: str | Path, mlflow_model, pip_requirements: list[str], iter_num: int,
               **_ignored) -> None:
    """The model directory at `path` without the checkpoint, which the registry places beside
    it once (`registry._log_model`); `mlflow.models.Model.log` calls this as a flavor's."""
    import yaml
    from mlflow import pyfunc
    from mlflow.models.model import MLMODEL_FILE_NAME
    from mlflow.utils.environment import (_CONDA_ENV_FILE_NAME, _PYTHON_ENV_FILE_NAME,
                                          _REQUIREMENTS_FILE_NAME, _mlflow_conda_env,
                                          _PythonEnv)

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    mlflow_model.signature = signature()
    mlflow_model.add_flavor(FINEGPT_FLAVOR, checkpoint=CKPT_FILE, iter_num=int(iter_num),
                            layout="nanoGPT ckpt.pt")
    pyfunc.add_to_model(mlflow_model, loader_module=__name__, data=CKPT_FILE,
                        conda_env=_CONDA_ENV_FILE_NAME, python_env=_PYTHON_ENV_FILE_NAME,
                        model_config={"device": "cpu"})
    mlflow_model.save(str(path / MLMODEL_FILE_NAME))
    (path / _REQUIREMENTS_FILE_NAME).write_text("\n".join(pip_requirements) + "\n")
    with open(path / _CONDA_ENV_FILE_NAME, "w") as f:
        yaml.safe_dump(_mlflow_conda_env(additional_pip_deps=pip_requirements), f,
                       default_flow_style=False)
    _PythonEnv.current().to_yaml(os.fspath(path / _PYTHON_ENV_FILE_NAME))


class CheckpointSampler:
    """What `mlflow.pyfunc.load_model` returns inside its PyFuncModel: the checkpoint's GPT."""

    def __init__(self, model):
        self.model = model

    def get_raw_model(self):
        return self.model

    def predict(self, model_input, params: dict[str, Any] | None = None) -> list[str]:
        """One text per prompt (a list, a string, or a DataFrame's `prompt` or first column),
        sampled as `finegpt sample` samples: the same seed gives the same text."""
        settings = {**_defaults(), **(params or {})}
        device = next(self.model.parameters()).device.type
        if hasattr(model_input, "columns"):  # a DataFrame
            prompts = list(model_input["prompt"] if "prompt" in model_input.columns
                           else model_input.iloc[:, 0])
        else:
            prompts = [model_input] if isinstance(model_input, str) else list(model_input)
        return [sample.generate(self.model, str(p), int(settings["max_new_tokens"]),
                                float(settings["temperature"]), int(settings["top_k"]) or None,
                                1, int(settings["seed"]), device)[0] for p in prompts]


def _load_pyfunc(path: str, model_config: dict[str, Any] | None = None) -> CheckpointSampler:
    """MLflow's hook: `path` is the model directory's checkpoint."""
    device = (model_config or {}).get("device") or "cpu"
    model = checkpoint.model_from_checkpoint(checkpoint.load(path), device)
    return CheckpointSampler(model.eval())
