"""What a user sees in the Dagster and MLflow UIs after two pipeline runs on the shared sample,
driven in Debian's chromium with playwright (never a playwright browser download).

`make browser` runs it (CI: `.ci/run` installs chromium when missing). Screenshots land in
the test's tmp directory, and in $FINEGPT_BROWSER_SHOTS when set."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from tests._ui_stack import STEPS, start_stack

CHROMIUM = Path(os.environ.get("FINEGPT_CHROMIUM", "/usr/bin/chromium"))
try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None

MISSING = ("playwright is not installed (pip install -e '.[dev]')" if sync_playwright is None else
           f"no chromium at {CHROMIUM} (apt-get install chromium)" if not CHROMIUM.exists() else None)
if MISSING and os.environ.get("FINEGPT_BROWSER_REQUIRED"):  # CI (.ci/run): run, never skip
    raise RuntimeError(f"browser test required but {MISSING}")
pytestmark = [pytest.mark.browser, pytest.mark.skipif(MISSING is not None, reason=str(MISSING))]

ASSETS = {  # asset: its upstream assets, as the lineage graph draws them
    "raw_shard": set(), "token_stats": {"raw_shard"}, "tokenized_bins": {"raw_shard"},
    "training_config": {"tokenized_bins"}, "trained_checkpoint": {"tokenized_bins", "training_config"},
    "eval_report": {"tokenized_bins", "trained_checkpoint"},
}
TIMEOUT_MS = 60_000  # a busy 2-core box renders slowly
if sync_playwright is not None:
    expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, sample_shard):
    t0 = time.monotonic()
    stack = start_stack(tmp_path_factory.mktemp("ui-stack"), sample_shard)
    stack.timings["stack ready"] = time.monotonic() - t0
    yield stack
    stack.stop()
    print("\nbrowser test timings (s): " + json.dumps({k: round(v) for k, v in stack.timings.items()}))


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, shots, request):
    """A fresh profile per test (as a new user has), 1,400 px wide, Dagster's welcome modal
    dismissed."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.add_locator_handler(page.get_by_text("Join the Dagster community"),
                             lambda: page.get_by_role("button", name="Skip").click())
    yield page
    shoot(page, shots, f"{request.node.name}-last")
    context.close()


def shoot(page, shots: Path, name: str) -> Path:
    path = shots / f"{name}.png"
    page.screenshot(path=str(path))
    if os.environ.get("FINEGPT_BROWSER_SHOTS"):
        out = Path(os.environ["FINEGPT_BROWSER_SHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, out / path.name)
    return path


def fits_its_box(locator) -> bool:
    """Is the metadata table holding `locator` no wider than its box? (A wider one scrolls
    sideways and hides the end of every wrapped value, the verdict's first.)"""
    return locator.evaluate("""(el) => {
        const box = el.closest('table').parentElement;
        return box.scrollWidth <= box.clientWidth + 1;
    }""")


def mlflow_client(stack):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{stack.home / 'mlflow.db'}")


def training_runs(stack) -> list:
    client = mlflow_client(stack)
    exp = client.get_experiment_by_name("finegpt")
    runs = client.search_runs([exp.experiment_id], "tags.`finegpt.stage` = 'train'",
                              order_by=["attributes.start_time ASC"])
    return runs


def metric_text(run, name: str) -> str:
    """A metric as MLflow's table prints it: JavaScript's shortest repr, as Python's."""
    value = run.data.metrics[name]
    return str(int(value)) if value.is_integer() else repr(value)


def test_asset_graph_shows_the_six_assets_and_their_edges(stack, page, shots):
    page.goto(f"{stack.dagster}/asset-groups")  # the Lineage view; its groups start collapsed
    expand = page.get_by_text("Expand all groups").filter(visible=True).first
    for _ in range(5):  # the graph's background menu, once the welcome modal is gone
        try:  # a visible group label (the UI also keeps hidden copies to measure text)
            page.get_by_text("evaluation", exact=True).filter(visible=True).last.hover(
                timeout=10000)  # runs the modal's handler
            page.mouse.click(1000, 250, button="right")
            expand.click(timeout=5000)
            break
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    else:
        pytest.fail("the asset graph's background menu (Expand all groups) never opened")
    for asset in ASSETS:
        expect(page.get_by_text(asset, exact=True).first).to_be_visible()
    shoot(page, shots, "dagster-asset-graph")
    for asset, upstream in ASSETS.items():  # the edges, as each asset's page lists them
        page.goto(f"{stack.dagster}/assets/{asset}")
        assert upstream_assets(page, upstream) == upstream, asset


def upstream_assets(page, expected: set[str]) -> set[str]:
    """The asset page's "Upstream assets" list; it fills in after the page, so read it until
    it shows `expected` or the timeout passes."""
    expect(page.get_by_text("Upstream assets")).to_be_visible()
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while True:
        text = page.locator("body").inner_text()
        section = text.split("Upstream assets", 1)[1].split("Downstream assets", 1)[0]
        names = set(re.findall(r"[a-z_]+", section)) & set(ASSETS)
        if names == expected or time.monotonic() > deadline:
            return names
        page.wait_for_timeout(500)


def test_cli_runs_show_in_the_job_views_and_the_timeline_with_their_origin(stack, page, shots):
    """`make run`'s runs (python -m assets.launch) record the UI's code-location origin: they
    show on the job's Runs tab, on the Overview timeline, and re-execute with no warning."""
    page.goto(f"{stack.dagster}/locations/finegpt/jobs/pipeline_job/runs")
    for run_id in stack.run_ids:
        expect(page.get_by_text(run_id[:8], exact=True)).to_be_visible()
    expect(page.get_by_text("No runs found")).to_have_count(0)
    shoot(page, shots, "dagster-job-runs")
    page.goto(f"{stack.dagster}/overview/timeline")
    row = page.locator("[class*=timelineRowContainer]").filter(
        has=page.locator('a[href="/locations/finegpt/jobs/pipeline_job"]'))
    expect(row).to_have_count(1)
    expect(row.locator("[class*=runChunk]").first).to_be_visible()
    shoot(page, shots, "dagster-timeline")
    page.goto(f"{stack.dagster}/runs/{stack.run_ids[-1]}")
    button = page.get_by_role("button", name=re.compile("Re-execute"))
    expect(button).to_be_enabled()
    # a run without an origin (plain `dagster job execute`) shows a warning icon here
    expect(button.locator('[aria-label="warning"]')).to_have_count(0)


def test_eval_report_page_shows_latest_metadata_and_its_mlflow_link_opens_the_run(stack, page, shots):
    latest = training_runs(stack)[-1]
    val_loss = latest.data.metrics["eval/val_loss"]
    page.goto(f"{stack.dagster}/assets/eval_report")
    expect(page.get_by_text(f"{val_loss:.4f}", exact=True).first).to_be_visible()
    # the verdict against the champion the first run's model was made by hand
    verdict = page.get_by_text(re.compile(r"(than|from) champion v1")).first
    expect(verdict).to_be_visible()
    assert fits_its_box(verdict), "the metadata table scrolls sideways: the verdict's end is hidden"
    link = page.locator(f'a[href^="{stack.mlflow}/"][href*="/runs/{latest.info.run_id}"]')
    expect(link.first).to_be_visible()
    shoot(page, shots, "dagster-eval-report")
    href = link.first.get_attribute("href")
    page.goto(href)
    expect(page.get_by_text(latest.info.run_name).first).to_be_visible()
    expect(page.get_by_text("eval/val_loss").first).to_be_visible()
    shoot(page, shots, "mlflow-run-from-dagster")


def test_trained_checkpoint_page_says_how_its_config_differs_from_the_champion(stack, page, shots):
    page.goto(f"{stack.dagster}/assets/trained_checkpoint")
    # the second run trained 4 steps where the first (the champion, v1) trained 2
    diff = page.get_by_text(re.compile(r"^differs from champion v1 in: .*max_iters 4 \(champion 2\)"))
    expect(diff).to_be_visible()
    expect(page.get_by_text("val_loss_forecasts", exact=True)).to_be_visible()
    assert fits_its_box(diff), "the metadata table scrolls sideways at 1,400 px"
    shoot(page, shots, "dagster-trained-checkpoint")


def test_the_dagster_run_log_says_how_training_is_going_at_each_eval(stack, page, shots):
    page.goto(f"{stack.dagster}/runs/{stack.run_ids[-1]}")  # the 4-step run
    page.get_by_placeholder(re.compile("^Filter")).fill("val loss")
    # each eval's line, streamed from the trainer through Pipes while it ran
    for at in (r"2/4 \(50%\)", r"4/4 \(100%\)"):
        expect(page.get_by_text(re.compile(
            rf"^iter {at}: val loss \d+\.\d{{4}} \(best \d+\.\d{{4}}\); [\d,]+ tokens; .* elapsed, "
            r".*; final val loss ")).first).to_be_visible()
    # and at the end, what the in-run forecast said at 25/50/75 % against the final value
    closing = page.get_by_text(re.compile(r"^final val loss \d+\.\d{4}; forecast at 25% ")).first
    expect(closing).to_be_visible()
    closing.scroll_into_view_if_needed()
    shoot(page, shots, "dagster-run-progress")


def test_mlflow_charts_lead_with_the_losses_against_tokens_seen(stack, page, shots):
    from finegpt_pipeline.tracking import store as mlflow_store, ui as mlflow_ui

    runs = training_runs(stack)
    page.goto(mlflow_ui.experiment_url(stack.mlflow, runs[0].info.experiment_id, mlflow_store.UI_MODE)
              + "&compareRunsMode=CHART")
    area = page.get_by_test_id("experiment-view-compare-runs-chart-area")
    expect(area.get_by_text(re.compile(r"^Model metrics"))).to_be_visible()
    sections = area.get_by_text(re.compile(r"^(Model metrics|forecast|progress|eval|summary)$"))
    expect(sections.first).to_have_text("Model metrics")  # the sections, top to bottom
    # the first charts: val loss, then train loss, each against tokens seen (not the step)
    titles = area.get_by_text(re.compile(r"^(val_loss|train_loss|lr)$"))
    expect(titles.first).to_have_text("val_loss")
    expect(titles.nth(1)).to_have_text("train_loss")
    expect(area.locator("svg text", has_text="tokens_seen").first).to_be_visible()
    shoot(page, shots, "mlflow-charts")


def test_mlflow_experiment_lists_both_training_runs_with_val_loss(stack, page, shots):
    from finegpt_pipeline.tracking import store as mlflow_store, ui as mlflow_ui

    runs = training_runs(stack)
    assert len(runs) == len(STEPS)
    page.goto(mlflow_ui.experiment_url(stack.mlflow, runs[0].info.experiment_id, mlflow_store.UI_MODE))
    for name in ("finegpt.model", "eval/val_loss", "eval/val_bpb", "tokens_seen"):
        expect(page.get_by_role("columnheader", name=name).first).to_be_visible()
    # each run's registered version and its aliases: the champion marked where runs are listed
    labels = [run.data.tags.get("finegpt.model") for run in runs]
    assert sorted(labels)[0].startswith("v1") and any("champion" in label for label in labels)
    for run in runs:  # the grid draws a run as two rows (pinned name, scrolling values)
        row = page.locator(f'[role=row][row-id="{run.info.run_id}"]')
        expect(row.filter(has_text=run.info.run_name)).to_be_visible()
        expect(row.filter(has_text=run.data.tags["finegpt.model"])).to_be_visible()
        for name in ("eval/val_loss", "eval/val_bpb", "tokens_seen"):
            expect(row.filter(has_text=metric_text(run, name))).to_be_visible()
    shoot(page, shots, "mlflow-experiment-runs")


def test_mlflow_compare_view_shows_both_runs_metrics_side_by_side(stack, page, shots):
    from finegpt_pipeline.tracking import store as mlflow_store, ui as mlflow_ui

    runs = training_runs(stack)
    page.goto(mlflow_ui.experiment_url(stack.mlflow, runs[0].info.experiment_id, mlflow_store.UI_MODE))
    for run in runs:
        page.locator(f'[role=row][row-id="{run.info.run_id}"]').get_by_role("checkbox").first.check()
    page.get_by_role("button", name="Compare").click()
    expect(page.get_by_text(re.compile("Comparing 2 Runs"))).to_be_visible()
    shoot(page, shots, "mlflow-compare-top")
    for run in runs:
        expect(page.get_by_text(run.info.run_id, exact=True).first).to_be_visible()
    label = page.get_by_text("eval/val_loss", exact=True).last  # the Metrics section's row
    label.scroll_into_view_if_needed()
    # the row: the numbers drawn level with its label, left to right (MLflow rounds them)
    values = label.evaluate("""(label) => {
        const y = label.getBoundingClientRect().top;
        return [...document.querySelectorAll('body *')]
            .filter(e => e.children.length === 0 && /^-?[0-9.]+$/.test(e.textContent.trim()))
            .filter(e => {  // drawn, not scrolled away under another table
                const r = e.getBoundingClientRect();
                const hit = document.elementFromPoint(r.left + 1, r.top + 1);
                return hit && (hit === e || e.contains(hit) || hit.contains(e));
            })
            .map(e => [e.getBoundingClientRect().left, e.getBoundingClientRect().top, e.textContent.trim()])
            .filter(([x, top]) => Math.abs(top - y) < 4)
            .sort((a, b) => a[0] - b[0]).map(([x, top, text]) => parseFloat(text));
    }""")
    # one column per run, in the order of the Run ID row
    columns = sorted(runs, key=lambda r: page.get_by_text(r.info.run_id, exact=True).first.bounding_box()["x"])
    expected = [run.data.metrics["eval/val_loss"] for run in columns]
    assert len(values) == len(expected) and all(
        abs(v - e) < 0.01 for v, e in zip(values, expected)), (values, expected)
    shoot(page, shots, "mlflow-compare")


def test_registered_model_shows_champion(stack, page, shots):
    client = mlflow_client(stack)
    assert [m.name for m in client.search_registered_models()] == ["finegpt"]
    name = os.environ.get("FINEGPT_MODEL_NAME", "finegpt")
    page.goto(f"{stack.mlflow}/#/models/{name}")
    expect(page.get_by_text("champion").first).to_be_visible()
    shoot(page, shots, "mlflow-registered-model")


def test_mlflow_run_links_back_to_its_dagster_run(stack, page, shots):
    latest = training_runs(stack)[-1]
    url = latest.data.tags.get("dagster.run_url")
    assert url and url.startswith(stack.dagster + "/runs/")
    from finegpt_pipeline.tracking import store as mlflow_store

    page.goto(f"{stack.mlflow}/#/experiments/{latest.info.experiment_id}/runs/"
              f"{latest.info.run_id}{mlflow_store.UI_MODE}")
    link = page.locator(f'a[href^="{stack.dagster}/runs/"]').first  # the description's link
    expect(link).to_be_visible()
    shoot(page, shots, "mlflow-run-dagster-link")
    page.goto(link.get_attribute("href"))
    run_id = url.rsplit("/", 1)[1]
    expect(page.get_by_text(run_id[:8]).first).to_be_visible()
    expect(page.get_by_text("Success").first).to_be_visible()
    shoot(page, shots, "dagster-run-from-mlflow")
