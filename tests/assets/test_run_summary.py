"""The summary block a job run ends with (assets/run_summary.py): what was made, the eval's
numbers and verdict, every failed check by name and severity; exit status 1 on an ERROR."""

import dagster as dg
import pytest

from assets.metadata_format import home_path, link
from assets.run_summary import summary
from finegpt_pipeline import paths


def _run(severity: dg.AssetCheckSeverity, passed: bool):
    @dg.asset(name="eval_report")
    def report() -> dg.Output[dict]:
        return dg.Output({}, metadata={"val_loss": 7.5, "val_loss_se": 0.01, "val_bpb": 2.9,
                                       "unigram_loss": 8.0,
                                       "verdict": dg.MetadataValue.md("**v2 is BETTER than champion v1**"),
                                       "mlflow_run_url": link("MLflow run ab12", "http://m/#/runs/ab12"),
                                       "report_html": home_path(paths.home().root / "reports/r.html",
                                                                paths.home().root)})

    @dg.asset_check(asset=report)
    def beats_unigram() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(passed=passed, severity=severity,
                                   metadata={"note": "model above unigram"})

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([report, beats_unigram], instance=instance)
    return instance, result.run_id


@pytest.mark.parametrize("severity,passed,fails", [
    (dg.AssetCheckSeverity.ERROR, False, True), (dg.AssetCheckSeverity.WARN, False, False),
    (dg.AssetCheckSeverity.ERROR, True, False)])
def test_the_block_names_failed_checks_and_fails_on_error(severity, passed, fails):
    instance, run_id = _run(severity, passed)
    lines, failed = summary(instance, run_id)
    text = "\n".join(lines)
    assert failed is fails
    # the link's URL and the report's whole path, which the UI shows relative to FINEGPT_HOME
    assert "made   eval_report  http://m/#/runs/ab12" in text
    assert f"report: {paths.home().root / 'reports/r.html'}" in text
    assert "val loss 7.5 ± 0.01 nats, 2.9 bits/byte; unigram baseline 8.0" in text
    assert "v2 is BETTER than champion v1" in text
    if passed:
        assert "check  passed  eval_report:beats_unigram: model above unigram" in text
    else:
        assert f"check  FAILED ({severity.value})  eval_report:beats_unigram: model above unigram" in text
    assert text.endswith("result   " + ("FAILED: an ERROR-severity check failed" if fails else "ok"))


def test_an_unknown_run_is_one_line():
    with pytest.raises(ValueError, match="not in this instance"):
        summary(dg.DagsterInstance.ephemeral(), "nope")
