"""Resources: where artifacts live and where runs are tracked. Empty fields fall back to the
engine's environment contract (FINEGPT_HOME, MLFLOW_TRACKING_URI); the tree under the home is
`finegpt_pipeline.layout.Home`. Which shard a run reads is its `shards` partition
(assets/partitions.py)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from finegpt_pipeline import paths
from finegpt_pipeline.layout import Home


class FineGPTPaths(dg.ConfigurableResource):
    """Artifact locations. Leave a field empty to use the environment contract."""

    home: str = ""
    incoming: str = ""  # the incoming_shards_sensor's directory; empty: $FINEGPT_HOME/incoming

    def home_dir(self) -> Path:
        return Path(self.home).resolve() if self.home else paths.finegpt_home()

    def layout(self) -> Home:
        return paths.home(self.home_dir())

    def incoming_dir(self) -> Path:
        return Path(self.incoming).resolve() if self.incoming else self.layout().incoming

    def warehouse(self) -> Path:
        return self.layout().warehouse

    def shards_dir(self) -> Path:
        return self.layout().shards

    def reports_dir(self) -> Path:
        return self.layout().reports

    def eval_reports_dir(self) -> Path:
        return self.layout().eval_reports

    def bins_dir(self) -> Path:
        return self.layout().bins

    def bin_sets_dir(self) -> Path:
        """Where the bins sets of several shards are written (`finegpt_pipeline.data.bins_set`)."""
        return self.layout().bin_sets

    def plans_dir(self) -> Path:
        return self.layout().plans

    def runs_dir(self) -> Path:
        return self.layout().runs

    def trained_runs_dir(self) -> Path:
        return self.layout().trained_runs

    def mlflow_tracking_uri(self) -> str:
        """MLFLOW_TRACKING_URI, else the SQLite store under this home."""
        return paths.mlflow_tracking_uri(self.home_dir())


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
