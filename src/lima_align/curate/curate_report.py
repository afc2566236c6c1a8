"""report.html for a curation run: where the data came from, what each rule removed, and how the
selected set spreads over domains and lengths (charts as PNG files and inline)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from ..charts import new_figure, save_png, style_axes
from ..html_parts import fragment, render_page
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


def _rules_rows(rules: dict[str, Any]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for src, r in rules.items():
        rows.append([fragment("<b>{}</b>", src), r["seen"], "", r["kept"]])
        rows += [[fragment("&nbsp;&nbsp;{}", rule), "", n, ""] for rule, n in r["dropped"].items()]
        rows += [[fragment("&nbsp;&nbsp;<i>{}</i> (rewrite)", t), "", n, ""] for t, n in r["transforms"].items()]
    return rows


def write_report(out: Path, manifest: dict[str, Any], candidates: list[dict[str, Any]],
                 selected: list[dict[str, Any]]) -> Path:
    """out/report.html (templates/curate.html) with its charts in out/charts/."""
    spread = spread_chart(manifest, out / "charts" / "domain_spread.png")
    lengths = length_chart(candidates, selected, out / "charts" / "response_lengths.png")
    bad, dd = manifest["bad_rows"], manifest["dedup"]
    licences = Counter(str((r.get("meta") or {}).get("license", "none")) for r in selected)
    page = render_page(
        "curate.html", title="Curation report", n_candidates=len(candidates), n_selected=len(selected),
        config_hash=manifest["config_hash"], created=time.strftime("%Y-%m-%d %H:%M:%S"), spread=spread,
        lengths=lengths, rules=_rules_rows(manifest["rules"]),
        dedup=[["in", dd["in"]], ["kept", dd["kept"]], *([k, v] for k, v in dd["dropped"].items())] if dd else [],
        inputs=[[i["path"], i["source"], f"{i['bytes'] / 1e6:.1f}", fragment("<code>{}</code>", i["sha256"][:16])]
                for i in manifest["inputs"]],
        sites=[[x["site"], x["url"], x.get("newest_question") or "unknown"] for x in manifest.get("sites") or []],
        licences=sorted(licences.items()), notices=manifest.get("notices") or [], bad_count=bad["count"],
        bad=[[x["where"], x["what"]] for x in bad["locations"][:50]])
    return write_text_atomic(out / "report.html", page)
