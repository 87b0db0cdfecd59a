"""The eval report as a reader sees it: Markdown and one self-contained HTML page (the
loss-curve PNG from `loss_curve` inlined as base64). Pure rendering of `evaluate.evaluate`'s dict."""

from __future__ import annotations

import base64
import html as html_lib
from typing import Any


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def verdict(report: dict[str, Any]) -> str:
    if report["beats_unigram"]:
        return f"beats the unigram baseline by {report['below_unigram']:.4f} nats/token"
    return (f"**does NOT beat the unigram baseline** ({-report['below_unigram']:.4f} nats/token "
            "above it): the model has learnt less than token frequencies")


def headline(report: dict[str, Any]) -> str:
    return (f"val loss {report['val_loss']:.4f} ± {report['val_loss_se']:.4f} over "
            f"{report['tokens']:,} tokens, {report['val_bpb']:.4f} bits/byte, perplexity "
            f"{report['perplexity']:.2f}; unigram {report['unigram_loss']:.4f}, uniform "
            f"{report['uniform_loss']:.4f}; " + verdict(report).replace("**", ""))


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


def markdown(report: dict[str, Any], image: str | None = "loss_curve.png") -> str:
    """The report in Markdown; `image` is the plot's address (None: no plot)."""
    r = report
    lines = [f"# Eval report: {r['run_dir']}", "",
             f"Checkpoint `{r['checkpoint']}` (iter {r['iter_num']}, {r['params']:,} params), "
             f"val.bin of `{r['bins_dir']}`.", "",
             f"The model {verdict(r)}.", "",
             "| measure | value | note |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in numbers_table(r)]
    lines += ["", "Every token of val.bin after the first is predicted once, in consecutive "
              "non-overlapping windows of block_size (the last one shorter).", "",
              *(["## Loss curves", "", f"![loss curves]({image})", ""] if image else []),
              "## Generations", ""]
    for g in r["generations"]:
        prompt = g["prompt"] or "(new document)"
        text = g["text"].replace("\n", " ")
        lines.append(f"- **{prompt}** (seed {g['seed']}): {text}")
    return "\n".join(lines) + "\n"


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
<p{flag}>The model {esc(verdict(r).replace('**', ''))}.</p>
<table><tr><th>measure</th><th>value</th><th>note</th></tr>{rows}</table>
<p>Every token of val.bin after the first is predicted once, in consecutive non-overlapping
windows of block_size (the last one shorter).</p>
<h2>Loss curves</h2><img alt="loss curves" src="{png_data_uri(png)}">
<h2>Generations</h2><ul>{gens}</ul>
</body></html>
"""
