"""Generate a FineWeb-schema parquet shard of any size from real FineWeb documents.

Each synthetic document takes the paragraph count of a random real document and fills it
with paragraphs drawn (seeded RNG) from the whole real sample, so BPE sees real web text
and snappy sees text that compresses like the real shard. Metadata columns are copied from
the drawn real document; `token_count` is the sum of the drawn paragraphs' tiktoken counts plus
one per newline (close to, not exactly, the recount: generating must stay much cheaper than
tokenizing). For benchmarks and tests only: never commit generated files.

    python -m finegpt_pipeline.data.synthetic SOURCE.parquet OUT.parquet --size 1GB [--seed 0]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from finegpt_pipeline.data import tokenizer
from finegpt_pipeline.atomic import atomic_path
from finegpt_pipeline.data.shard import FINEWEB_COLUMNS, ShardError, missing_fineweb_columns, open_shard

ROWS_PER_GROUP = 1000  # FineWeb's writer (datatrove) flushes a row group every 1000 documents
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
    """'1GB' -> 10**9, '300MiB' -> 300 * 2**20, '5000' -> 5000."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in _UNITS:
        raise ValueError(f"size {text!r}: expected a number with an optional unit (B, KB, MB, GB, KiB, MiB, GiB)")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def generate_shard(source: str | Path, out_path: str | Path, target_bytes: int, seed: int = 0,
                   rows_per_group: int = ROWS_PER_GROUP) -> dict:
    """Write at least `target_bytes` of parquet to `out_path` (atomically); returns a summary."""
    source, out_path = Path(source), Path(out_path)
    pf = open_shard(source)
    if missing := missing_fineweb_columns(pf):
        raise ShardError(f"{source}: not FineWeb-schema, missing columns {', '.join(missing)}")
    real = pf.read(columns=list(FINEWEB_COLUMNS))
    schema = real.schema
    paragraphs = [p for text in real.column("text").to_pylist() for p in (text or "").split("\n")]
    paragraph_counts = np.array([(t or "").count("\n") + 1 for t in real.column("text").to_pylist()])
    paragraph_tokens = np.array(tokenizer.count_tokens(paragraphs), dtype=np.int64)
    rng = np.random.default_rng(seed)
    rows = groups = text_bytes = tokens = 0

    with atomic_path(out_path) as tmp:
        with pq.ParquetWriter(tmp, schema, compression="snappy") as writer:
            while tmp.stat().st_size < target_bytes:
                donors = rng.integers(real.num_rows, size=rows_per_group)
                picks = [rng.integers(len(paragraphs), size=paragraph_counts[d]) for d in donors]
                texts = ["\n".join([paragraphs[i] for i in pick]) for pick in picks]
                counts = [int(paragraph_tokens[pick].sum()) + len(pick) - 1 for pick in picks]
                table = real.take(pa.array(donors)).set_column(0, "text", pa.array(texts, pa.string()))
                table = table.set_column(schema.get_field_index("token_count"), "token_count",
                                         pa.array(counts, pa.int64()))
                writer.write_table(table, row_group_size=rows_per_group)
                rows += rows_per_group
                groups += 1
                text_bytes += sum(len(t.encode("utf-8")) for t in texts)
                tokens += sum(counts)
                # The writer flushes each row group; the file size is what's on disk so far.
        size = tmp.stat().st_size
    return {"path": str(out_path), "bytes": size, "rows": rows, "row_groups": groups,
            "text_bytes": text_bytes, "tokens": tokens, "seed": seed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m finegpt_pipeline.data.synthetic", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="real FineWeb-schema parquet to resample")
    parser.add_argument("out", help="parquet file to write")
    parser.add_argument("--size", default="100MB", help="minimum file size (default 100MB)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows-per-group", type=int, default=ROWS_PER_GROUP)
    args = parser.parse_args(argv)
    try:
        print(generate_shard(args.source, args.out, parse_size(args.size), args.seed, args.rows_per_group))
    except (FileNotFoundError, ValueError) as exc:
        print(f"synthetic: error: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
