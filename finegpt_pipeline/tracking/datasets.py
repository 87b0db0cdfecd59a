"""The pipeline's data as MLflow dataset inputs (`mlflow.log_input` lineage): the raw shard
(source, sha256, rows) and the bins (train.bin / val.bin, tokens).

MLflow's dataset digest is a String(36) column in its SQL schema (Postgres enforces it), too
short for a 64-hex sha256: a shard's digest is its sha256's first 32 hex digits
(`shard_digest`, what raw_shard's Dagster metadata shows as `mlflow_dataset_digest` beside the
full `sha256`), and the full sha256 is the input's `sha256` tag. MLflow keeps one dataset per
(name, digest) in an experiment and shows a later run the first one's source: equal bytes are
one shard, while the bins' digest (`layout.bins_fingerprint`) holds their directory, so equal
bins elsewhere (a copy, another FINEGPT_HOME) name their own.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from finegpt_pipeline import layout

DIGEST_CHARS = 32  # fits MLflow's String(36) digest column
SHARD_DATASET = "raw_shard"
CONTEXT_TAG = "mlflow.data.context"


def shard_digest(sha256: str) -> str:
    return sha256[:DIGEST_CHARS]


def _source(uri: str):
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    with warnings.catch_warnings():
        # a local path matches two registered local sources; both are the same class
        warnings.simplefilter("ignore", UserWarning)
        return resolve_dataset_source(uri)


def _dataset(uri: str, name: str, digest: str, profile: dict[str, Any]):
    from mlflow.data.meta_dataset import MetaDataset

    class Counted(MetaDataset):
        """A dataset known by its metadata, with its size as the profile the UI shows."""

        @property
        def profile(self):
            return profile

        def to_dict(self):
            return {**super().to_dict(), "profile": json.dumps(profile)}

    return Counted(_source(uri), name=name, digest=digest)


def shard_input(source: str, sha256: str, rows: int | None):
    """(dataset, tags) of a raw shard: `source` is the shard's local path or hf:// URL."""
    profile = {"rows": rows} if rows is not None else {}
    uri = source if "://" in source else str(Path(source).resolve())
    return _dataset(uri, SHARD_DATASET, shard_digest(sha256), profile), {"sha256": sha256}


def bins_inputs(bins_dir: str | Path, splits: tuple[str, ...] = layout.SPLITS) -> list:
    """(dataset, tags) for each split's .bin (tokens), and the shard the bins came from when
    their meta.json names it (bins made by `finegpt tokenize` or tokenized_bins). A bins set:
    each member's, as for that bins dir, tagged with the set."""
    if layout.is_set(bins_dir):
        tag = {"bins_set": str(Path(bins_dir).resolve())}
        return [(dataset, {**tags, **tag}) for member in layout.members(bins_dir)
                for dataset, tags in bins_inputs(member, splits)]
    bins_dir = Path(bins_dir).resolve()
    meta = layout.read_meta(bins_dir)
    digest = layout.bins_fingerprint(bins_dir)
    out = []
    if meta.get("source_sha256"):
        source = meta.get("source_uri") or layout.shard_path_of(meta)
        rows = meta.get("source_rows")
        if rows is None and isinstance(meta.get("train_docs"), int):
            rows = meta["train_docs"] + meta.get("val_docs", 0)
        out.append(shard_input(str(source), meta["source_sha256"], rows))
    for split in splits:
        path = layout.bin_path(bins_dir, split)
        out.append((_dataset(str(path), f"tokenized_bins/{split}", digest,
                             {"tokens": meta.get(f"{split}_tokens")}),
                    {"split": split, "bins_dir": str(bins_dir)}))
    return out


def log_inputs(client, run_id: str, inputs: list, context: str) -> None:
    """Log (dataset, tags) pairs as the run's inputs, used in `context` (training, ...)."""
    from mlflow.entities import DatasetInput, InputTag

    entities = [DatasetInput(dataset._to_mlflow_entity(),
                             [InputTag(CONTEXT_TAG, context),
                              *(InputTag(k, str(v)) for k, v in tags.items())])
                for dataset, tags in inputs]
    client.log_inputs(run_id, datasets=entities)
