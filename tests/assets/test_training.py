"""`trained_checkpoint` through Dagster: Pipes launch, streamed materialization, live MLflow run."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import dagster as dg
import mlflow

from tests._bins_fixture import make_bins, write_plan
from assets.launchers import TrainingLauncher
from assets.metadata_format import INLINE_MARKDOWN_CHARS, link_url, significant
from assets.resources import FineGPTHome
from assets.training import trained_checkpoint
from finegpt_pipeline.train import plan_file
from finegpt_pipeline.train.run_dir import run_key, train_command
from finegpt_pipeline.config import TrainConfig
from finegpt_pipeline.plan.costs import reschedule

REPO = Path(__file__).resolve().parents[2]


def test_train_command_is_the_user_command(tmp_path):
    single = train_command(tmp_path / "bins", tmp_path / "p.json", tmp_path / "out", False, 1)
    assert single[1:4] == ["-m", "finegpt_pipeline.train", "--bins"]
    multi = train_command(tmp_path / "bins", tmp_path / "p.json", tmp_path / "out", True, 4)
    assert multi[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4"]
    assert multi[5:] == single[1:] + ["--resume"]


def test_one_training_run_at_a_time_under_the_shipped_instance_config(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "docker" / "dagster.yaml", home / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(home))
    assert trained_checkpoint.op.pool == "gpu"
    assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
    assert not instance.telemetry_enabled
    # a partition's run from the CLI names no logger: it logs at INFO, not Dagster's DEBUG
    assert instance.python_log_level == "INFO"


def test_run_directory_follows_plan_bins_and_launch_settings(tmp_path):
    bins = tmp_path / "bins"
    bins.mkdir()
    plan = {"n_layer": 2, "max_iters": 10}
    base = run_key(plan, bins)
    assert run_key(dict(plan), bins) == base  # a retry resumes
    changed = [run_key({**plan, "n_layer": 3}, bins),
               run_key(plan, bins, overrides=["learning_rate=1e-3"]),
               run_key(plan, bins, max_iters=5)]
    assert len({base, *changed}) == 4


def test_trained_checkpoint_materializes_with_mlflow_run(finegpt_home, sample_shard, tmp_path,
                                                         monkeypatch, capfd):
    # MLflow logs a system-metrics sample only after a full interval (10 s by default) of a
    # running run; this run lasts a second or two, so sample every 0.1 s
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.1")
    bins_dir = make_bins(sample_shard, finegpt_home / "bins")
    # a 40-step plan launched for 6 steps: the trainer re-derives the plan's schedule for 6
    plan = json.loads(write_plan(tmp_path / "plan.json", max_iters=40, lr_decay_iters=40,
                                 peak_flops=1e12).read_text())

    @dg.asset(name="training_config")
    def training_config_input() -> dict:
        return plan

    @dg.asset(name="tokenized_bins")
    def tokenized_bins_input() -> dict:
        return {"dir": str(bins_dir)}

    instance = dg.DagsterInstance.ephemeral()

    def materialize():
        return dg.materialize(
            [training_config_input, tokenized_bins_input, trained_checkpoint],
            resources={"finegpt_home": FineGPTHome(root=str(finegpt_home)),
                       "training_launcher": TrainingLauncher()},
            selection=["trained_checkpoint", "training_config", "tokenized_bins"],
            instance=instance,
            run_config={"ops": {"trained_checkpoint": {"config": {"max_iters": 6}}}},
        )

    result = materialize()
    assert result.success
    # each trainer line shows once in the run's output: as a Pipes log message, not also as
    # the child's stdout, which the launching process shares
    out, err = capfd.readouterr()
    assert (out + err).count("iter 5: loss") == 1, out + err
    # the trainer's log lines stream into the Dagster run through Pipes
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(m.startswith("training ") and "tokens/step" in m for m in messages)
    assert any(m.startswith("iter 6: loss") for m in messages)
    # each eval says how it is going: step of total, tokens, time, the forecast (or why none)
    [at_4] = [m for m in messages if m.startswith("iter 4/6 (67%): val loss ")]
    assert "; 512 tokens; " in at_4 and " elapsed, ~" in at_4 and at_4.endswith(
        " left; final val loss forecast: not enough evals yet (0 of 4 to fit)")
    assert any(re.fullmatch(r"final val loss \d+\.\d{4}; forecast at 25% \(step 0\): none, "
                            r"50% \(step 2\): none, 75% \(step 4\): none", m) for m in messages)
    # the run ends with what a user wants: the checkpoint, the val loss and both UIs' links
    closing = messages[messages.index(next(m for m in messages
                                           if m.startswith("trained_checkpoint: "))):]
    assert "ckpt.pt (6 steps" in closing[0] and "val loss " in closing[0]
    assert closing[1].startswith("MLflow run: http://127.0.0.1:5000/#/experiments/")
    assert closing[2] == f"Dagster run: http://127.0.0.1:3000/runs/{result.run_id}"
    # run monitoring's limit, from the plan's estimate (x2 + 10 min), counted from the run start
    limit = int(instance.get_run_by_id(result.run_id).tags["dagster/max_runtime"])
    assert plan["est_hours"] * 3600 * 2 + 600 <= limit < plan["est_hours"] * 3600 * 2 + 900
    [mat] = [m for m in result.asset_materializations_for_node("trained_checkpoint")]
    md = mat.metadata
    assert md["steps"].value == 6 and md["reused"].value is False
    run_dir = finegpt_home / md["run_dir"].value  # the UI shows paths relative to the home
    assert md["run_dir"].value.startswith("runs/")
    used = plan_file.load_plan(run_dir / "plan.json")
    assert used == reschedule(TrainConfig.from_plan(plan), 6)  # as `finegpt plan` schedules 6
    assert md["tokens_seen"].value == 6 * 4 * 32
    for key in ("best_val_loss", "final_val_loss", "checkpoint", "mlflow_run_url", "run_dir",
                "wall_time_s", "tokens_per_s", "mfu"):
        assert key in md, key
    assert md["tokens_per_s"].value > 0 and 0 < md["mfu"].value < 1
    # what a user reads: rounded floats, no 0 posing as a CPU memory measurement, the plot
    for key, digits in (("best_val_loss", 4), ("final_val_loss", 4), ("wall_time_s", 4),
                        ("tokens_per_s", 4), ("mfu", 3)):
        assert isinstance(md[key], dg.FloatMetadataValue), key
        assert md[key].value == significant(md[key].value, digits), (key, md[key].value)
    assert md["peak_memory"].value == "not measured on cpu" and "peak_memory_bytes" not in md
    png = run_dir / "loss_curve.png"
    assert "loss_curve_png" not in md and png.read_bytes()[:4] == b"\x89PNG"
    curve = md["loss_curve"].value  # short Markdown: the UI shows it inline, the MLflow UI serves the PNG
    assert curve.startswith("![loss curve](http://127.0.0.1:5000/get-artifact?path=loss_curve.png&run_uuid=")
    assert len(curve) < INLINE_MARKDOWN_CHARS
    forecasts = md["val_loss_forecasts"].value.splitlines()  # short: shown inline
    assert forecasts[0] == "| at | step | forecast ± se | final | final - forecast | in ±2 se |"
    assert [line.split(" | ")[:2] for line in forecasts[2:]] == [["| 25%", "0"], ["| 50%", "2"],
                                                                 ["| 75%", "4"]]
    val_table = md["val_loss_by_tokens"].value.splitlines()
    assert val_table[:2] == ["| tokens seen | val loss |", "|---|---|"]
    assert val_table[2].startswith("| 0 | ") and val_table[-1].startswith("| 768 | ")  # 6 x 4 x 32
    value = result.output_for_node("trained_checkpoint")
    assert value["steps"] == 6

    mlflow.set_tracking_uri(f"sqlite:///{finegpt_home / 'mlflow.db'}")
    run = mlflow.get_run(value["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["dagster.run_id"] == result.run_id
    # named for what it is (stage, model size, start, run key), not by a directory hash alone
    # named by what tells runs apart: size, tokens, optimizer and lr
    assert re.fullmatch(rf"train 2L/32d 768 tok \w+ lr [0-9.e-]+ \d{{4}}-\d\d-\d\d \d\d:\d\d \({run_dir.name}\)",
                        run.info.run_name), run.info.run_name
    assert run.data.tags["dagster.asset_key"] == "trained_checkpoint"
    # the training run is the asset's nested run in the Dagster run's parent run
    parent = mlflow.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.data.tags["dagster.run_id"] == result.run_id
    assert parent.data.tags["finegpt.stage"] == "dagster_run" and parent.info.status == "FINISHED"
    assert run.data.tags["dagster.code_version"] == trained_checkpoint.code_versions_by_key[
        dg.AssetKey("trained_checkpoint")]
    assert run.data.tags["dagster.data_version"] == mat.tags["dagster/data_version"]
    assert run.data.tags["dagster.run_url"] == f"http://127.0.0.1:3000/runs/{result.run_id}"
    assert "mlflow.source.git.commit" in run.data.tags
    assert {"train_loss", "val_loss", "lr", "progress/fraction", "progress/eta_seconds",
            "progress/elapsed_seconds", "tokens_seen"} <= set(run.data.metrics)
    assert run.data.tags["finegpt.curve_forecast"] == (
        "step 6: forecast: not enough evals yet (1 of 4 to fit)")
    assert run.data.params["n_layer"] == "2"
    assert run.data.params["plan.est_hours"] == "0.001"  # the planner's estimates ride along
    assert "system/cpu_utilization_percentage" in run.data.metrics
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "train_loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4, 5, 6]
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"ckpt.pt", "plan.json", "summary.json", "loss_curve.png"} <= artifacts
    assert value["mlflow_run_id"] in md["loss_curve"].value
    # the run directory's one plan file: the config trained, the plan's report as it was
    assert not any(name in artifacts for name in ("plan_estimates.json", "launch_plan.json"))
    assert sorted(p.name for p in run_dir.glob("*plan*")) == ["plan.json"]
    assert json.loads((run_dir / "plan.json").read_text())["report"] == {"est_hours": 0.001}
    assert mlflow.get_run(value["mlflow_run_id"]).info.run_id in md["mlflow_run_url"].value

    # unchanged inputs, finished run: the same run comes back, the trainer is not launched
    log_before = (run_dir / "train_log.jsonl").read_bytes()
    again = materialize()
    assert again.success
    [mat2] = again.asset_materializations_for_node("trained_checkpoint")
    assert mat2.metadata["reused"].value is True and mat2.metadata["steps"].value == 6
    assert mat2.metadata["loss_curve"] == md["loss_curve"] and mat2.metadata["mfu"] == md["mfu"]
    assert again.output_for_node("trained_checkpoint") == value
    assert (run_dir / "train_log.jsonl").read_bytes() == log_before
    # this Dagster run's own nested run stands for the reused training run and links to it
    assert mat2.metadata["training_run_url"] == md["mlflow_run_url"]
    link_id = mat2.metadata["mlflow_run_url"].value.split("/runs/")[1].split("?")[0]
    link = mlflow.get_run(link_id)
    assert link.data.tags["finegpt.training_run_id"] == value["mlflow_run_id"]
    assert link.data.tags["finegpt.stage"] == "trained_checkpoint"  # not an earlier training run
    assert mlflow.get_run(link.data.tags["mlflow.parentRunId"]).data.tags["dagster.run_id"] == \
        again.run_id
    assert f"({link_url(md['mlflow_run_url'])})" in link.data.tags["mlflow.note.content"]
    assert link.info.status == "FINISHED"
    assert not any(m.startswith(("launching", "resuming")) for m in
                   (e.user_message for e in instance.all_logs(again.run_id)))
