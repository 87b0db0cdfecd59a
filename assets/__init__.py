"""Dagster code location for FineGPT: thin asset wrappers over `finegpt_pipeline`."""
