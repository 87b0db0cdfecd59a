"""`python -m finegpt_pipeline.evaluate ...`: `finegpt eval` without the other stages' imports."""
from finegpt_pipeline.cli import run_stage
from finegpt_pipeline.evaluate.evaluator import add_cli

raise SystemExit(run_stage([add_cli], "eval"))
