"""assets/shard_inputs.bins_location: answered once per asset per run, and only the current
run's answers kept (a long-lived process running job after job does not grow the memo)."""

from types import SimpleNamespace

import dagster as dg

from assets import shard_inputs


def _context(run_id: str, asset: str):
    return SimpleNamespace(run=SimpleNamespace(run_id=run_id), asset_key=dg.AssetKey(asset))


def test_bins_location_is_memoised_per_run_and_forgets_earlier_runs(tmp_path, monkeypatch):
    calls = []

    def locate(context, tokenized_bins, finegpt_home):
        calls.append((context.run.run_id, context.asset_key.to_user_string()))
        return tmp_path, tokenized_bins

    monkeypatch.setattr(shard_inputs, "_LOCATIONS", {})
    monkeypatch.setattr(shard_inputs, "_locate", locate)
    value = {"dir": str(tmp_path)}
    for _ in range(3):
        assert shard_inputs.bins_location(_context("run-a", "eval_report"), value, None) == (tmp_path, value)
    shard_inputs.bins_location(_context("run-a", "trained_checkpoint"), value, None)
    assert calls == [("run-a", "eval_report"), ("run-a", "trained_checkpoint")]
    assert len(shard_inputs._LOCATIONS) == 2

    shard_inputs.bins_location(_context("run-b", "eval_report"), value, None)
    assert set(shard_inputs._LOCATIONS) == {("run-b", "eval_report")}
    assert calls[-1] == ("run-b", "eval_report")
