"""Report sections for `analyze shift` and `analyze retention` summaries ("What alignment changed").

`lima-align report` takes these JSON summaries beside judgment files: `split_section_files` picks them
out by their "kind" field, and `analysis_sections` (one of report.SECTIONS) gives their sections and
their numbers for report.json (under "analysis").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..charts import C_A, C_B, C_EXC, C_PASS, C_TIE, new_figure, save_png, stacked_bars, style_axes
from ..html_parts import Markup, estimate, format_pct, fragment, render_page, trusted
from ..report_parts import ReportInputs, Section

KINDS = ("shift", "retention")
C_UNSHIFTED, C_MARGINAL, C_SHIFTED = C_EXC, C_PASS, "#d1495b"


def section_kind(path: Path) -> str | None:
    """"shift" or "retention" for one of our summaries, else None (a judgments file, read as before)."""
    if path.suffix != ".json" or not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None
    kind = obj.get("kind") if isinstance(obj, dict) else None
    return kind if kind in KINDS else None


def split_section_files(paths: list[Path]) -> tuple[list[Path], list[dict[str, Any]]]:
    """(judgment files, loaded analysis summaries) from the report's file list, order kept."""
    judgments, sections = [], []
    for p in paths:
        if section_kind(Path(p)):
            sections.append({**json.loads(Path(p).read_text(encoding="utf-8")), "file": str(p)})
        else:
            judgments.append(p)
    return judgments, sections


# ----------------------------------------------------------------- charts


def _label(s: dict[str, Any]) -> str:
    return s.get("label") or f"{Path(str(s['aligned'])).name} vs {Path(str(s['base'])).name}"


def _name_sections(sections: list[dict[str, Any]]) -> None:
    """Give each summary a label; two files comparing the same models are told apart by file name."""
    plain = [_label(s) for s in sections]
    for s, text in zip(sections, plain, strict=True):
        if plain.count(text) > 1:
            s["label"] = f"{text} ({Path(s['file']).stem})"


def shift_share_chart(shifts: list[dict[str, Any]], path: Path) -> str:
    share = lambda s, c: s["shares"][c]["value"] or 0.0  # noqa: E731
    segments = [(name, color, [share(s, c) for s in shifts]) for name, color, c in
                (("unshifted (rank 1)", C_UNSHIFTED, "unshifted"), ("marginal (rank 2-3)", C_MARGINAL, "marginal"),
                 ("shifted (rank > 3)", C_SHIFTED, "shifted"))]
    notes = [f"{s['tokens']} tokens, {s['answers']} answers" for s in shifts]
    fig = stacked_bars([_label(s) for s in shifts], segments, notes,
                       "Aligned answer tokens by their rank under the base model", midline=False)
    return save_png(fig, path)


def shift_position_chart(shifts: list[dict[str, Any]], path: Path) -> str:
    fig = new_figure(9.5, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    colors = [C_SHIFTED, C_A, C_B, C_TIE]
    for k, s in enumerate(shifts):
        xs = [(b["bin"][0] + b["bin"][1]) / 2 for b in s["by_position"] if b["tokens"]]
        shifted = [b["shifted"] for b in s["by_position"] if b["tokens"]]
        not_top = [b["shifted"] + b["marginal"] for b in s["by_position"] if b["tokens"]]
        c = colors[k % len(colors)]
        ax.plot(xs, shifted, "o-", color=c, lw=2, ms=4, label=f"shifted: {_label(s)}")
        ax.plot(xs, not_top, "--", color=c, lw=1, alpha=0.7, label=f"shifted or marginal: {_label(s)}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, None)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1], ["start", "25%", "50%", "75%", "end"])
    ax.yaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
    ax.grid(axis="y", color="#eee")
    style_axes(ax)
    ax.tick_params(axis="y", labelsize=8, colors="#555")
    ax.set_xlabel("relative position in the answer", fontsize=9, color="#555")
    ax.set_title("Where in the answer the base model disagrees", loc="left", fontsize=11, color="#222", pad=10)
    ax.legend(frameon=False, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    return save_png(fig, path)


def retention_chart(rets: list[dict[str, Any]], path: Path) -> str:
    rows = [(f"{m['role']}: {Path(str(m['model'])).name}", m) for r in rets for m in r["models"]]
    fig = new_figure(9.5, 1.2 + 0.45 * len(rows))
    panels = (("perplexity", "Perplexity on held-out text (lower is better)", False),
              ("accuracy", "Multiple-choice accuracy (length-normalised)", True))
    ys = list(range(len(rows)))[::-1]
    for j, (key, title, pct) in enumerate(panels):
        ax = fig.add_subplot(1, 2, j + 1)
        for y, (_, m) in zip(ys, rows, strict=True):
            est = (m.get("mcq") or {}).get("accuracy") if key == "accuracy" else m.get("perplexity")
            if not est or est["value"] is None:
                continue
            color = C_A if m["role"] == "base" else C_B
            lo, hi = est["ci"]
            if lo is not None:
                ax.plot([lo, hi], [y, y], color=color, lw=2.5, alpha=0.45, solid_capstyle="round")
            ax.plot([est["value"]], [y], "o", color=color, ms=7)
            ax.text(est["value"], y + 0.2, f"{100 * est['value']:.1f}%" if pct else f"{est['value']:.2f}",
                    ha="center", va="bottom", fontsize=8, color="#222")
        ax.set_yticks(ys, [label for label, _ in rows] if j == 0 else [""] * len(rows))
        ax.set_ylim(-0.6, len(rows) - 0.3)
        if pct:
            ax.set_xlim(0, 1)
            ax.xaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f}%")
        ax.grid(axis="x", color="#eee")
        style_axes(ax)
        ax.set_title(title, loc="left", fontsize=9.5, color="#222")
    return save_png(fig, path)


# ----------------------------------------------------------------- HTML


def _token(t: str) -> Markup:
    return fragment("<code>{}</code>", repr(t)[1:-1])


def _shift_section(shifts: list[dict[str, Any]], images: dict[str, str]) -> str:
    """templates/shift_section.html: shares per comparison, and each one's most often shifted tokens."""
    rows = [[_label(s), s["answers"], s["tokens"],
             *(trusted(estimate(s["shares"][c])) for c in ("unshifted", "marginal", "shifted"))] for s in shifts]
    tops = []
    for s in shifts:
        top = []
        for t in s["top_shifted"]:
            ex = t["examples"][0] if t["examples"] else None
            example = fragment("<code>&hellip;{}</code><b>{}</b><br><span class=ci>base preferred {} (rank {} for this "
                               "token), {}</span>", ex["before"], _token(t["token"]), _token(ex["base_top"]),
                               ex["rank"], ex["prompt_id"]) if ex else ""
            top.append([_token(t["token"]), t["shifted"], t["occurrences"], trusted(format_pct(t["share_shifted"])),
                        example])
        if top:
            tops.append((_label(s), top))
    return render_page("shift_section.html", shares_chart=images["shift_shares"],
                       position_chart=images["shift_position"], rows=rows, tops=tops)


def _retention_section(rets: list[dict[str, Any]], images: dict[str, str]) -> str:
    """templates/retention_section.html: perplexity and accuracy per model, the change, accuracy by subject."""
    rows, subjects = [], []
    for r in rets:
        for m in r["models"]:
            mcq = m.get("mcq") or {}
            rows.append([m["role"], Path(str(m["model"])).name,
                         *(trusted(estimate(e, pct)) for e, pct in ((m.get("perplexity"), False),
                                                                    (mcq.get("accuracy"), True),
                                                                    (mcq.get("accuracy_raw"), True))),
                         mcq.get("n", 0)])
        base, aligned = r["models"][0].get("mcq") or {}, r["models"][-1].get("mcq") or {}
        for subject in sorted(set(base.get("by_subject", {})) | set(aligned.get("by_subject", {}))):
            b, a = base.get("by_subject", {}).get(subject, {}), aligned.get("by_subject", {}).get(subject, {})
            subjects.append([subject, b.get("n", a.get("n", 0)), trusted(estimate(b.get("accuracy"))),
                             trusted(estimate(a.get("accuracy")))])
    differences = [(Path(str(r["aligned"])).name, trusted(estimate(r["difference"]["accuracy"]))) for r in rets
                   if r.get("difference", {}).get("accuracy", {}).get("value") is not None]
    return render_page("retention_section.html", chart=images["retention"], rows=rows, subjects=subjects,
                       differences=differences)


def analysis_sections(inputs: ReportInputs) -> Section | None:
    """The shift and retention sections of the report (one of report.SECTIONS), their charts drawn into
    the report's charts/, and every summary but its per-question items under "analysis"."""
    sections = inputs.analyses
    if not sections:
        return None
    shifts = [s for s in sections if s["kind"] == "shift"]
    rets = [s for s in sections if s["kind"] == "retention"]
    _name_sections(shifts)
    images: dict[str, str] = {}
    html_parts = []
    if shifts:
        images["shift_shares"] = shift_share_chart(shifts, inputs.charts_dir / "shift_shares.png")
        images["shift_position"] = shift_position_chart(shifts, inputs.charts_dir / "shift_position.png")
        html_parts.append(_shift_section(shifts, images))
    if rets:
        images["retention"] = retention_chart(rets, inputs.charts_dir / "retention.png")
        html_parts.append(_retention_section(rets, images))
    data = {"analysis": [{k: v for k, v in s.items() if k != "mcq_items"} for s in sections]}
    return Section("".join(html_parts), data, tuple(images))
