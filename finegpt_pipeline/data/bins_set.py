"""Several shards' bins read as one: a **bins set**, a directory holding only `manifest.json`
that names its member bins directories (each one shard's train.bin, val.bin, meta.json).

    $FINEGPT_HOME/bins/sets/<key>/manifest.json    (`layout.Home.bin_sets`)

Training and evaluation take a set wherever they take a bins dir: `layout.read_meta` sums the
members' counts (so the planner sizes for all their tokens), `batches.BatchSource` draws
windows across the members in proportion to their size (never across a boundary), and the val
split is the union of the members' (`evaluate`, `unigram`, `champion`, the trainer's periodic
estimate). One member is no set: `write_set` returns that bins dir itself, so one shard behaves
exactly as it always has.

Documents present in more than one member (two shards that share text) are counted when the
set is written (`overlap`, kept in the manifest): a document in one member's val and another's
train makes the val loss optimistic, so the CLI and the training asset say so.

The key is a digest of the members' places and fingerprints (`layout.bins_fingerprint`): the
same finished bins give the same set, a re-tokenized member a new one, and opening a set
whose member changed after it was written fails with one line naming the manifest and the fix.
The read side (`members`, `is_set`, the summed meta) is in `layout`, which every reader imports.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from finegpt_pipeline import layout
from finegpt_pipeline.config import EOT_TOKEN
from finegpt_pipeline.atomic import write_json
from finegpt_pipeline.layout import MANIFEST_NAME, is_set, json_digest, members  # noqa: F401 (the contract's names)
from finegpt_pipeline.locks import read_bins_lock

MANIFEST_VERSION = 1
KEY_CHARS = 16
SPLITS = ("train", "val")


def write_set(bin_dirs, root: str | Path) -> Path:
    """The bins set of `bin_dirs` (bins dirs, or sets, whose members join) under `root`: one
    distinct member is returned as itself; two or more, each verified as finished bins, get
    `root/<key>/manifest.json` (atomic; an identical one already there is left as it is)."""
    dirs = sorted({member.resolve() for d in bin_dirs for member in layout.members(d)},
                  key=str)
    if not dirs:
        raise ValueError("bins set: no bins directories given; pass at least one")
    records = [_verified_record(d) for d in dirs]
    if len(records) == 1:
        return dirs[0]
    out = Path(root).resolve() / json_digest([[r["dir"], r["fingerprint"]] for r in records],
                                             KEY_CHARS)
    path = out / MANIFEST_NAME
    try:
        existing = json.loads(path.read_text())
        if existing.get("members") == records and "overlap" in existing:
            return out  # written before: the same members, their overlap already counted
    except (OSError, ValueError, AttributeError):
        pass
    write_json(path, {"version": MANIFEST_VERSION, "members": records,
                      "overlap": overlap([Path(r["dir"]) for r in records])})
    return out


def read_overlap(bins_dir: str | Path) -> dict | None:
    """The overlap a bins set's manifest recorded; None for one shard's bins or an older set."""
    if not is_set(bins_dir):
        return None
    try:
        return json.loads((Path(bins_dir) / MANIFEST_NAME).read_text()).get("overlap")
    except (OSError, ValueError, AttributeError):
        return None


def _document_digests(bin_file: Path) -> set[bytes]:
    """A digest of each document's token ids in a split file (EOT before each document)."""
    ids = np.memmap(bin_file, dtype=np.uint16, mode="r") if bin_file.stat().st_size else \
        np.zeros(0, dtype=np.uint16)
    starts = np.flatnonzero(ids == EOT_TOKEN).tolist() + [len(ids)]
    return {hashlib.blake2b(ids[a + 1:b].tobytes(), digest_size=12).digest()
            for a, b in zip(starts, starts[1:]) if b > a + 1}


def overlap(dirs: list[Path]) -> dict:
    """Documents (identical token ids) found in more than one member: `shared` in all, and
    `val_in_other_train`, the val documents of one member that another member trains on."""
    digests = [{split: _document_digests(layout.bin_path(d, split)) for split in SPLITS}
               for d in dirs]
    seen: dict[bytes, set[int]] = {}
    for i, member in enumerate(digests):
        for split in SPLITS:
            for digest in member[split]:
                seen.setdefault(digest, set()).add(i)
    leaked = sum(1 for i, member in enumerate(digests) for digest in member["val"]
                 if any(digest in other["train"] for j, other in enumerate(digests) if j != i))
    return {"shared": sum(1 for owners in seen.values() if len(owners) > 1),
            "val_in_other_train": leaked}


def overlap_warning(found: dict | None) -> str | None:
    """One line for a user when members share documents; None when they do not."""
    if not found or not found.get("shared"):
        return None
    leak = found.get("val_in_other_train", 0)
    return (f"{found['shared']:,} documents appear in more than one shard"
            + (f", {leak:,} of them in one shard's val and another's train, so the val loss is "
               "optimistic" if leak else "") + "; deduplicate the shards to measure on unseen text")


def _verified_record(bins_dir: Path) -> dict:
    """A member's manifest record, read under its shared lock (not while it is tokenized)."""
    if not bins_dir.is_dir():
        raise FileNotFoundError(f"{bins_dir}: bins directory not found")
    lock = read_bins_lock(bins_dir, layout.LOCK_NAME, "retry when it has finished")
    try:
        return layout.member_record(bins_dir, layout.verify_files(bins_dir))
    finally:
        if lock is not None:
            lock.close()


# ---------------------------------------------------------------- CLI


def _handle(args: argparse.Namespace) -> int:
    from finegpt_pipeline import paths

    named = [str(member.resolve()) for d in args.dirs for member in layout.members(d)]
    twice = sorted({d for d in named if named.count(d) > 1})
    if twice:  # a typo more likely than intent: say so rather than merge silently
        raise ValueError(f"{', '.join(twice)}: given more than once; name each shard's bins once")
    location = write_set(args.dirs, paths.home(args.home).bin_sets)
    warning = overlap_warning(read_overlap(location))
    if warning:
        print(f"finegpt bins-set: warning: {warning}", file=sys.stderr)
    print(location)
    return 0


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("bins-set", help="read several bins dirs as one (prints its dir)",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+", metavar="DIR", help="bins directory (or bins set)")
    p.add_argument("--home", help="FINEGPT_HOME to write the set under (default: the "
                   "environment's); the set goes to HOME/bins/sets/<key>")
    p.set_defaults(func=_handle)
