"""The GPT module back from a logged or registered model's URI (`models:/finegpt@champion`,
`models:/finegpt/3`, `models:/m-<id>`), whichever way the version was logged:

- the `finegpt` flavor (`finegpt_pipeline.evaluate.registered_model`): the model's artifact
  is the training run's `ckpt.pt`, loaded through MLflow's `python_function` flavor, whose
  loader module (named in the version's MLmodel) MLflow imports;
- the `pytorch` flavor (versions registered before): the pickled module, through
  `mlflow.pytorch.load_model`.

MLflow finds the loader by its name in MLmodel, so this module imports no stage.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

FINEGPT_FLAVOR = "finegpt"  # the flavor name in a version's MLmodel
PYTORCH_FLAVOR = "pytorch"


@contextlib.contextmanager
def fluent_store(tracking_uri: str) -> Iterator[None]:
    """MLflow's log_model/load_model read the global tracking URI: point it at this store for
    the call, then put back what it was (the variable too, which it also sets)."""
    import mlflow

    previous, env = mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


def load_gpt(tracking_uri: str, model_uri: str, device: str = "cpu", hint: str = ""):
    """The GPT module (eval mode, on `device`) that `model_uri` names in this store. A URI it
    cannot load fails in one line: the URI, the store, MLflow's reason and `hint` (the fix)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    with fluent_store(tracking_uri):
        try:
            flavors = mlflow.models.get_model_info(model_uri).flavors
            if FINEGPT_FLAVOR in flavors:
                pyfunc = mlflow.pyfunc.load_model(model_uri, model_config={"device": device})
                model = pyfunc.get_raw_model()
            elif PYTORCH_FLAVOR in flavors:
                model = mlflow.pytorch.load_model(model_uri, map_location=device)
            else:
                raise ValueError(f"{model_uri}: neither a {FINEGPT_FLAVOR!r} nor a "
                                 f"{PYTORCH_FLAVOR!r} model (flavors {sorted(flavors)}); "
                                 f"{hint or 'register a checkpoint of this project'}")
        except MlflowException as exc:  # one line: what is missing, where, and what exists
            raise ValueError(f"{model_uri}: not loadable from the MLflow store {tracking_uri} "
                             f"({exc.message.splitlines()[0][:200]})"
                             + (f"; {hint}" if hint else "")) from None
    return model.to(device).eval()
