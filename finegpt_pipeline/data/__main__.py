"""`python -m finegpt_pipeline.data stats|tokenize|bins-set ...`: the data stage's commands
without the other stages' imports."""
from finegpt_pipeline.cli import run_stage
from finegpt_pipeline.data import bins_set, stats, tokenized_bins

raise SystemExit(run_stage([stats.add_cli, tokenized_bins.add_cli, bins_set.add_cli]))
