"""FineGPT engine: plain Python stages from a FineWeb shard to a trained, evaluated GPT.

One package per stage, in the order of the asset chain: `data` (shard, token statistics,
nanoGPT bins), `plan` (model, batch and schedule sized to the hardware and the data), `train`
(the trainer, its run directory and checkpoints), `evaluate` (the eval report, the registry and
the champion); `tracking` (MLflow) and the root modules (config, layout, paths, model, runtime,
hardware, atomic writes, locks, the CLI) are shared by all. A stage imports only earlier
stages and the shared modules (tests/test_import_graph.py holds it).

No Dagster here, so every stage runs from a notebook, the `finegpt` CLI or `torchrun`; the one
exception is `dagster_pipes` (a dependency-free package), imported lazily by the trainer's
reporter only when Dagster launched it through Pipes, to stream its logs and metrics back. The
Dagster code location in `assets/` wraps the engine.
"""

__version__ = "0.1.0"
