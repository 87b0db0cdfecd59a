"""Resources: where artifacts live and where runs are tracked. Empty fields fall back to the
engine's environment contract (FINEGPT_HOME, FINEGPT_SHARD, MLFLOW_TRACKING_URI)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from finegpt_pipeline import paths


class FineGPTPaths(dg.ConfigurableResource):
    """Artifact locations. Leave a field empty to use the environment contract."""

    home: str = ""
    shard: str = ""

    def home_dir(self) -> Path:
        return Path(self.home).resolve() if self.home else paths.finegpt_home()

    def shard_source(self) -> str:
        return self.shard or paths.shard_source()

    def warehouse(self) -> Path:
        return paths.warehouse_path(self.home_dir())

    def bins_dir(self) -> Path:
        return paths.bins_dir(self.home_dir())

    def runs_dir(self) -> Path:
        return paths.runs_dir(self.home_dir())
