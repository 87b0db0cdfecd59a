"""`python -m finegpt_pipeline.plan ...`: `finegpt plan` without the other stages' imports."""
from finegpt_pipeline.cli import run_stage
from finegpt_pipeline.plan.planner import add_cli

raise SystemExit(run_stage([add_cli], "plan"))
