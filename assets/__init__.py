"""Dagster code location for FineGPT: thin asset wrappers over `finegpt_pipeline`."""

import warnings

import dagster as dg

# The APIs this location uses on purpose (data versions on outputs, Pipes) are marked beta or
# preview; a user running the pipeline cannot act on those notices, so they stay out of the log.
for _category in (dg.BetaWarning, dg.PreviewWarning):
    warnings.filterwarnings("ignore", category=_category)
