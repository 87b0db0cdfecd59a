"""Where every artifact lives: the directories under FINEGPT_HOME, the files of a bins
directory, its `meta.json` reader, and the one answer to "have the bins changed?".

    $FINEGPT_HOME/
      warehouse.duckdb             token statistics (`stats`, `warehouse`)
      shards/                      heads of shards cut by `max_docs` / `max_row_groups`
      incoming/                    new parquet shards, registered by the incoming sensor
      reports/                     token-length histograms
      reports/eval/<run key>/      eval_report: report.json/.md/.html, loss_curve.png
      bins/<key>/                  tokenized_bins: train.bin, val.bin, meta.json, .lock
      bins/sets/<key>/             a bins set: manifest.json naming several bins dirs (`bins_set`)
      token_ids/<sha16>/           a shard's GPT-2 ids, tokenized once (`token_ids`)
      plans/                       training_config's plans
      runs/trained_checkpoint/<key>/  a training run (its files: `run_dir`)
      hardware/<machine-id>/       this machine's measurements (`hardware.cached_measurement`)
      mlflow.db, mlartifacts/      the default MLflow store

Light on purpose (no pyarrow, tiktoken or torch): the trainer, the planner and the Dagster
code location all read it. The environment contract (which FINEGPT_HOME) is `paths`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finegpt_pipeline.atomic import write_json
from finegpt_pipeline.config import EOT_TOKEN, GPT2_VOCAB_SIZE

# ---------------------------------------------------------------- FINEGPT_HOME


@dataclass(frozen=True)
class Home:
    """The artifact tree under one FINEGPT_HOME (`paths.home()` for the environment's)."""

    root: Path

    @property
    def warehouse(self) -> Path:
        """The persistent DuckDB file holding token statistics, keyed by shard."""
        return self.root / "warehouse.duckdb"

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    @property
    def shard_keys(self) -> Path:
        """Each registered shard source's short name (`data.shard_keys`)."""
        return self.root / "shard_keys.json"

    @property
    def shard_hashes(self) -> Path:
        """Each shard file version's sha256, read once (`data.shard.verified_sha256`)."""
        return self.root / "hashes"

    @property
    def incoming(self) -> Path:
        """Where the incoming_shards_sensor looks for new parquet shards."""
        return self.root / "incoming"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def eval_reports(self) -> Path:
        """eval_report's reports, one directory per training run (named as its run directory)."""
        return self.reports / "eval"

    @property
    def bins(self) -> Path:
        return self.root / "bins"

    @property
    def bin_sets(self) -> Path:
        """Bins sets (`bins_set.write_set`): several shards' bins read as one."""
        return self.bins / "sets"

    def forecast_points(self, val_sha256: str) -> Path:
        """(N, D, val loss) of the runs evaluated on one val.bin, as eval_report last saw them:
        the loss forecast's fit points, read by the planner."""
        return self.root / "forecast" / f"points-{val_sha256[:16]}.json"

    @property
    def plans(self) -> Path:
        return self.root / "plans"

    def plan_file(self, plan: dict) -> Path:
        """Where `training_config` keeps a plan: named by its content, so an unchanged plan is
        the same file (`json_digest`)."""
        return self.plans / f"plan-{json_digest(plan, 12)}.json"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def trained_runs(self) -> Path:
        """trained_checkpoint's run directories, one per run key."""
        return self.runs / "trained_checkpoint"

    @property
    def hardware(self) -> Path:
        """Per-machine hardware measurements (matmul rate, calibration probes), reused by plans."""
        return self.root / "hardware"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlartifacts(self) -> Path:
        """Where a default (SQLite) MLflow store keeps artifacts: beside it, not in the cwd."""
        return self.root / "mlartifacts"

    @property
    def token_ids(self) -> Path:
        """Shards' GPT-2 ids as token_stats tokenized them, for tokenized_bins (`token_ids`)."""
        return self.root / "token_ids"


# ---------------------------------------------------------------- a bins directory

SPLITS = ("train", "val")
BIN_NAMES = tuple(f"{split}.bin" for split in SPLITS)  # ("train.bin", "val.bin")
META_NAME = "meta.json"  # written last by the tokenize stage: the marker of complete bins
LOCK_NAME = ".lock"  # shared by trainings reading the bins, exclusive while tokenizing


def bins_key(source_sha256: str, val_fraction: float, min_val_docs: int | None) -> str:
    """A bins directory's name under `Home.bins`: the shard's content and the split settings,
    so bins of another split never land in (or replace) the directory a training reads."""
    min_docs = "auto" if min_val_docs is None else min_val_docs
    return f"{source_sha256[:12]}-val{val_fraction:g}-min{min_docs}"


def bin_path(bins_dir: str | Path, split: str) -> Path:
    return Path(bins_dir) / f"{split}.bin"


def read_meta(bins_dir: str | Path) -> dict:
    """The bins' meta.json; its absence means the bins are missing or were never finished.
    A bins set's: its members' summed (`summed_meta`)."""
    if is_set(bins_dir):
        return summed_meta(member_metas(bins_dir))
    return _read_dir_meta(bins_dir)


def _read_dir_meta(bins_dir: str | Path) -> dict:
    meta_path = Path(bins_dir) / META_NAME
    try:
        return json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{meta_path}: no meta.json (bins missing or incomplete; run "
                                "`finegpt tokenize SHARD --out DIR` or tokenized_bins)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{meta_path}: not valid JSON ({exc})") from None


def meta_source(bins_dir: str | Path) -> str:
    """The file `read_meta` reads, for messages: meta.json, or a bins set's manifest.json."""
    return str(Path(bins_dir) / (MANIFEST_NAME if is_set(bins_dir) else META_NAME))


def verify_files(bins_dir: str | Path) -> dict:
    """meta.json, once train.bin and val.bin are there, uint16-sized, and hold exactly the token
    counts meta.json records (bins and meta.json of one run); else one line naming the file.
    A bins set: every member verified, their summed meta."""
    if is_set(bins_dir):
        return summed_meta(member_metas(bins_dir, verify=True))
    return _verify_dir(bins_dir)


def _verify_dir(bins_dir: str | Path) -> dict:
    bins_dir = Path(bins_dir)
    meta = _read_dir_meta(bins_dir)
    for split in SPLITS:
        path, key = bin_path(bins_dir, split), f"{split}_tokens"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (expected nanoGPT-format uint16 tokens)")
        size = path.stat().st_size
        if size % 2:
            raise ValueError(f"{path}: odd byte size, not a uint16 token file")
        if not isinstance(meta.get(key), int):
            raise ValueError(f"{bins_dir / META_NAME}: no integer {key}; re-run `finegpt tokenize`"
                             " (or layout.write_meta for bins made elsewhere)")
        if size // 2 != meta[key]:
            raise ValueError(f"{path}: {size // 2:,} tokens, but meta.json records {meta[key]:,}: "
                             "bins and meta.json are not from one run; re-run `finegpt tokenize`")
    return meta


def write_meta(bins_dir: str | Path, **fields) -> dict:
    """meta.json for bins written by other means (test fixtures, benchmarks, plain nanoGPT
    bins): token counts from the files' sizes, GPT-2's vocabulary; `fields` add to it."""
    bins_dir = Path(bins_dir)
    meta = {"vocab_size": GPT2_VOCAB_SIZE, "eot_token": EOT_TOKEN, "dtype": "uint16",
            **{f"{split}_tokens": bin_path(bins_dir, split).stat().st_size // 2
               for split in SPLITS}, **fields}
    write_json(bins_dir / META_NAME, meta)
    return meta


def shard_path_of(meta: dict) -> str:
    """The local parquet file the bins were tokenized from (`source_path`; bins written before
    it was named so call it `source`)."""
    return meta.get("source_path") or meta["source"]


def sha256_file(path: str | Path) -> str:
    """A file's content hash (hex), read in 1 MiB blocks: the one every stage uses."""
    return _sha256_of([path])


def _sha256_of(paths: list) -> str:
    """The sha256 of the files' bytes one after another, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def bins_fingerprint(bins_dir: str | Path) -> str:
    """Have the bins changed? A digest of where they are (resolved), their meta.json and the
    files' sizes: equal bins in another directory (a copy, another FINEGPT_HOME) differ.
    Missing files count as empty, so it never fails. A bins set's digests its manifest and
    its members' fingerprints as they are now."""
    bins_dir = Path(bins_dir)
    if is_set(bins_dir):
        try:
            text = "set|" + (bins_dir / MANIFEST_NAME).read_text()
            dirs = [record["dir"] for record in _manifest(bins_dir)]
        except (OSError, ValueError):
            text, dirs = f"set|{bins_dir.resolve()}|unreadable", []
        text += "".join(f"|{bins_fingerprint(d)}" for d in dirs)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
    meta = bins_dir / META_NAME
    text = str(bins_dir.resolve()) + "|" + (meta.read_text() if meta.exists() else "")
    for split in SPLITS:
        path = bin_path(bins_dir, split)
        text += f"|{split}:{path.stat().st_size if path.exists() else 0}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def json_digest(obj: Any, chars: int) -> str:
    """The first `chars` hex digits of the sha256 of `obj` as canonical JSON (sorted keys): the
    one way a name or a key is derived from a JSON value. `chars` is part of names already on
    disk (run directories, bins sets, machine ids, probes), so each caller keeps its own."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:chars]


def val_sha256(bins_dir: str | Path) -> str:
    """The val split's content hash: val.bin's sha256; a bins set's, that of its members'
    val.bin bytes concatenated in manifest order (what a merged val.bin would hash to)."""
    return _sha256_of([bin_path(member, "val") for member in members(bins_dir)])


# ---------------------------------------------------------------- a bins set (read side)
# A directory holding only manifest.json (written by `bins_set.write_set`), naming the bins
# directories read as one: token counts summed, training windows drawn across them, val their
# union. The members are recorded with their fingerprints: a member changed since refuses.

MANIFEST_NAME = "manifest.json"
SET_FIX = "write the set again from its members' current bins (bins_set.write_set or `finegpt bins-set DIR DIR ...`)"


def is_set(path: str | Path) -> bool:
    """Whether `path` is a bins set (a manifest.json, no meta.json) rather than a bins dir."""
    path = Path(path)
    return (path / MANIFEST_NAME).is_file() and not (path / META_NAME).exists()


def _manifest(set_dir: Path) -> list[dict]:
    """The manifest's member records; a malformed one is one line naming it."""
    path = set_dir / MANIFEST_NAME
    try:
        records = json.loads(path.read_text())["members"]
        if not (isinstance(records, list) and records
                and all(isinstance(r, dict) and {"dir", "fingerprint"} <= r.keys() for r in records)):
            raise ValueError("members is not a list of {dir, fingerprint, ...} records")
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a bins set manifest ({exc}); {SET_FIX}") from None
    return records


def members(bins_dir: str | Path) -> list[Path]:
    """A bins set's member directories in manifest order, each checked against the fingerprint
    the manifest recorded; a plain bins dir is its own one member."""
    bins_dir = Path(bins_dir)
    if not is_set(bins_dir):
        return [bins_dir]
    path, out = bins_dir / MANIFEST_NAME, []
    for record in _manifest(bins_dir):
        member = Path(record["dir"])
        if not (member / META_NAME).is_file():
            raise FileNotFoundError(f"{path}: member {member} is gone (no meta.json); {SET_FIX}")
        if bins_fingerprint(member) != record["fingerprint"]:
            raise ValueError(f"{path}: member {member} changed since the set was written "
                             f"(re-tokenized?); {SET_FIX}")
        out.append(member)
    return out


def member_metas(bins_dir: str | Path, verify: bool = False) -> list[tuple[Path, dict]]:
    """(dir, meta.json) of each member, files verified with `verify` (`verify_files`)."""
    read = _verify_dir if verify else _read_dir_meta
    return [(member, read(member)) for member in members(bins_dir)]


def member_record(member: Path, meta: dict) -> dict:
    """What a manifest records of one member (and a set's summed meta lists)."""
    record = {"dir": str(Path(member).resolve()), "train_tokens": meta.get("train_tokens"),
              "val_tokens": meta.get("val_tokens"), "fingerprint": bins_fingerprint(member)}
    if meta.get("source_sha256"):
        record["source_sha256"] = meta["source_sha256"]
    return record


def summed_meta(parts: list[tuple[Path, dict]]) -> dict:
    """A bins set's meta: the members' token and document counts summed, the largest vocab_size,
    and the members' records (`member_record`) under "members"."""
    metas = [meta for _, meta in parts]
    out = {"vocab_size": max(int(m.get("vocab_size", GPT2_VOCAB_SIZE)) for m in metas),
           "eot_token": metas[0].get("eot_token", EOT_TOKEN), "dtype": "uint16",
           "members": [member_record(d, m) for d, m in parts]}
    for key in ("train_tokens", "val_tokens", "train_docs", "val_docs"):
        values = [m.get(key) for m in metas]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            out[key] = sum(values)
    return out
