"""The eval report as a reader sees it: Markdown and one self-contained HTML page (the
loss-curve PNG from `loss_curve` inlined as base64). Pure rendering of `evaluate.evaluate`'s dict
(with `evaluate.with_context`'s sections: plan against reality, earlier runs, loss forecast;
and the training run's own in-run forecasts of its final val loss).
Each section is a short table (`section_tables`), so Dagster metadata can show them inline."""

from __future__ import annotations

import base64
import html as html_lib
from typing import Any

from finegpt_pipeline.data.progress import duration
from finegpt_pipeline.hardware import GIB
from finegpt_pipeline.plan import loss_forecast
from finegpt_pipeline.train import curve_forecast


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def verdict(report: dict[str, Any]) -> str:
    if report["beats_unigram"]:
        return f"beats the unigram baseline by {report['below_unigram']:.4f} nats/token"
    return (f"**does NOT beat the unigram baseline** ({-report['below_unigram']:.4f} nats/token "
            "above it): the model has learnt less than token frequencies")


def diff_text(diff: dict[str, Any]) -> str:
    """`champion.config_diff`'s result in one line (kept here: rendering imports no MLflow)."""
    if not diff["differs"]:
        return f"same config as champion v{diff['version']}"
    return (f"differs from champion v{diff['version']} in: " + "; ".join(
        f"{key} {mine} (champion {theirs})" for key, (mine, theirs) in diff["differs"].items()))


def champion_line(report: dict[str, Any]) -> str:
    """The verdict against the champion in words, with its numbers (`champion.against_champion`)."""
    c = report.get("champion") or {}
    verdict_text = c.get("verdict", "not compared")
    this = f"v{report['model_version']}" if report.get("model_version") else "This model"
    if "delta" not in c:
        if c.get("version") is None:
            return f"Champion: {verdict_text} ({this} not compared)."
        return f"Champion v{c['version']}: {this} {verdict_text}."
    than = "from" if verdict_text == "no different" else "than"
    bpb = (f", {c['delta_bpb']:+.4f} bits/byte" if c.get("delta_bpb") is not None else "")
    return (f"**{this} is {verdict_text.upper()} "
            f"{than} champion v{c['version']}**: {c['delta']:+.4f} ± {c['delta_se']:.4f} nats "
            f"({c['delta_in_se']:+.1f} se{bpb}) on the same val.bin "
            f"({report['val_loss']:.4f} vs {c['val_loss']:.4f}; champion's numbers "
            f"{c.get('source', '')}).")


def unigram_line(report: dict[str, Any]) -> str:
    return f"Against the unigram baseline: the model {verdict(report)}."


def headline(report: dict[str, Any]) -> str:
    return (f"val loss {report['val_loss']:.4f} ± {report['val_loss_se']:.4f} over "
            f"{report['tokens']:,} tokens, {report['val_bpb']:.4f} bits/byte, perplexity "
            f"{report['perplexity']:.2f}; unigram {report['unigram_loss']:.4f}, uniform "
            f"{report['uniform_loss']:.4f}; " + verdict(report).replace("**", ""))


def versus(margin: float, baseline: str) -> str:
    """The model against a baseline in words (`margin`: the baseline's loss minus the model's),
    never a signed "below" that reads as a double negative."""
    return (f"{margin:.4f} nats/token better than {baseline}" if margin >= 0
            else f"{-margin:.4f} nats/token worse than {baseline}")


def _gap(nats: float) -> str:
    """How far the model sits from a baseline, in words that keep their sign."""
    return f"model {nats:.4f} below" if nats >= 0 else f"model {-nats:.4f} ABOVE"


def numbers_table(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(measure, model, note) rows shared by the Markdown and the HTML."""
    r = report
    return [
        ("val loss (nats/token)", f"{r['val_loss']:.4f} ± {r['val_loss_se']:.4f}",
         f"{r['tokens']:,} tokens; ± is {r['val_loss_se_method']}"),
        ("perplexity", f"{r['perplexity']:.2f}", "exp(val loss)"),
        ("bits per byte", f"{r['val_bpb']:.4f}",
         f"EOT excluded: {r['bpb_tokens']:,} tokens, {r['bpb_bytes']:,} UTF-8 bytes"),
        ("unigram baseline", f"{r['unigram_loss']:.4f} ({r['unigram_bpb']:.4f} bpb)",
         f"train.bin frequencies, add-{r['unigram_alpha']:g}; {_gap(r['below_unigram'])}"),
        ("uniform baseline", f"{r['uniform_loss']:.4f} ({r['uniform_bpb']:.4f} bpb)",
         f"ln 50257; {_gap(r['below_uniform'])}"),
    ]


# ---------------------------------------------------------------- plan, history, forecast


def _seconds(s: float | None) -> str:
    return "n/a" if s is None else duration(s)


def _count(n: float | None) -> str:
    if n is None:
        return "n/a"
    for div, unit in ((1e9, " B"), (1e6, " M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.3g}"


def _quantity(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "s":
        return _seconds(value)
    if unit == "bytes":
        return f"{value / GIB:.3g} GiB"
    if unit == "tokens/s":
        return f"{value:,.0f}"
    return f"{value:.3g}"


def plan_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    """(quantity, planned, measured, measured/planned, source) rows of the plan against the run."""
    pvr = report.get("plan_vs_run")
    if not pvr:
        return []
    rows = []
    for r in pvr["rows"]:
        measured = _quantity(r["measured"], r["unit"]) if r["measured"] is not None else (
            r["note"] or "not measured")
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"
        rows.append((r["quantity"], _quantity(r["planned"], r["unit"]), measured, ratio,
                     r["source"].split(" (")[0]))
    return rows


def _loss_se(loss: float | None, se: float | None) -> str:
    if loss is None:
        return "not evaluated"
    return f"{loss:.3f} ± {se:.3f}" if se is not None else f"{loss:.3f}"


def history_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    """(run, date, model, tokens, val loss ± se, bpb, wall, tokens/s, val.bin) rows, newest
    first, then the GPT-2 reference."""
    hist = report.get("history")
    if not hist:
        return []
    rows = []
    for r in hist["rows"]:
        same = "this" if r["this_run"] else ("same" if r.get("same_val") else (
            "other" if r.get("val_sha256") else "?"))
        # a registered run by its version and aliases ("v1 champion"), else its run id
        run = r.get("registered") or (r["run_id"][:8] if r["run_id"] else "-")
        if r["this_run"]:
            run = "**this run**" + (f", {r['registered']}" if r.get("registered") else "")
        rows.append((run,
                     r["date"], r["model"], _count(r["tokens"]),
                     _loss_se(r["val_loss"], r["val_loss_se"]),
                     f"{r['val_bpb']:.3f}" if r["val_bpb"] is not None else "-",
                     _seconds(r["wall_time_s"]),
                     f"{r['tokens_per_s']:,.0f}" if r["tokens_per_s"] else "-", same))
    ref = hist["reference"]
    rows.append((ref["name"], "reference", ref["model"], _count(ref["tokens"]),
                 f"≈{ref['val_loss']:.2f}", "-", "-", "-", "other"))  # the note: below the table
    return rows


HISTORY_HEADER = ("run", "date", "model", "tokens", "val loss ± se", "bpb", "wall", "tok/s",
                  "val.bin")
PLAN_HEADER = ("quantity", "planned", "measured", "measured/planned", "plan source")
FORECAST_HEADER = ("N (params)", "D (tokens)", "forecast", "measured", "measured - forecast",
                   "forecast from")


def forecast_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    f = report.get("forecast")
    if not f:
        return []
    if not f.get("trusted", True):
        return [(_count(f["n"]), _count(f["d"]), "none", f"{f['measured']:.3f}", "-",
                 loss_forecast.shown(f))]
    return [(_count(f["n"]), _count(f["d"]), f"{f['val_loss']:.3f}", f"{f['measured']:.3f}",
             f"{f['measured_minus_forecast']:+.3f}", f["label"])]


# what the Dagster UI shows inline: the columns that fit its value column at a 1,400 px window
# (the report keeps every column)
INLINE_HISTORY = ("run", "model", "tokens", "val loss ± se", "val.bin")
INLINE_PLAN = ("quantity", "planned", "measured")
INLINE_FORECAST = ("forecast", "measured", "forecast from")


def md_table(header: tuple[str, ...], rows: list[tuple[str, ...]],
             columns: tuple[str, ...] | None = None) -> str:
    """A Markdown table; `columns` keeps only those of `header`, in its order."""
    if columns:
        keep = [i for i, name in enumerate(header) if name in columns]
        header, rows = tuple(header[i] for i in keep), [tuple(row[i] for i in keep) for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def section_tables(report: dict[str, Any], inline: bool = False) -> dict[str, str]:
    """The sections as short Markdown (each well under the UI's ~1000-character inline
    limit): `plan_vs_run`, `earlier_runs`, `loss_forecast`, `curve_forecast`; each says why
    when it is empty. `inline`: only the columns the Dagster UI shows (INLINE_*)."""
    hist = report.get("history") or {}
    f = report.get("forecast")
    plan = plan_rows(report)
    pick = (lambda columns: columns) if inline else (lambda columns: None)
    return {
        "plan_vs_run": md_table(PLAN_HEADER, plan, pick(INLINE_PLAN)) if plan else
        "_no plan report beside the checkpoint (plan.json, summary.json)_",
        "earlier_runs": md_table(HISTORY_HEADER, history_rows(report), pick(INLINE_HISTORY)) + (
            "" if hist.get("tracked") else f"\n\n_{hist.get('note', 'no MLflow tracking')}_"),
        "loss_forecast": md_table(FORECAST_HEADER, forecast_rows(report), pick(INLINE_FORECAST)) if f else
        "_no forecast: tokens seen unknown (no summary.json beside the checkpoint)_",
        "curve_forecast": curve_forecast.forecast_md(report.get("curve_forecasts")) or
        "_no in-run forecasts in the run's summary.json (a run from before them)_",
    }


CURVE_NOTE = (f"During training the final val loss was forecast at each eval from the run's own "
              f"val curve ({curve_forecast.LAW} fitted to the evals after warmup; under wsd "
              "the stable phase only, so the cool-down's extra drop is not in it). The rows "
              "set what it said at 25/50/75 % of the steps against the final value: how far to "
              "trust the live forecast.")


def _sections_md(report: dict[str, Any]) -> list[str]:
    tables, f, hist = section_tables(report), report.get("forecast"), report.get("history") or {}
    lines = ["## Plan against reality", "", tables["plan_vs_run"], "",
             "Measured / planned says how far to trust the planner: 1 is exact; step and wall "
             "time below 1 (tokens/s above 1) mean the run was faster than planned.", "",
             "## Earlier runs of the experiment", "", tables["earlier_runs"], "",
             f"{hist.get('note', '')}. val.bin: `same` = evaluated on this val.bin (sha256 "
             f"`{(report.get('val_sha256') or '?')[:12]}`), `other` = another one; the "
             f"reference ({hist['reference']['note']}): {hist['reference']['source']}."
             if hist else "", "",
             "## Loss forecast", "", tables["loss_forecast"], ""]
    if f:
        lines += [f"{f['law']}, N = {f['n_meaning']}, D = {f['d_meaning']}; "
                  f"coefficients {', '.join(f'{k}={v:.4g}' for k, v in f['coefficients'].items())}"
                  f". {f['note']}.", ""]
    if report.get("curve_forecasts"):
        lines += ["## Final val loss forecast during training", "", tables["curve_forecast"], "",
                  CURVE_NOTE, ""]
    return lines


def markdown(report: dict[str, Any], image: str | None = "loss_curve.png") -> str:
    """The report in Markdown; `image` is the plot's address (None: no plot)."""
    r = report
    lines = [f"# Eval report: {r['run_dir']}", "",
             f"Checkpoint `{r['checkpoint']}` (iter {r['iter_num']}, {r['params']:,} params), "
             f"val.bin of `{r['bins_dir']}`.", "",
             f"- {champion_line(r)}", f"- {unigram_line(r)}",
             *([f"- Config: {diff_text(r['config_diff'])}."] if r.get("config_diff") else []), "",
             f"_Rule: {(r.get('champion') or {}).get('rule', 'no champion comparison')}._", "",
             "| measure | value | note |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in numbers_table(r)]
    lines += ["", "Every token of val.bin after the first is predicted once, in consecutive "
              "non-overlapping windows of block_size (the last one shorter).", "",
              *(["## Loss curves", "", f"![loss curves]({image})", ""] if image else []),
              *_sections_md(r), "## Generations", ""]
    for g in r["generations"]:
        prompt = g["prompt"] or "(new document)"
        text = g["text"].replace("\n", " ")
        lines.append(f"- **{prompt}** (seed {g['seed']}): {text}")
    return "\n".join(lines) + "\n"


def _html_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    esc = html_lib.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(str(c).replace('**', ''))}</td>" for c in row)
                   + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _sections_html(report: dict[str, Any]) -> str:
    esc, f, hist = html_lib.escape, report.get("forecast"), report.get("history") or {}
    plan = plan_rows(report)
    parts = ["<h2>Plan against reality</h2>",
             _html_table(PLAN_HEADER, plan) if plan else
             "<p>No plan report beside the checkpoint.</p>",
             "<h2>Earlier runs of the experiment</h2>",
             _html_table(HISTORY_HEADER, history_rows(report)),
             f"<p>{esc(hist.get('note', ''))}; reference: {esc(hist['reference']['source'])}"
             "</p>" if hist else "", "<h2>Loss forecast</h2>"]
    if f:
        parts += [_html_table(FORECAST_HEADER, forecast_rows(report)),
                  f"<p>{esc(f['law'])}, N = {esc(f['n_meaning'])}, D = {esc(f['d_meaning'])}. "
                  f"{esc(f['note'])}.</p>"]
    else:
        parts.append("<p>No forecast: tokens seen unknown.</p>")
    if report.get("curve_forecasts"):
        parts += ["<h2>Final val loss forecast during training</h2>",
                  _html_table(curve_forecast.FORECAST_HEADER,
                              curve_forecast.forecast_rows(report["curve_forecasts"])),
                  f"<p>{esc(CURVE_NOTE)}</p>"]
    return "\n".join(parts)


def html(report: dict[str, Any], png: bytes) -> str:
    r, esc = report, html_lib.escape
    rows = "".join(f"<tr><td>{esc(a)}</td><td>{esc(b)}</td><td>{esc(c)}</td></tr>"
                   for a, b, c in numbers_table(r))
    gens = "".join(f"<li><b>{esc(g['prompt'] or '(new document)')}</b> (seed {g['seed']}): "
                   f"<pre>{esc(g['text'])}</pre></li>" for g in r["generations"])
    flag = "" if r["beats_unigram"] else ' style="color:#b00020"'
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Eval report: {esc(r['run_dir'])}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em}}
pre{{white-space:pre-wrap}}</style></head><body>
<h1>Eval report: {esc(r['run_dir'])}</h1>
<p>Checkpoint <code>{esc(r['checkpoint'])}</code> (iter {r['iter_num']}, {r['params']:,} params),
val.bin of <code>{esc(r['bins_dir'])}</code>.</p>
<ul><li><b>{esc(champion_line(r).replace('**', ''))}</b></li>
<li{flag}>{esc(unigram_line(r).replace('**', ''))}</li>
{f"<li>Config: {esc(diff_text(r['config_diff']))}.</li>" if r.get("config_diff") else ""}</ul>
<p><i>Rule: {esc((r.get('champion') or {}).get('rule', 'no champion comparison'))}.</i></p>
<table><tr><th>measure</th><th>value</th><th>note</th></tr>{rows}</table>
<p>Every token of val.bin after the first is predicted once, in consecutive non-overlapping
windows of block_size (the last one shorter).</p>
<h2>Loss curves</h2><img alt="loss curves" src="{png_data_uri(png)}">
{_sections_html(r)}
<h2>Generations</h2><ul>{gens}</ul>
</body></html>
"""
