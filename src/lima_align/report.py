"""Pages people read: the LIMA-style evaluation report over judgment files (report.json with every number, a
self-contained report.html, charts/*.png), and the side-by-side comparison of two generation files (which
lives in compare_page.py and is re-exported here)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .dialogue import report as dialogue_report
from .analyze.report_sections import analysis_sections, split_section_files
from .compare_page import side_by_side_html  # noqa: F401  (re-exported: the side-by-side page lives there)
from .charts import C_A, C_B, C_EXC, C_FAIL, C_PASS, C_TIE, new_figure, save_png, stacked_bars, style_axes
from .html_parts import Markup, estimate, format_pct, fragment, render_page, trusted
from .jsonl import write_text_atomic
from .pooled import COLLAPSE_OVER
from .report_agreement import agreement_section, compact_view
from .report_parts import ReportInputs, Section
from .stats import comparisons, is_consistent, load_judgments, short_judge, summarize
from .training_report import split_run_folders, training_sections

# ----------------------------------------------------------------- evaluation report


def win_rate_chart(pairwise: list[dict[str, Any]], path: Path) -> str:
    """LIMA Figure 1: one bar per comparison x judge with the a-wins / tie / b-wins shares."""
    same_a = len({p["model_a"] for p in pairwise}) == 1
    same_b = len({p["model_b"] for p in pairwise}) == 1
    name_a = f"{pairwise[0]['model_a']} wins" if same_a else "first model wins"
    name_b = (f"{pairwise[0]['model_b']} wins" if same_b else
              f"{pairwise[0]['model_a']} loses" if same_a else "second model wins")  # LIMA's own legend wording
    share = lambda p, k: p["rates"][k]["value"] or 0.0  # noqa: E731
    notes = [f"n={p['n_parsed']}" + (f", {p['counts']['null']} unparsed" if p["counts"]["null"] else "")
             for p in pairwise]
    segments = [(name, color, [share(p, k) for p in pairwise])
                for name, color, k in ((name_a, C_A, "a"), ("tie", C_TIE, "tie"), (name_b, C_B, "b"))]
    fig = stacked_bars([p["label"] for p in pairwise], segments, notes,
                       "Share of prompts where each answer was preferred", midline=True)
    return save_png(fig, path)


def rating_chart(absolute: list[dict[str, Any]], path: Path) -> str:
    """LIMA Figure 3: Fail / Pass / Excellent shares per model (x judge)."""
    rows = [a for a in absolute if a["scale"] == "fail_pass_excellent"]
    share = lambda a, k: a["shares"][k]["value"] or 0.0  # noqa: E731
    notes = [f"n={a['n_parsed']}" + (f", {a['null']} unparsed" if a["null"] else "") for a in rows]
    segments = [(name, color, [share(a, name.lower()) for a in rows])
                for name, color in (("Fail", C_FAIL), ("Pass", C_PASS), ("Excellent", C_EXC))]
    fig = stacked_bars([a["label"] for a in rows], segments, notes,
                       "Share of answers rated Fail / Pass / Excellent", midline=False)
    return save_png(fig, path)


def mean_score_chart(absolute: list[dict[str, Any]], path: Path) -> str:
    """Mean 1-6 helpfulness score per model (x judge) with its 95% CI."""
    rows = [a for a in absolute if a["scale"] == "helpfulness_6" and a["mean"]["value"] is not None]
    fig = new_figure(9.5, 0.9 + 0.5 * len(rows))
    ax = fig.add_subplot(1, 1, 1)
    ys = list(range(len(rows)))[::-1]
    for y, a in zip(ys, rows, strict=True):
        m, (lo, hi) = a["mean"]["value"], a["mean"]["ci"]
        if lo is not None:
            ax.plot([lo, hi], [y, y], color=C_A, lw=2.5, alpha=0.45, solid_capstyle="round")
        ax.plot([m], [y], "o", color=C_A, ms=7)
        ax.text(m, y + 0.22, f"{m:.2f}", ha="center", va="bottom", fontsize=8.5, color="#222")
    ax.set_yticks(ys, [a["label"] for a in rows])
    ax.set_xlim(0.8, 6.2)
    ax.set_ylim(-0.6, len(rows) - 0.3)
    ax.set_xticks([1, 2, 3, 4, 5, 6])
    ax.grid(axis="x", color="#eee")
    style_axes(ax)
    ax.set_title("Mean helpfulness (1-6) with 95% CI", loc="left", fontsize=11, color="#222")
    return save_png(fig, path)


def _fmt_p(p: float | None) -> str:
    if p is None:
        return "&ndash;"
    text = "&lt;0.0001" if p < 1e-4 else f"{p:.4f}" if p < 0.01 else f"{p:.3f}"
    return f"<span class=sig>{text}</span>" if p < 0.05 else text


def _card(p: dict[str, Any]) -> dict[str, Any]:
    r = p["rates"]
    return {"label": p["label"], "model_a": p["model_a"], "p": trusted(_fmt_p(p["sign_test"]["p_value"])),
            "segments": [(f"{100 * (r[k]['value'] or 0):.2f}", c) for k, c in (("a", C_A), ("tie", C_TIE), ("b", C_B))],
            **{k: trusted(format_pct(r[name]["value"], 0)) for k, name in (("score", "score"), ("a", "a"),
                                                                          ("tie", "tie"), ("b", "b"))}}


def _muted(text: str) -> str:
    return f"<br><span class=ci>{text}</span>"


def _summary_rows(pairwise: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for p in pairwise:
        r, st = p["rates"], p["sign_test"]
        small = _muted("Wilson CIs: few decisive prompts") if p.get("interval", "").startswith("Wilson") else ""
        rows.append([fragment("{} vs {}", p["model_a"], p["model_b"]), short_judge(p["judge"]),
                     trusted(f"{p['n']}{small}"),
                     *(trusted(estimate(r[k])) for k in ("a", "tie", "b", "a_or_tie", "score")), p["counts"]["null"],
                     trusted(f"{st['wins']}&ndash;{st['losses']}"), trusted(_fmt_p(st["p_value"]))])
    return rows


def _bias_rows(pairwise: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for p in pairwise:
        pos, ln = p["position"], p["length"]
        lc = ln["length_controlled"] or {}
        first, longer = pos["first_position_share"], ln["longer_wins_share"]
        rows.append([p["label"], *(trusted(cell) for cell in (
            f"{format_pct(pos['consistency'])} <span class=ci>n={pos['n_pairs']}</span>",
            "&ndash;" if first is None else format_pct(first) + _muted(f"p={_fmt_p(pos['first_position_p_value'])}"),
            "&ndash;" if ln["mean_chars_a"] is None else f"{ln['mean_chars_a']:.0f} / {ln['mean_chars_b']:.0f}",
            "&ndash;" if longer is None else format_pct(longer) + _muted(f"p={_fmt_p(ln['longer_wins_p_value'])}"),
            format_pct(lc.get("raw_win_share")), estimate(lc.get("win_share_at_equal_length")),
            estimate(lc.get("odds_ratio_per_doubling"), pct=False)))])
    return rows


def _power_rows(pairwise: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for p in pairwise:
        pa = p["power"]
        mds = pa["minimum_detectable_share"]
        needs = [trusted(f"{t['decisive_prompts']}"
                         + (_muted(f"&asymp;{t['prompts']} prompts") if t["prompts"] else "")) for t in pa["needed"]]
        rows.append([p["label"], pa["n_decisive"], trusted("&ndash;" if mds is None else "&ge; " + format_pct(mds)),
                     *needs])
    return rows


def _most_decisive(pairwise: list[dict[str, Any]]) -> dict[str, Any]:
    """The power sentence's numbers: the comparison with the most decisive prompts."""
    p = max(pairwise, key=lambda q: q["power"]["n_decisive"])
    pa = p["power"]
    mds = pa["minimum_detectable_share"]
    return {"n_decisive": pa["n_decisive"], "model_a": p["model_a"], "model_b": p["model_b"],
            "judge": short_judge(p["judge"]), "detectable": None if mds is None else format_pct(mds),
            "shares": " / ".join(format_pct(t["win_share"], 0) for t in pa["needed"]),
            "needed": " / ".join(str(t["decisive_prompts"]) for t in pa["needed"])}


def _ratings_rows(absolute: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for a in absolute:
        dist = Markup(" &middot; ").join(fragment("{}: {}", k, trusted(format_pct(v["value"], 0)))
                                         for k, v in a["shares"].items())
        key = estimate(a["pass_or_better"]) if "pass_or_better" in a else estimate(a["mean"], pct=False)
        rows.append([a["model"], short_judge(a["judge"]), a["scale"], dist, a["n"], a["null"], trusted(key)])
    return rows


def _pooled_section(pooled: dict[str, Any]) -> str:
    """The "people" rows (pooled.py): every person's votes pooled, prompt-cluster bootstrap intervals."""
    def kappa(g: dict[str, Any]) -> Any:
        return fragment("n/a ({})", g["kappa_note"]) if g["kappa"] is None else format(g["kappa"], ".3f")

    def agree(g: dict[str, Any]) -> Markup:
        return trusted(format_pct(g["share"]["value"]) + _muted(f"{g['identical']} of {g['n']} prompts"))

    pairwise = [[fragment("{} vs {}", p["model_a"], p["model_b"]), p["n_prompts"], p["n_votes"],
                 *(trusted(estimate(p["rates"][k])) for k in ("a", "tie", "b", "score")),
                 trusted(estimate(p["decisive"])
                         + _muted(f"{p['decisive']['a']} of {p['decisive']['n']} decisive votes")),
                 trusted(_fmt_p(p["sign_test"]["p_value"])
                         + _muted(f"{p['sign_test']['wins']}&ndash;{p['sign_test']['losses']} prompts")),
                 agree(p["agreement"]), kappa(p["agreement"])] for p in pooled.get("pairwise") or []]
    absolute = []
    for a in pooled.get("absolute") or []:
        m = a.get("majority_pass_or_better")
        absolute.append([
            a["model"], a["scale"],
            Markup(" &middot; ").join(fragment("{}: {}", k, trusted(estimate(v))) for k, v in a["shares"].items()),
            a["n_prompts"], a["n"],
            trusted(estimate(a["pass_or_better"]) if "pass_or_better" in a else estimate(a["mean"], pct=False)),
            trusted(estimate(m) + _muted(f"{m['prompts']} of {m['n']} prompts") if m else "&ndash;"),
            agree(a["agreement"]), kappa(a["agreement"])])
    return render_page("report_pooled.html", pairwise=pairwise, absolute=absolute)


def _prompt_text(messages: Any) -> tuple[str, str]:
    """(last user turn, earlier turns as text) of a judgment's prompt messages."""
    if not isinstance(messages, list) or not messages:
        return "", ""
    turns = [m for m in messages if isinstance(m, dict)]
    last = turns[-1].get("content", "") if turns else ""
    earlier = "\n\n".join(f"[{m.get('role', '?')}] {m.get('content', '')}" for m in turns[:-1])
    return str(last), earlier


VERDICT_WORDS = {"a": "{a} wins", "b": "{b} wins", "tie": "tie", None: "unparsed"}


def items_section(records: list[dict[str, Any]], index: int) -> str:
    """One comparison's prompts with both answers and every judge's verdict, filterable by outcome
    (templates/report_items.html)."""
    a, b = records[0]["model_a"], records[0]["model_b"]
    by_prompt: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_prompt.setdefault(r["prompt_id"], []).append(r)
    rows = []
    for pid, rs in by_prompt.items():
        outcomes, badges, raws = set(), [], []
        for r in rs:
            v, cons = r.get("verdict"), is_consistent(r)
            outcomes.add("null" if v is None else v)
            if cons is False:
                outcomes.add("inconsistent")
            judge = short_judge(r["judge"])
            badges.append({"klass": ("null" if v is None else v) + (" inconsistent" if cons is False else ""),
                           "title": "the two presentation orders disagreed" if cons is False else "",
                           "judge": judge, "word": VERDICT_WORDS[v].format(a=a, b=b), "disagree": cons is False})
            raws += [{"judge": judge, "order": vote.get("order"), "verdict": vote.get("verdict"), "raw": vote["raw"]}
                     for vote in r.get("votes", []) if vote.get("raw")]
        texts = [r for r in rs if (r.get("meta") or {}).get("outputs") != "absent"]  # label-only imports have none
        first = texts[0] if texts else rs[0]
        last, earlier = _prompt_text(first.get("prompt"))
        rows.append({"outcomes": " ".join(sorted(outcomes)), "last": last, "earlier": earlier, "pid": pid,
                     "badges": badges, "raws": raws,
                     "answers": [first[k] if texts else None for k in ("output_a", "output_b")]})
    buttons = [("all", "all"), ("a", f"{a} wins"), ("b", f"{b} wins"), ("tie", "tie"), ("inconsistent", "inconsistent")]
    return render_page("report_items.html", index=index, a=a, b=b, buttons=buttons, rows=rows)


def preference_sections(inputs: ReportInputs) -> Section | None:
    """The headline cards, LIMA Figure 1's win / tie / loss bars and the win-rate table."""
    pw = inputs.shown["pairwise"]
    if not pw:
        return None
    chart = win_rate_chart(pw, inputs.charts_dir / "win_rates.png")
    boot = pw[0]["bootstrap"]
    return Section(render_page("report_preference.html", cards=[_card(p) for p in pw], chart=chart,
                               rows=_summary_rows(pw), n_boot=boot["n_boot"], seed=boot["seed"],
                               left_out=trusted(inputs.left_out)), charts=("win_rates",))


def pooled_sections(inputs: ReportInputs) -> Section | None:
    return Section(_pooled_section(inputs.shown["pooled"])) if inputs.shown.get("pooled") else None


def rating_sections(inputs: ReportInputs) -> Section | None:
    """LIMA Figure 3's Fail / Pass / Excellent bars, the mean 1-6 scores and the ratings table."""
    ab = inputs.shown["absolute"]
    if not ab:
        return None
    images, charts = [], []
    if any(a["scale"] == "fail_pass_excellent" for a in ab):
        images.append((rating_chart(ab, inputs.charts_dir / "ratings.png"), "fail / pass / excellent shares"))
        charts.append("ratings")
    if any(a["scale"] == "helpfulness_6" and a["mean"]["value"] is not None for a in ab):
        images.append((mean_score_chart(ab, inputs.charts_dir / "mean_scores.png"), "mean helpfulness scores"))
        charts.append("mean_scores")
    return Section(render_page("report_ratings.html", images=images, rows=_ratings_rows(ab)), charts=tuple(charts))


def judge_sections(inputs: ReportInputs) -> Section | None:
    """Judge agreement, position and length bias, statistical power, and every prompt with its verdicts."""
    pw = inputs.shown["pairwise"]
    if not pw:
        return None
    power_head = ["comparison", "decisive prompts now", "detectable win share",
                  *(trusted(f"to detect {format_pct(t['win_share'], 0)}") for t in pw[0]["power"]["needed"])]
    parts = [agreement_section(inputs.summary),
             render_page("report_bias_power.html", bias=_bias_rows(pw), most=_most_decisive(pw), power=_power_rows(pw),
                         power_head=power_head)]
    seen: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for c in comparisons(inputs.records):
        seen.setdefault((c["model_a"], c["model_b"]), []).extend(c["records"])
    parts += [items_section(rs, i) for i, rs in enumerate(seen.values())]
    return Section("".join(parts))


def dialogue_sections(inputs: ReportInputs) -> Section | None:
    """Turn ratings and conversation verdicts (dialogue_report), when the records hold any."""
    return Section(dialogue_report.report_section(inputs.records, inputs.charts_dir))


# The report's sections in page order: each reads the inputs and gives its HTML, numbers and charts.
SECTIONS: tuple[Callable[[ReportInputs], Section | None], ...] = (
    preference_sections, pooled_sections, rating_sections, judge_sections, dialogue_sections,
    training_sections, analysis_sections)


def render_report(summary: dict[str, Any], records: list[dict[str, Any]], out_dir: Path, *, title: str,
                  runs: Sequence[Path] = (), analyses: Sequence[dict[str, Any]] = ()) -> Path:
    """Write report.json, charts/*.png and report.html for a stats.summarize() result and its records (and
    any training run folders and analysis summaries), every section of SECTIONS in turn."""
    out_dir = Path(out_dir)
    shown, left_out = compact_view(summary)  # report.json gets the full summary, the page the compact view
    inputs = ReportInputs(records=records, summary=summary, shown=shown, left_out=left_out,
                          charts_dir=out_dir / "charts", runs=list(runs), analyses=list(analyses))
    sections = [s for s in (fn(inputs) for fn in SECTIONS) if s is not None]
    created = time.strftime("%Y-%m-%d %H:%M:%S")
    report = {"title": title, "created": created, **summary,
              "charts": {name: f"charts/{name}.png" for s in sections for name in s.charts}}
    for s in sections:
        report.update(s.data)
    # indented while it is small enough to read; beyond that compact (json's fast encoder, half the size)
    indent = 2 if len(summary["pairwise"]) <= COLLAPSE_OVER else None
    write_text_atomic(out_dir / "report.json", json.dumps(report, indent=indent, ensure_ascii=False, allow_nan=False))

    page = render_page("report.html", title=title, n_records=summary["n_records"], created=created,
                       files=[Path(f).name for f in summary.get("files", [])],
                       sections=[trusted(s.html) for s in sections])
    return write_text_atomic(out_dir / "report.html", page)


def build_report(judgment_paths: list[Path], out_dir: Path, *, title: str = "lima-align evaluation report",
                 n_boot: int = 2000, seed: int = 0, groups: Sequence[tuple[str, str]] = ()) -> Path:
    """Read judgment files, compute every statistic, and write out_dir/report.json, out_dir/report.html
    (self-contained) and out_dir/charts/*.png. Returns the path of report.html."""
    judgment_paths, runs = split_run_folders(judgment_paths)
    judgment_paths, analyses = split_section_files(judgment_paths)
    records = load_judgments(judgment_paths)
    summary = {"files": [str(p) for p in judgment_paths],
               **summarize(records, n_boot=n_boot, seed=seed, groups=groups)}
    return render_report(summary, records, Path(out_dir), title=title, runs=runs, analyses=analyses)
