"""Resources: where artifacts live and where runs are tracked. Empty fields fall back to the
engine's environment contract (FINEGPT_HOME, MLFLOW_TRACKING_URI); the tree under the home is
`finegpt_pipeline.layout.Home`. Which shard a run reads is its `shards` partition
(assets/partitions.py)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from finegpt_pipeline import paths
from finegpt_pipeline.layout import Home


class FineGPTHome(dg.ConfigurableResource):
    """Where artifacts live: the tree `finegpt_pipeline.layout.Home` under `root` (empty: the
    environment's FINEGPT_HOME), and the sensor's incoming directory."""

    root: str = ""
    incoming: str = ""  # the incoming_shards_sensor's directory; empty: <home>/incoming

    def home(self) -> Home:
        return paths.home(self.root or None)

    def incoming_dir(self) -> Path:
        return Path(self.incoming).resolve() if self.incoming else self.home().incoming

    def mlflow_tracking_uri(self) -> str:
        """MLFLOW_TRACKING_URI, else the SQLite store under this home."""
        return paths.mlflow_tracking_uri(self.home().root)


class ChampionPolicy(dg.ConfigurableResource):
    """The champion rule's tolerances (`finegpt_pipeline.evaluate.champion.Policy`: a
    difference counts when it exceeds both), and whether a model worse than the champion fails
    its check as an ERROR (gate) or a WARN."""

    tolerance_se: float = 2.0  # standard errors of the difference
    tolerance_abs: float = 0.02  # nats
    gate: bool = False  # True: a regression is severity ERROR
    device: str = "auto"  # where the champion is evaluated on other bins: auto | cpu | cuda

    def policy(self):
        from finegpt_pipeline.evaluate.champion import Policy

        return Policy(tolerance_se=self.tolerance_se, tolerance_abs=self.tolerance_abs)

    def resolved_device(self) -> str:
        from finegpt_pipeline.evaluate.measure import resolve_device

        return resolve_device(self.device)
