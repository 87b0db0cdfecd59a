"""The raw shard: open and validate a FineWeb-schema parquet file."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

FINEWEB_COLUMNS = ("text", "id", "dump", "url", "date", "file_path", "language",
                   "language_score", "token_count")


class ShardError(ValueError):
    """A shard that cannot be used; the message names the file and the problem."""


def open_shard(path: str | Path) -> pq.ParquetFile:
    """Open a parquet shard, checking it is readable and has a string `text` column."""
    path = Path(path)
    if not path.exists():
        raise ShardError(f"{path}: shard file not found")
    if not path.is_file():
        raise ShardError(f"{path}: not a file")
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ShardError(f"{path}: not a readable parquet file ({exc})") from None
    schema = pf.schema_arrow
    if "text" not in schema.names:
        raise ShardError(f"{path}: no `text` column (columns: {', '.join(schema.names)})")
    text_type = schema.field("text").type
    if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
        raise ShardError(f"{path}: `text` column is {text_type}, expected a string")
    return pf


def missing_fineweb_columns(pf: pq.ParquetFile) -> list[str]:
    return [c for c in FINEWEB_COLUMNS if c not in pf.schema_arrow.names]
