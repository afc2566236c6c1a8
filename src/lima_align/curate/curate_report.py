"""report.html for a curation run: where the data came from, what each rule removed, and how the
selected set spreads over domains and lengths (charts as PNG files and inline)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from ..charts import new_figure, save_png, style_axes
from ..html_parts import REPORT_CSS, escape, html_table
from ..jsonl import write_text_atomic

C_CAND, C_SEL = "#c7ccd4", "#3b6fb6"


def _response_len(r: dict[str, Any]) -> int:
    msgs = r.get("messages") or []
    return sum(len(m.get("content", "")) for m in msgs if m.get("role") == "assistant")


def spread_chart(manifest: dict[str, Any], path: Path) -> str:
    """Records per group and per domain: candidates (grey) beside selected (blue)."""
    cand, sel = manifest["counts"]["candidates"], manifest["counts"]["selected"]
    fig = new_figure(9.5, 3.6)
    for i, key in enumerate(("group", "domain")):
        ax = fig.add_subplot(1, 2, i + 1)
        labels = sorted(set(cand[key]) | set(sel[key]))
        ys = list(range(len(labels)))[::-1]
        ax.barh([y + 0.2 for y in ys], [cand[key].get(x, 0) for x in labels], height=0.4, color=C_CAND,
                label="candidates")
        ax.barh([y - 0.2 for y in ys], [sel[key].get(x, 0) for x in labels], height=0.4, color=C_SEL,
                label="selected")
        ax.set_yticks(ys, labels)
        style_axes(ax)
        ax.set_title(f"records per {key}", loc="left", fontsize=11, color="#222")
        if i == 0:
            ax.legend(frameon=False, fontsize=8)
    return save_png(fig, path)


def length_chart(candidates: list[dict[str, Any]], selected: list[dict[str, Any]], path: Path) -> str:
    """Response length distributions (characters), per source, candidates and selected."""
    sources = sorted({str((r.get("meta") or {}).get("source", r.get("source", ""))) for r in candidates})
    fig = new_figure(9.5, 1.2 + 1.9 * max(1, len(sources)))
    for i, src in enumerate(sources or ["all"]):
        ax = fig.add_subplot(max(1, len(sources)), 1, i + 1)
        for recs, color, label in ((candidates, C_CAND, "candidates"), (selected, C_SEL, "selected")):
            lens = [_response_len(r) for r in recs if str((r.get("meta") or {}).get("source", r.get("source", ""))) == src]
            if lens:
                ax.hist(lens, bins=30, color=color, alpha=0.85, label=f"{label} (n={len(lens)})")
        style_axes(ax)
        ax.set_title(f"{src}: response length (characters)", loc="left", fontsize=10, color="#222")
        ax.legend(frameon=False, fontsize=8)
    return save_png(fig, path)


def _rules_table(rules: dict[str, Any]) -> str:
    rows = []
    for src, r in rules.items():
        rows.append([f"<b>{escape(src)}</b>", r["seen"], "", r["kept"]])
        rows += [[f"&nbsp;&nbsp;{escape(rule)}", "", n, ""] for rule, n in r["dropped"].items()]
        rows += [[f"&nbsp;&nbsp;<i>{escape(t)}</i> (rewrite)", "", n, ""] for t, n in r["transforms"].items()]
    return html_table(["source / rule", "seen", "dropped", "kept"], rows)


def write_report(out: Path, manifest: dict[str, Any], candidates: list[dict[str, Any]],
                 selected: list[dict[str, Any]]) -> Path:
    spread = spread_chart(manifest, out / "charts" / "domain_spread.png")
    lengths = length_chart(candidates, selected, out / "charts" / "response_lengths.png")
    bad = manifest["bad_rows"]
    dd = manifest["dedup"]
    parts = [(f"<header><h1>Curation report</h1><div class=sub>{len(candidates)} candidates &middot; "
             f"{len(selected)} selected &middot; config {manifest['config_hash']} &middot; "
              f"generated {time.strftime('%Y-%m-%d %H:%M:%S')}</div></header>"),
             (f"<section><h2>Domain spread</h2><img src=\"data:image/png;base64,{spread}\" class=chart "
              "alt=\"records per group and domain\"></section>"),
             (f"<section><h2>Response lengths</h2><img src=\"data:image/png;base64,{lengths}\" class=chart "
              "alt=\"response length histograms\"></section>"),
             (f"<section><h2>What each rule removed</h2>{_rules_table(manifest['rules'])}<p class=note>A record is "
              "dropped by the first rule it fails, in the order shown.</p></section>")]
    if dd:
        parts.append("<section><h2>Duplicates</h2>"
                     + html_table(["", "records"], [["in", dd["in"]], ["kept", dd["kept"]]]
                                  + [[escape(k), v] for k, v in dd["dropped"].items()]) + "</section>")
    parts.append("<section><h2>Inputs</h2>" + html_table(
        ["file", "source", "MB", "sha256"],
        [[escape(i["path"]), escape(i["source"]), f"{i['bytes'] / 1e6:.1f}", f"<code>{i['sha256'][:16]}</code>"]
         for i in manifest["inputs"]], text_cols=2) + "</section>")
    if manifest.get("sites"):
        parts.append("<section><h2>Sites</h2>" + html_table(
            ["site", "URL", "newest question"],
            [[escape(x["site"]), escape(x["url"]), escape(x.get("newest_question") or "unknown")]
             for x in manifest["sites"]],
            text_cols=3) + "</section>")
    licences = Counter(str((r.get("meta") or {}).get("license", "none")) for r in selected)
    if licences:
        parts.append("<section><h2>Licences of the selected records</h2>" + html_table(
            ["licence", "records"], [[escape(k), v] for k, v in sorted(licences.items())]) + "</section>")
    if manifest.get("notices"):
        parts.append("<section><h2>Notices</h2><ul>" + "".join(f"<li>{escape(n)}</li>" for n in manifest["notices"])
                     + "</ul></section>")
    if bad["count"]:
        parts.append(f"<section><h2>Bad rows skipped: {bad['count']}</h2>"
                     + html_table(["where", "what"],
                                  [[escape(x["where"]), escape(x["what"])] for x in bad["locations"][:50]],
                                  text_cols=2) + "</section>")
    page = ('<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            'content="width=device-width, initial-scale=1"><title>Curation report</title>'
            f"<style>{REPORT_CSS}</style></head><body><main>{''.join(parts)}</main></body></html>")
    return write_text_atomic(out / "report.html", page)
