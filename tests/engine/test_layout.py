"""The artifact layout in one light module: FINEGPT_HOME's tree (engine, resource and sensor
alike), the bins directory, meta.json, and the one "have the bins changed?" fingerprint."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from tests._bins_fixture import sample_bins  # noqa: F401
from assets.resources import FineGPTHome
from finegpt_pipeline import layout, paths

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", ["finegpt_pipeline.layout", "finegpt_pipeline.train.batches",
                                    "finegpt_pipeline.train.trainer", "finegpt_pipeline.plan.inputs"])
def test_reading_bins_imports_neither_pyarrow_nor_tiktoken(module, sample_bins):
    """The trainer and the planner read meta.json without the tokenize stage's imports."""
    code = (f"import sys, {module}; from finegpt_pipeline import layout; from finegpt_pipeline.plan import inputs; "
            "layout.verify_files(sys.argv[1]); inputs.tokens_from_bins(sys.argv[1]); "
            "print(sorted(m for m in ('pyarrow', 'tiktoken') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code, str(sample_bins)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_home_tree_is_one_place_for_engine_and_resource(tmp_path, monkeypatch):
    monkeypatch.setenv("FINEGPT_HOME", str(tmp_path / "env-home"))
    tree = paths.home()
    assert tree.root == (tmp_path / "env-home").resolve()
    assert (tree.warehouse, tree.bins, tree.trained_runs, tree.hardware) == (
        tree.root / "warehouse.duckdb", tree.root / "bins", tree.root / "runs" / "trained_checkpoint",
        tree.root / "hardware")
    resource = FineGPTHome(root=str(tmp_path / "other"))
    other = layout.Home((tmp_path / "other").resolve())
    assert resource.home() == other  # the resource names the same tree, not a copy of its paths
    assert FineGPTHome().home() == tree  # empty root: the environment's FINEGPT_HOME
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resource.mlflow_tracking_uri() == f"sqlite:///{other.mlflow_db}"


def test_bins_key_names_shard_and_split():
    assert layout.bins_key("ab" * 32, 0.005, None) == "abababababab-val0.005-minauto"
    assert layout.bins_key("ab" * 32, 0.1, 3) == "abababababab-val0.1-min3"


def test_fingerprint_changes_with_the_bins_and_their_place(sample_bins, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(sample_bins, copy, ignore=shutil.ignore_patterns(layout.LOCK_NAME))
    first = layout.bins_fingerprint(copy)
    assert layout.bins_fingerprint(copy) == first and len(first) == 16
    assert layout.bins_fingerprint(sample_bins) != first  # equal bins elsewhere: their own
    layout.write_meta(copy, note="rewritten")
    assert layout.bins_fingerprint(copy) != first
    second = layout.bins_fingerprint(copy)
    with open(copy / "val.bin", "ab") as fh:
        fh.write(np.array([1], dtype=np.uint16).tobytes())
    assert layout.bins_fingerprint(copy) != second
    assert len(layout.bins_fingerprint(tmp_path / "nothing-here")) == 16  # never fails


def test_shard_path_of_reads_new_and_old_meta():
    assert layout.shard_path_of({"source_path": "/a.parquet"}) == "/a.parquet"
    assert layout.shard_path_of({"source": "/old.parquet"}) == "/old.parquet"


def test_jobs_select_by_group():
    from assets.jobs import data_job, pipeline_job, train_job

    @dg.asset(group_name="data")
    def another_data_asset() -> int:
        return 1

    from assets import definitions

    defs = dg.Definitions(assets=[*dg.load_assets_from_modules(definitions.STAGES), another_data_asset],
                          jobs=[data_job, train_job, pipeline_job],
                          resources=dict(definitions.defs.resources))
    keys = lambda job: {k.to_user_string() for k in  # noqa: E731
                        defs.resolve_job_def(job).asset_layer.selected_asset_keys}
    assert keys("data_job") == {"raw_shard", "token_stats", "tokenized_bins", "another_data_asset"}
    assert keys("train_job") == {"training_config", "trained_checkpoint", "eval_report"}
    assert keys("pipeline_job") == keys("data_job") | keys("train_job")


def test_meta_names_the_local_file_as_source_path(sample_shard, tmp_path):
    from finegpt_pipeline.data.tokenized_bins import tokenize_shard

    meta = tokenize_shard(sample_shard, tmp_path / "b", num_workers=1)
    assert meta["source_path"] == str(sample_shard.resolve()) and "source" not in meta
    assert json.loads((tmp_path / "b" / layout.META_NAME).read_text()) == meta


def test_an_unwritable_home_is_one_line_naming_it_before_any_work(tmp_path, monkeypatch, capsys):
    """`finegpt plan`, `train`, ... and `python -m assets.shards add` (make run's first step)
    refuse a FINEGPT_HOME they cannot write in one line, and write nothing anywhere."""
    from assets.shards import main as shards_main
    from finegpt_pipeline import cli

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    home = blocker / "home"  # cannot be created: its parent is a file (root ignores chmod)
    monkeypatch.setenv("FINEGPT_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["plan", "--gpu", "cpu", "--hours", "0.01"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"finegpt plan: error: FINEGPT_HOME={home} is not writable")
    assert "export FINEGPT_HOME=" in err and len(err.splitlines()) == 1
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dh"))
    (tmp_path / "dh").mkdir()
    assert shards_main(["add"]) == 2
    assert "is not writable" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "dh"]


def test_a_bad_override_writes_nothing(tmp_path, monkeypatch, capsys):
    from finegpt_pipeline import cli

    monkeypatch.setenv("FINEGPT_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["plan", "--set", "foo=1"]) == 2
    assert "foo" in capsys.readouterr().err
    assert not (tmp_path / "home" / "hardware").exists() and not (tmp_path / ".finegpt").exists()
