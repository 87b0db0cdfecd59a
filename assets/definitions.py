"""The FineGPT code location `finegpt`: `dagster dev -w workspace.yaml` (or plain `dagster dev`,
which reads pyproject). Not `dagster dev -m assets.definitions`: that names the location
`assets.definitions`, while the jobs file their runs under `finegpt` (assets/jobs.py)."""

import dagster as dg

from assets import bins, champion, data, evaluation, planning, training, training_checks
from assets.automation import automation_sensor
from assets.io_manager import AssetValues
from assets.resources import ChampionPolicy
from assets.jobs import data_job, pipeline_job, train_job
from assets.launchers import TrainingLauncher
from assets.resources import FineGPTHome
from assets.sensors import incoming_shards_sensor, shard_changed_sensor

STAGES = [data, bins, planning, training, training_checks, evaluation, champion]

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(STAGES),
    asset_checks=dg.load_asset_checks_from_modules(STAGES),
    jobs=[data_job, train_job, pipeline_job],
    sensors=[incoming_shards_sensor, shard_changed_sensor, automation_sensor],
    resources={"finegpt_home": FineGPTHome(), "champion_policy": ChampionPolicy(),
               "training_launcher": TrainingLauncher(), "io_manager": AssetValues()},
)
