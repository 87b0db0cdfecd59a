"""Old name of the bins layout, kept only for the planner's imports until they read `layout`
(the tokenize stage is `tokenized_bins`). Remove at merge."""

from finegpt_pipeline.layout import BIN_NAMES, LOCK_NAME, META_NAME, read_meta, verify_files, write_meta  # noqa: F401

if __name__ == "__main__":  # `python -m finegpt_pipeline.bins tokenize ...` (bench/train_cpu.py)
    from finegpt_pipeline.tokenized_bins import main

    raise SystemExit(main())
