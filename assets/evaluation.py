"""`eval_report`: the trained checkpoint measured on every token of the bins' val.bin
(`finegpt_pipeline.evaluate`, as `finegpt eval` runs it), beside its plan, the experiment's
earlier runs in MLflow and the loss forecast, with its check against the unigram baseline.
The report lands in FINEGPT_HOME/reports/eval/<run directory name>/.

The value carries what later checks read (the champion comparison): the numbers, `tokens`,
`checkpoint`, `bins_dir` (resolved), `val_sha256`, `mlflow_run_id` and `model_version`
(trained_checkpoint's, None when it registered none)."""

from pathlib import Path

import dagster as dg

from assets import lineage
from assets.automation import AFTER_UPSTREAM
from assets.metadata_format import OWNERS, home_path, link
from assets.resources import ChampionPolicy, FineGPTHome
from assets.shard_inputs import ALL_SHARDS_IN, bins_location
from assets.training import dagster_run_url
from finegpt_pipeline.evaluate import render
from finegpt_pipeline.tracking import store as mlflow_store

NUMBERS = ("val_loss", "val_loss_se", "val_bpb", "perplexity", "unigram_loss", "uniform_loss",
           "below_unigram", "below_uniform")
MARGINS = ("below_unigram", "below_uniform")  # shown in words instead (vs_unigram, vs_uniform)


class EvalConfig(dg.Config):
    device: str = "auto"  # auto (CUDA when visible) | cpu | cuda
    max_new_tokens: int = 48  # per generated sample


@dg.asset(
    group_name="evaluation",
    automation_condition=AFTER_UPSTREAM,
    kinds={"pytorch", "mlflow"},
    owners=OWNERS,
    code_version="1",
    ins={"tokenized_bins": ALL_SHARDS_IN},
    description="Val loss ± se over every token of val.bin (of every materialized shard), bits "
                "per byte, uniform and unigram baselines, generations and loss curves of the "
                "trained checkpoint, its plan against what it measured, the experiment's earlier "
                "runs and the loss forecast; report.md, report.html (self-contained), "
                "report.json, loss_curve.png.",
)
# its MLflow run, reading the bins (assets/lineage.py)
@lineage.tracked(bins_context="evaluation", bins_location=bins_location)
def eval_report(context: dg.AssetExecutionContext, config: EvalConfig,
                finegpt_home: FineGPTHome, champion_policy: ChampionPolicy,
                trained_checkpoint: dict, tokenized_bins: dict) -> dg.Output[dict]:
    from finegpt_pipeline.evaluate import render as eval_report_render, evaluator as evaluate

    if "checkpoint" not in trained_checkpoint:
        raise ValueError("trained_checkpoint: expected a dict with 'checkpoint', got keys "
                         f"{sorted(trained_checkpoint)}")
    bins_dir, _ = bins_location(context, tokenized_bins, finegpt_home)
    ckpt = Path(trained_checkpoint["checkpoint"])
    run_name = Path(trained_checkpoint.get("run_dir") or ckpt.parent).name
    out_dir = finegpt_home.home().eval_reports / run_name
    run_id = trained_checkpoint.get("mlflow_run_id")
    result = evaluate.run_eval(ckpt, bins_dir, out_dir, config.device,
                               config.max_new_tokens, finegpt_home.mlflow_tracking_uri(), run_id,
                               finegpt_home.home().root, trained_checkpoint.get("model_version"),
                               champion_policy.policy())
    context.log.info(f"eval_report: {eval_report_render.headline(result)}")
    context.log.info(eval_report_render.champion_line(result).replace("**", ""))
    context.log.info(f"report: {result['files']['report.html']}")
    if run_id:  # the report joins the training run it measures
        evaluate.log_to_training_run(result, result["files"], run_id,
                                     finegpt_home.mlflow_tracking_uri())
        where = trained_checkpoint.get("mlflow_run_url") or run_id
        context.log.info(f"logged to MLflow run {where}")
    lineage.log_headline({**{f"eval/{k}": result[k] for k in ("val_loss", "val_loss_se", "val_bpb")},
                          "tokens_seen": (result.get("run_summary") or {}).get("tokens_seen")})
    context.log.info(f"Dagster run: {dagster_run_url(context.run.run_id)}")  # the run's last line
    value = {k: result[k] for k in (*NUMBERS, "tokens", "beats_unigram", "checkpoint",
                                    "bins_dir", "val_sha256", "champion")}
    forecast = result.get("forecast")
    value.update(report_dir=str(out_dir), mlflow_run_id=run_id,
                 model_version=trained_checkpoint.get("model_version"),
                 forecast_val_loss=forecast["val_loss"] if forecast and forecast["trusted"]
                 else None)
    # the verdict leads: it is what a reader of this page wants first
    metadata = {"verdict": dg.MetadataValue.md(eval_report_render.champion_line(result)),
                **{k: round(float(result[k]), 4) for k in NUMBERS if k not in MARGINS},
                "vs_unigram": render.versus(result["below_unigram"], "unigram"),
                "vs_uniform": render.versus(result["below_uniform"], "uniform")}
    metadata.update(
        tokens=dg.MetadataValue.int(result["tokens"]),
        beats_unigram=dg.MetadataValue.bool(result["beats_unigram"]),
        report=dg.MetadataValue.md(eval_report_render.markdown(result, image=None)),
        **{key: dg.MetadataValue.md(table)
           for key, table in eval_report_render.section_tables(result, inline=True).items()},
        loss_curve_path=home_path(result["files"]["loss_curve.png"], finegpt_home.home().root),
        report_html=home_path(result["files"]["report.html"], finegpt_home.home().root),
        report_dir=home_path(out_dir, finegpt_home.home().root),
    )
    if forecast:
        if forecast["trusted"]:
            metadata["forecast_val_loss"] = round(float(forecast["val_loss"]), 4)
        metadata["forecast_calibrated"] = dg.MetadataValue.bool(forecast["calibrated"])
    if run_id:  # the UI inlines short Markdown only, so the image comes by URL from MLflow
        metadata["loss_curve"] = dg.MetadataValue.md(
            f"![loss curves]({mlflow_store.artifact_url(run_id, 'eval_report/loss_curve.png')})")
    if trained_checkpoint.get("mlflow_run_url"):
        metadata["training_run_url"] = link(
            f"training run {str(trained_checkpoint.get('mlflow_run_id') or '')[:8]}".rstrip(),
            trained_checkpoint["mlflow_run_url"])
    if run_id:  # the experiment's training runs side by side (val loss, bpb, tokens columns)
        import mlflow

        experiment = mlflow.MlflowClient(finegpt_home.mlflow_tracking_uri()).get_run(
            run_id).info.experiment_id
        metadata["mlflow_experiment_url"] = link("training runs, best first",
                                                 mlflow_store.experiment_url(experiment))
    return dg.Output(value, metadata=metadata)


@dg.asset_check(asset=eval_report,
                description="The model's val loss is below the unigram baseline's (train.bin "
                            "token frequencies) on the same val tokens.")
def eval_report_beats_unigram(eval_report: dict) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=bool(eval_report["beats_unigram"]),
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"val_loss": round(eval_report["val_loss"], 4),
                  "unigram_loss": round(eval_report["unigram_loss"], 4),
                  "vs_unigram": render.versus(eval_report["below_unigram"], "unigram")},
    )
