"""Short, readable names for shard sources: what the Dagster UI shows as a shard's partition
key, and what a CLI user can type, instead of a long absolute path.

A source's key is its file's stem (`fineweb-cc-main-2013-20-head300`; for a hub file
`hf://HuggingFaceFW/fineweb/data/CC-MAIN-2013-20/000_00000.parquet`, its folder and stem:
`CC-MAIN-2013-20-000_00000`), with a short hash of the source appended only when another
source already holds that name. The names live in one file under the FineGPT home
(`shard_keys.json`, written atomically under a lock), so the CLI, the sensors and the
assets agree; the same source always gets the same key back.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from finegpt_pipeline import paths
from finegpt_pipeline.atomic import write_json
from finegpt_pipeline.locks import wait_for

LOCK_WAIT_S = 60.0
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _file(home: Path | None) -> Path:
    return paths.home(home).shard_keys


def read_keys(home: Path | None = None) -> dict[str, str]:
    """key -> source, as registered (empty when none is)."""
    try:
        return json.loads(_file(home).read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise ValueError(f"{_file(home)}: not a JSON object of shard keys ({exc}); remove it and "
                         "register the shards again (`python -m assets.shards add PATH`)") from None


def proposed_key(source: str) -> str:
    """The name a source gets when it is free: the file's stem (a hub file's folder too)."""
    path = source.split("://", 1)[-1].rstrip("/")
    parts = path.split("/")
    stem = Path(parts[-1]).stem
    name = f"{parts[-2]}-{stem}" if "://" in source and len(parts) > 1 else stem
    return _UNSAFE.sub("-", name).strip("-") or "shard"


def key_of(source: str, home: Path | None = None) -> str | None:
    """The key registered for `source`, or None."""
    return next((k for k, s in read_keys(home).items() if s == source), None)


def register_key(source: str, home: Path | None = None) -> str:
    """The source's key, registered if new: its proposed name, or that name and a short hash
    of the source when another source holds it."""
    known = key_of(source, home)
    if known:
        return known
    target = _file(home)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = wait_for(target.with_suffix(".lock"), shared=False, wait_s=LOCK_WAIT_S,
                    fix="end the process registering shards, or remove the lock file")
    try:
        keys = read_keys(home)
        known = next((k for k, s in keys.items() if s == source), None)
        if known:
            return known
        key = proposed_key(source)
        if key in keys:
            key = f"{key}-{hashlib.sha256(source.encode()).hexdigest()[:6]}"
        keys[key] = source
        write_json(target, keys)
        return key
    finally:
        lock.close()


def source_for(key: str, home: Path | None = None) -> str | None:
    """The source registered under `key`, or None."""
    return read_keys(home).get(key)
