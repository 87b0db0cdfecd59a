"""The champion regression check's engine: a registered version's val loss on a val.bin
(recorded in its `finegpt.eval.*` tags when measured on these very bins, else measured now
with `evaluate.measure_on_bins`) and the rule that says whether a model regressed.

The regression rule (`compare`): this model regressed against the champion when its val loss
exceeds the champion's, measured on the same val.bin, by more than `tolerance_abs` nats AND by
more than `tolerance_se` standard errors of the difference, sqrt(se_this^2 + se_champion^2)
(the se's as if independent: the same tokens make the losses correlated, so this overstates
the difference's se and errs towards passing). With no finite se, the nats bound alone decides.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from finegpt_pipeline import evaluate, layout, registry

def measure(model, bins_dir: str | Path, device: str = "cpu") -> dict[str, Any]:
    """`model`'s val loss, se and bpb on every token of `bins_dir`'s val.bin (a bins set's: its
    members' together), as eval_report measures it (`evaluate.measure_on_bins`)."""
    numbers, _, _ = evaluate.measure_on_bins(model, bins_dir, device)
    return {**{k: numbers[k] for k in ("val_loss", "val_loss_se", "val_bpb", "tokens")},
            "bins_fingerprint": layout.bins_fingerprint(bins_dir),
            "bins_dir": str(Path(bins_dir).resolve())}


def numbers_on(tracking_uri: str, info: dict[str, Any], bins_dir: str | Path,
               device: str = "cpu") -> dict[str, Any]:
    """Version `info`'s val loss and se on `bins_dir`'s val.bin: as recorded when it was
    measured on these very bins (same `layout.bins_fingerprint`), else measured now (the
    registered model, loaded through its models:/ URI) and recorded for next time.
    `source` says which."""
    recorded = registry.recorded_eval(info)
    if recorded is not None and recorded["bins_fingerprint"] == layout.bins_fingerprint(bins_dir):
        return {**recorded, "source": "recorded on the same bins"}
    model = registry.load(tracking_uri, info["model_uri"], device)
    numbers = measure(model, bins_dir, device)
    registry.record_eval(tracking_uri, info["version"], numbers)
    return {**numbers, "source": "evaluated now on these bins"}


def compare(this: dict[str, Any], champ: dict[str, Any], tolerance_se: float,
            tolerance_abs: float) -> dict[str, Any]:
    """The regression rule of the module docstring, with its numbers."""
    diff = float(this["val_loss"]) - float(champ["val_loss"])
    se = math.sqrt(float(this["val_loss_se"]) ** 2 + float(champ["val_loss_se"]) ** 2)
    diff_se = diff / se if math.isfinite(se) and se > 0 else math.nan
    beyond_se = diff_se > tolerance_se if math.isfinite(diff_se) else True
    return {"diff_nats": diff, "diff_se": diff_se, "se_of_diff": se,
            "regressed": bool(diff > tolerance_abs and beyond_se)}
