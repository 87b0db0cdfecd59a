"""The data stage: a FineWeb shard read and checked (shard), its token statistics in DuckDB
(stats, warehouse), tokenized once (tokenizer, token_ids) into nanoGPT bins (tokenized_bins)
with their checks (bins_checks), several shards' bins as one set (bins_set); synthetic shards
for scale tests."""
