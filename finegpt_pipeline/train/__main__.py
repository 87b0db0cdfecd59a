"""`python -m finegpt_pipeline.train ...` (and `torchrun -m finegpt_pipeline.train ...`): `finegpt
train` without the other stages' imports."""
from finegpt_pipeline.cli import run_stage
from finegpt_pipeline.train.trainer import add_cli

raise SystemExit(run_stage([add_cli], "train"))
