"""How the assets' metadata reads in the Dagster UI: one place for owners, rounding, sizes,
links, paths and hashes.

The UI prints a float with all its digits and an int of bytes as it is; these helpers give
rounded floats and human sizes (the raw int stays beside them under a `_bytes` key).

Beside an asset's Definition panel the UI leaves ~400 px (~48 monospace characters) for a
value, and breaks a long value only at spaces and hyphens: one longer word widens the whole
table, which then scrolls sideways and hides the end of every wrapped value (the verdict's).
So a URL is a short Markdown link (`link`), a path under FINEGPT_HOME reads relative to it
(`home_path`), and a sha256 shows its first 16 hex digits (`short_sha256`; the full one is in
the files and runs the value names)."""

from __future__ import annotations

import math
from pathlib import Path

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


def link(label: str, url: str) -> dg.MetadataValue:
    """`url` as a link reading `label`: a Markdown value, which the UI shows inline."""
    return dg.MetadataValue.md(f"[{label}]({url})")


def link_url(value) -> str | None:
    """The URL of a `link` (or of an older `MetadataValue.url`) as the event log returns it."""
    text = getattr(value, "value", value)
    if not isinstance(text, str):
        return None
    return text[text.rindex("](") + 2:-1] if text.startswith("[") and text.endswith(")") else text


def home_path(path: str | Path, home: Path) -> dg.MetadataValue:
    """A path as the UI shows it: relative to `home` (the FINEGPT_HOME root) when under it
    (`runs/...`, `bins/...`, `plans/...`, `reports/...`), else as given."""
    path, root = Path(path).resolve(), Path(home).resolve()
    return dg.MetadataValue.path(str(path.relative_to(root)) if path.is_relative_to(root)
                                 else str(path))


def short_sha256(sha256: str) -> dg.MetadataValue:
    """A sha256 as the UI shows it: its first 16 hex digits and an ellipsis."""
    return dg.MetadataValue.text(sha256[:16] + "…")
