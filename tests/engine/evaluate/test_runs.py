"""`finegpt runs`: a user finds the newest run and the champion's run without reading hashes."""

from __future__ import annotations

import os
import shutil

from tests._registry_fixture import store, trained  # noqa: F401
from finegpt_pipeline import cli
from finegpt_pipeline.evaluate import registry


def test_runs_names_the_newest_and_the_champion(store, tmp_path, monkeypatch, capsys):  # noqa: F811
    uri, run_id, ckpt = store
    runs = tmp_path / "home" / "runs" / "trained_checkpoint"
    old, new = runs / "aaaaaaaaaaaa", runs / "bbbbbbbbbbbb"
    shutil.copytree(ckpt.parent, old)
    shutil.copytree(ckpt.parent, new)
    (new / "mlflow_run_id").write_text("0" * 32)  # a run this store does not hold
    os.utime(old / "summary.json", (1_000_000_000, 1_000_000_000))
    version = registry.register_candidate(uri, run_id, old / "ckpt.pt")["version"]
    registry.promote(uri, version)
    (runs / "unfinished").mkdir()  # no summary yet: not listed
    report = tmp_path / "home" / "reports" / "eval" / "aaaaaaaaaaaa"
    report.mkdir(parents=True)
    (report / "report.json").write_text('{"val_loss": 7.1234}')  # eval_report's full-val loss
    monkeypatch.setenv("FINEGPT_HOME", str(tmp_path / "home"))

    assert cli.main(["runs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(runs.resolve())
    assert [line.split()[0] for line in lines[2:4]] == ["bbbbbbbbbbbb", "aaaaaaaaaaaa"]  # newest first
    assert lines[2].endswith("[latest]") and " 2L/32d " in lines[2] + " "  # no MLflow run: its shape
    assert lines[3].startswith("aaaaaaaaaaaa     2001-09-09 01:46")
    assert "train 2L/32d" in lines[3] and lines[3].endswith(f"[champion v{version}]")
    assert " 7.1234  " in lines[3] and "* " in lines[2]  # the eval's value; else the trainer's, starred
    assert lines[4] == "* the trainer's estimate on sampled val batches: no eval report yet"

    assert cli.main(["runs", "--latest"]) == 0
    assert capsys.readouterr().out.strip() == str(new.resolve())
    assert cli.main(["runs", "--champion"]) == 0
    assert capsys.readouterr().out.strip() == str(old.resolve())


def test_runs_without_runs_or_champion_says_so_in_one_line(store, tmp_path, monkeypatch, capsys):  # noqa: F811
    uri, run_id, ckpt = store
    monkeypatch.setenv("FINEGPT_HOME", str(tmp_path / "home"))
    assert cli.main(["runs"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no training runs yet" in err and "make run" in err
    shutil.copytree(ckpt.parent, tmp_path / "home" / "runs" / "trained_checkpoint" / "cccccccccccc")
    assert cli.main(["runs", "--champion"]) == 2
    assert "none promoted yet" in capsys.readouterr().err
