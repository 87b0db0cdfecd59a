"""FineGPT engine: plain Python stages from a FineWeb shard to a trained GPT.

No Dagster import anywhere in this package: every stage is usable from a notebook,
the `finegpt` CLI or `torchrun`. The Dagster code location in `assets/` wraps it.
"""

__version__ = "0.1.0"
