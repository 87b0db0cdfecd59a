"""How the assets' metadata reads in the Dagster UI: one place for owners, rounding, sizes.

The UI prints a float with all its digits and an int of bytes as it is; these helpers give
rounded floats and human sizes (the raw int stays beside them under a `_bytes` key)."""

from __future__ import annotations

import math

import dagster as dg

OWNERS = ["team:finegpt"]
# The UI shows a Markdown value inline only under this many characters (else "[Show Markdown]").
INLINE_MARKDOWN_CHARS = 1000


def significant(value: float, digits: int = 4) -> float:
    """`value` rounded to `digits` significant digits (NaN and inf unchanged)."""
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def float_value(value: float, digits: int = 4) -> dg.MetadataValue:
    return dg.MetadataValue.float(significant(float(value), digits))


def human_bytes(n: int) -> str:
    """Decimal units, as file managers and the hub print sizes: 2_150_000_000 -> '2.15 GB'."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n} B" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def size_entries(key: str, n: int) -> dict[str, dg.MetadataValue]:
    """`key`: '2.15 GB' and `key_bytes`: the exact count."""
    return {key: dg.MetadataValue.text(human_bytes(n)), f"{key}_bytes": dg.MetadataValue.int(int(n))}
