"""The train stage: the trainer (trainer) over the bins (batches), its run directory (run_dir,
plan_file), checkpoints (checkpoint), progress and MLflow reporting (reporter, loss_curve), and
the process plumbing (allocator, launcher_watch). `python -m finegpt_pipeline.train` and
`torchrun -m finegpt_pipeline.train` run it."""
