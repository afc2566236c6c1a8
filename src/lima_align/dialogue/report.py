"""LIMA Figure 7 view of a dialogue evaluation: turn ratings, quality by turn, whole-conversation verdicts.

From judgment records (any mix of files; other records are ignored):
  - turn ratings: absolute Fail / Pass / Excellent records of single assistant turns (`judge turns`,
    or people in the annotation app), recognised by "conversation_id" / "turn" or a "<id>#t<n>" prompt_id;
  - conversation verdicts: pairwise records with "unit": "conversation" (`judge conversations`).
Sections: Excellent / Pass / Fail shares over all turns per model and judge, the shares by turn
number, how many conversations failed within their first three turns (LIMA: 6 of 10 without
dialogue training), win / tie / loss of whole conversations, and the conversations side by side
with every turn's ratings. `report_section` is what `lima-align report` adds to its page; `build`
writes a page of its own (dialogue.html, dialogue.json, charts/).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..charts import C_EXC, C_FAIL, C_PASS, new_figure, save_png, stacked_bars, style_axes
from .intervals import paired_differences, share_cis
from .judging import turn_of
from ..html_parts import format_pct, fragment, render_page, trusted
from ..jsonl import write_text_atomic
from ..verdicts import FPE

LEVELS = FPE  # turns are rated Fail / Pass / Excellent
PALETTE = ("#3b6fb6", "#e0823d", "#3c9d74", "#8e5ea2", "#d1495b", "#6b7280")
CSS = """.dlg-grid{display:grid;gap:10px} .dlg-turn{border-radius:6px;padding:6px 9px;margin:4px 0;white-space:pre-wrap}
.dlg-user{background:#eef2f7} .dlg-asst{background:#fafafa;border:1px solid #e4e7ec}
.dlg-badge{display:inline-block;border-radius:4px;padding:0 6px;margin-right:4px;font-size:11.5px;color:#fff}
.dlg-fail{background:#d1495b} .dlg-pass{background:#edae49;color:#222} .dlg-excellent{background:#3c9d74}
.dlg-none{background:#9aa0a6} details.dlg{margin:6px 0} details.dlg summary{cursor:pointer}"""


def split(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(turn ratings, conversation verdicts) among judgment records."""
    turns = [r for r in records if r.get("type") == "absolute" and r.get("scale") == "fail_pass_excellent"
             and turn_of(r) is not None]
    convs = [r for r in records if r.get("type") == "pairwise" and r.get("unit") == "conversation"]
    return turns, convs


def _shares(scores: list[Any]) -> dict[str, Any]:
    parsed = [s for s in scores if s in LEVELS]
    n = len(parsed)
    return {"n": n, "null": len(scores) - n, "counts": {k: parsed.count(k) for k in LEVELS},
            "shares": {k: (parsed.count(k) / n if n else None) for k in LEVELS}}


PEOPLE = "people"  # the pooled row of several human annotators (judges "human:<name>")


# ----------------------------------------------------------------- turn ratings


def _level_counts(by_conv: dict[str, dict[int, list[Any]]], ids: list[str]) -> np.ndarray:
    """(conversations, 4): counts of fail / pass / excellent ratings and of parsed ratings per conversation."""
    out = np.zeros((len(ids), len(LEVELS) + 1))
    for i, cid in enumerate(ids):
        scores = [x for ss in by_conv[cid].values() for x in ss if x in LEVELS]
        out[i, :len(LEVELS)] = [scores.count(k) for k in LEVELS]
        out[i, -1] = len(scores)
    return out


def _failed_early(turns: dict[int, list[Any]]) -> bool | None:
    """Did one of the first three turns fail? A turn fails when most of its ratings say fail (one judge: its
    rating; people: a strict majority). An unparsed rating could be anything, so a turn whose unparsed ratings
    could make or break that majority leaves the answer open (None): never counted as a pass."""
    open_ = False
    for t, ss in turns.items():
        if t > 3:
            continue
        fails, unknown = ss.count("fail"), sum(s not in LEVELS for s in ss)
        if fails * 2 > len(ss):
            return True
        open_ = open_ or (fails + unknown) * 2 > len(ss)
    return None if open_ else False


def _summary(model: str, judge: str, rs: list[dict[str, Any]]) -> dict[str, Any]:
    by_turn: dict[int, list[Any]] = {}
    by_conv: dict[str, dict[int, list[Any]]] = {}
    for r in rs:
        cid, t = turn_of(r)  # type: ignore[misc]
        by_turn.setdefault(t, []).append(r.get("score"))
        by_conv.setdefault(cid, {}).setdefault(t, []).append(r.get("score"))
    early = [_failed_early(ts) for ts in by_conv.values()]
    cis = share_cis(_level_counts(by_conv, sorted(by_conv)))
    return {"model": model, "judge": judge, "label": f"{model} ({judge.split('@', 1)[0]})",
            **_shares([r.get("score") for r in rs]), "ci": dict(zip(LEVELS, cis)),
            "conversations": len(by_conv), "failed_within_3_turns": early.count(True),
            "failed_within_3_turns_unknown": early.count(None),
            "by_turn": [{"turn": t, **_shares(by_turn[t])} for t in sorted(by_turn)]}


def turn_differences(turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per judge (and pooled people) and pair of models rated on the same conversations: B's share minus A's
    for each level over their shared conversations (paired_differences)."""
    by: dict[tuple[str, str], dict[str, dict[int, list[Any]]]] = {}
    for r in turns:
        cid, t = turn_of(r)  # type: ignore[misc]
        judges = [r["judge"]] + ([PEOPLE] if r["judge"].startswith("human:") else [])
        for j in judges:
            by.setdefault((j, r["model"]), {}).setdefault(cid, {}).setdefault(t, []).append(r.get("score"))
    # As in turn_summary, "people" stands for a model only where two or more people rated it.
    pooled = {m for m in {m for _, m in by} if sum(j.startswith("human:") for j, mm in by if mm == m) > 1}
    out = []
    for judge in sorted({j for j, _ in by}):
        models = sorted(m for j, m in by if j == judge and (judge != PEOPLE or m in pooled))
        for a_i, a in enumerate(models):
            for b in models[a_i + 1:]:
                ids = sorted(set(by[(judge, a)]) & set(by[(judge, b)]))
                if not ids:
                    continue
                ca, cb = _level_counts(by[(judge, a)], ids), _level_counts(by[(judge, b)], ids)
                out.append({"model_a": a, "model_b": b, "judge": judge, "conversations": len(ids),
                            "turns": [int(ca[:, -1].sum()), int(cb[:, -1].sum())],
                            "difference": dict(zip(LEVELS, paired_differences(ca, cb)))})
    return out


def turn_summary(turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model and judge: shares over all turns, shares by turn number, early failures. Where two or more
    people rated a model's turns, a row "people" pools their ratings (LIMA's Figure 7 pools its raters)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in turns:
        groups.setdefault((r["model"], r["judge"]), []).append(r)
    out = []
    for model in sorted({m for m, _ in groups}):
        people = [j for m, j in groups if m == model and j.startswith("human:")]
        for (m, judge), rs in sorted(groups.items()):
            if m == model:
                out.append(_summary(model, judge, rs))
        if len(people) > 1:
            out.append(_summary(model, PEOPLE, [r for j in sorted(people) for r in groups[(model, j)]]))
    return out


def conversation_summary(pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Win / tie / loss of whole conversations per model pair and judge (pairs oriented as first seen)."""
    groups: dict[tuple[str, str, str], dict[str, int]] = {}
    for r in pairs:
        a, b, v = r["model_a"], r["model_b"], r.get("verdict")
        if (b, a, r["judge"]) in groups:  # the same comparison written the other way round
            a, b, v = b, a, {"a": "b", "b": "a"}.get(v, v)
        c = groups.setdefault((a, b, r["judge"]), {"a": 0, "tie": 0, "b": 0, "null": 0})
        c[v if v in ("a", "b", "tie") else "null"] += 1
    return [{"model_a": a, "model_b": b, "judge": j, "counts": c, "n": c["a"] + c["tie"] + c["b"]}
            for (a, b, j), c in groups.items()]


# A reply that starts the next speaker's line has lost the turn structure (it talks for the user).
ROLE_LINE = ("\nUser:", "\nuser:", "\nHuman:", "\n### User", "<start_of_turn>user")


FORMAT = ("ended_turn", "hit_length_cap", "spoke_for_user")


def _format_flags(c: dict[str, Any]) -> list[tuple[bool, bool, bool]]:
    """Per assistant turn of a conversation: (ended its turn, hit the length cap, spoke for the user)."""
    replies = [m["content"] for m in c["messages"] if m["role"] == "assistant"]
    finishes = list(c.get("finish_reasons") or [])
    out = []
    for i, text in enumerate(replies):
        f = finishes[i] if i < len(finishes) else None
        out.append((f in ("eot", "stop"), f == "length", any(k in text for k in ROLE_LINE)))
    return out


def _format_counts(convs: list[dict[str, Any]]) -> np.ndarray:
    """(conversations, 4): turns that ended / hit the cap / spoke for the user, and turns, per conversation."""
    out = np.zeros((len(convs), len(FORMAT) + 1))
    for i, c in enumerate(convs):
        flags = _format_flags(c)
        out[i, :len(FORMAT)] = [sum(f[j] for f in flags) for j in range(len(FORMAT))]
        out[i, -1] = len(flags)
    return out


def format_differences(conversations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """B minus A for each format share, per pair of models over the conversations both held (paired)."""
    by: dict[str, dict[str, dict[str, Any]]] = {}
    for c in conversations:
        by.setdefault(c["model"], {})[c["conversation_id"]] = c
    out = []
    models = sorted(by)
    for a_i, a in enumerate(models):
        for b in models[a_i + 1:]:
            ids = sorted(set(by[a]) & set(by[b]))
            if ids:
                ca = _format_counts([by[a][i] for i in ids])
                cb = _format_counts([by[b][i] for i in ids])
                out.append({"model_a": a, "model_b": b, "conversations": len(ids),
                            "difference": dict(zip(FORMAT, paired_differences(ca, cb)))})
    return out


def format_summary(conversations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What needs no judge, per model and assistant turn number: how often the model ended its turn itself
    (finish reason "eot"/"stop"), ran into the length cap, or wrote a line for the user; mean words.
    A base model that has not learnt the turn format fails these long before content quality matters."""
    cells: dict[tuple[str, int], list[tuple[tuple[bool, bool, bool], str]]] = {}
    for c in conversations:
        replies = [m["content"] for m in c["messages"] if m["role"] == "assistant"]
        for i, (flags, text) in enumerate(zip(_format_flags(c), replies)):
            cells.setdefault((c["model"], i + 1), []).append((flags, text))
    out: dict[str, dict[str, Any]] = {}
    for (model, turn), xs in sorted(cells.items()):
        n = len(xs)
        row = {"turn": turn, "n": n, **{k: sum(f[j] for f, _ in xs) / n for j, k in enumerate(FORMAT)},
               "mean_words": sum(len(t.split()) for _, t in xs) / n}
        m = out.setdefault(model, {"model": model, "by_turn": []})
        m["by_turn"].append(row)
    for m in out.values():
        total = sum(r["n"] for r in m["by_turn"])
        for key in FORMAT:
            m[key] = sum(r[key] * r["n"] for r in m["by_turn"]) / total
        m["turns"] = total
        m["ci"] = dict(zip(FORMAT, share_cis(_format_counts([c for c in conversations if c["model"] == m["model"]]))))
    return list(out.values())


def _format_rows(rows: list[dict[str, Any]], diffs: list[dict[str, Any]] = ()) -> dict[str, Any]:
    """The turn-format tables' rows (no judge needed): per model, per turn number, and B minus A."""
    turns = sorted({t["turn"] for r in rows for t in r["by_turn"]})

    def cell(t: dict[str, Any]) -> Any:
        return trusted(f"{format_pct(t['ended_turn'])} ended &middot; {format_pct(t['spoke_for_user'])} spoke for "
                       f"user (n={t['n']})")

    return {"formats": [[r["model"], r["turns"], *(trusted(_pct_ci(r[k], r["ci"][k])) for k in FORMAT)]
                        for r in rows],
            "format_turn_head": ["model"] + [f"turn {t}" for t in turns],
            "format_by_turn": [[r["model"]] + [next((cell(x) for x in r["by_turn"] if x["turn"] == t),
                                                    trusted("&ndash;")) for t in turns] for r in rows],
            "format_differences": [[x["model_a"], x["model_b"], x["conversations"],
                                    *(trusted(_diff(x["difference"][k])) for k in FORMAT)] for x in diffs]}


# ----------------------------------------------------------------- charts


def shares_chart(rows: list[dict[str, Any]], path: Path) -> str:
    segments = [(name, color, [r["shares"][name.lower()] or 0.0 for r in rows])
                for name, color in (("Fail", C_FAIL), ("Pass", C_PASS), ("Excellent", C_EXC))]
    notes = [f"n={r['n']} turns" + (f", {r['null']} unparsed" if r["null"] else "") for r in rows]
    fig = stacked_bars([r["label"] for r in rows], segments, notes, "Share of assistant turns rated "
                       "Fail / Pass / Excellent", midline=False)
    return save_png(fig, path)


def by_turn_chart(rows: list[dict[str, Any]], path: Path) -> str:
    """Excellent share (solid) and Fail share (dashed) by turn number, one colour per model x judge."""
    fig = new_figure(8.0, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    turns = sorted({t["turn"] for r in rows for t in r["by_turn"]})
    for i, r in enumerate(rows):
        color = PALETTE[i % len(PALETTE)]
        xs = [t["turn"] for t in r["by_turn"] if t["n"]]
        for level, style, mark in (("excellent", "-", "o"), ("fail", "--", "x")):
            ys = [t["shares"][level] for t in r["by_turn"] if t["n"]]
            ax.plot(xs, ys, style, marker=mark, color=color, label=f"{r['label']}: {level}")
    ax.set_xticks(turns, [str(t) for t in turns])
    ax.set_xlabel("assistant turn")
    ax.set_ylim(-0.03, 1.03)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1], ["0%", "25%", "50%", "75%", "100%"])
    style_axes(ax)
    ax.set_title("Excellent (solid) and Fail (dashed) share by turn", loc="left", fontsize=11)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    return save_png(fig, path)


# ----------------------------------------------------------------- html


def _badge(score: Any, who: str = "") -> tuple[str, str, Any]:
    """(css class, "judge: " or "", level or "unparsed") of one turn rating."""
    cls = f"dlg-{score}" if score in LEVELS else "dlg-none"
    return cls, who + ": " if who else "", score if score in LEVELS else "unparsed"


def _transcripts(turns: list[dict[str, Any]], conversations: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """{conversation_id: {model: messages}} from conversation records, else rebuilt from the last rated turn."""
    out: dict[str, dict[str, Any]] = {}
    for c in conversations:
        out.setdefault(c["conversation_id"], {})[c["model"]] = c["messages"]
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for r in turns:
        cid, t = turn_of(r)  # type: ignore[misc]
        if cid in out and r["model"] in out[cid]:
            continue
        if (cid, r["model"]) not in last or turn_of(last[(cid, r["model"])])[1] < t:  # type: ignore[index]
            last[(cid, r["model"])] = r
    for (cid, model), r in last.items():
        out.setdefault(cid, {})[model] = list(r.get("prompt") or []) + [{"role": "assistant", "content": r["output"]}]
    return out


def side_by_side(turns: list[dict[str, Any]], pairs: list[dict[str, Any]],
                 conversations: list[dict[str, Any]] = ()) -> str:
    ratings: dict[tuple[str, str, int], list[tuple[str, Any]]] = {}
    for r in turns:
        cid, t = turn_of(r)  # type: ignore[misc]
        ratings.setdefault((cid, r["model"], t), []).append((r["judge"].split("@", 1)[0], r.get("score")))
    verdicts: dict[str, list[str]] = {}
    for r in pairs:
        won = {"a": r["model_a"], "b": r["model_b"], "tie": "tie"}.get(r.get("verdict"), "unparsed")
        verdicts.setdefault(r.get("conversation_id") or r["prompt_id"], []).append(
            f"{r['judge'].split('@', 1)[0]}: {won}")
    blocks = []
    for cid, by_model in sorted(_transcripts(turns, list(conversations)).items()):
        columns = []
        for model in sorted(by_model):
            k, cells = 0, []
            for m in by_model[model]:
                if m["role"] == "assistant":
                    k += 1
                    cells.append({"content": m["content"],
                                  "badges": [_badge(s, j) for j, s in ratings.get((cid, model, k), [])]})
                else:
                    cells.append({"role": m["role"], "content": m["content"], "badges": None})
            columns.append({"model": model, "turns": cells})
        blocks.append({"cid": cid, "columns": columns,
                       "verdicts": "; ".join(verdicts[cid]) if cid in verdicts else None})
    return render_page("dialogue_transcripts.html", blocks=blocks)


def _signed(x: float | None) -> str:
    return "&ndash;" if x is None else f"{100 * x:+.1f}"


def _pct_ci(value: float | None, ci: list[float | None]) -> str:
    lo, hi = ci
    return format_pct(value) + (f" <small>[{100 * lo:.0f}&ndash;{100 * hi:.0f}]</small>" if lo is not None else "")


def _with_ci(row: dict[str, Any], level: str) -> str:
    return _pct_ci(row["shares"][level], row["ci"][level])


def _diff(d: dict[str, Any]) -> str:
    """A difference in percentage points with its interval."""
    return f"{_signed(d['value'])} [{_signed(d['ci'][0])}, {_signed(d['ci'][1])}]"


def _early_cell(r: dict[str, Any]) -> str:
    unknown = r.get("failed_within_3_turns_unknown", 0)
    if not unknown:
        return f"{r['failed_within_3_turns']} of {r['conversations']}"
    return (f"{r['failed_within_3_turns']} of {r['conversations'] - unknown} rated, {unknown} unknown "
            "(unparsed ratings)")


def _table_rows(rows: list[dict[str, Any]], wins: list[dict[str, Any]],
                diffs: list[dict[str, Any]] = ()) -> dict[str, Any]:
    """The turn-rating tables' rows: shares per model x judge, by turn, B minus A, conversation verdicts."""
    turns = sorted({t["turn"] for r in rows for t in r["by_turn"]})

    def cell(t: dict[str, Any]) -> Any:
        return trusted(f"E {format_pct(t['shares']['excellent'])} &middot; F {format_pct(t['shares']['fail'])} "
                       f"(n={t['n']})")

    return {"ratings": [[r["label"], r["n"], *(trusted(_with_ci(r, k)) for k in ("excellent", "pass", "fail")),
                         r["null"], r["conversations"], _early_cell(r)] for r in rows],
            "by_turn_head": ["model (judge)"] + [f"turn {t}" for t in turns],
            "by_turn": [[r["label"]] + [next((cell(x) for x in r["by_turn"] if x["turn"] == t), trusted("&ndash;"))
                                        for t in turns] for r in rows],
            "differences": [[x["model_a"], x["model_b"], x["judge"].split("@", 1)[0], x["conversations"],
                             *(trusted(_diff(x["difference"][k])) for k in ("excellent", "pass", "fail"))]
                            for x in diffs],
            "verdicts": [[w["model_a"], w["model_b"], w["judge"].split("@", 1)[0], w["counts"]["a"],
                          w["counts"]["tie"], w["counts"]["b"], w["counts"]["null"]] for w in wins]}


def summarize(records: list[dict[str, Any]], conversations: list[dict[str, Any]] = ()) -> dict[str, Any]:
    """Every number of the dialogue section (what dialogue.json holds), computed once."""
    turns, pairs = split(records)
    convs = list(conversations)
    return {"turns": turn_summary(turns), "turn_differences": turn_differences(turns),
            "conversations": conversation_summary(pairs), "format": format_summary(convs),
            "format_differences": format_differences(convs)}


def report_section(records: list[dict[str, Any]], charts_dir: Path,
                   conversations: list[dict[str, Any]] = (), summary: dict[str, Any] | None = None) -> str:
    """The dialogue section of a report page; "" when the records hold no dialogue judgments.
    `summary`: summarize(records, conversations), when the caller has it already."""
    turns, pairs = split(records)
    if not turns and not pairs and not conversations:
        return ""
    summary = summary or summarize(records, conversations)
    rows, wins, diffs = summary["turns"], summary["conversations"], summary["turn_differences"]
    images = []
    # The charts show a model's pooled "people" row instead of each of its raters (the tables keep them all).
    pooled = {r["model"] for r in rows if r["judge"] == PEOPLE}
    charted = [r for r in rows if not (r["model"] in pooled and r["judge"].startswith("human:"))]
    if rows:
        for name, fn, alt in (("dialogue_shares", shares_chart, "turn rating shares"),
                              ("dialogue_by_turn", by_turn_chart, "quality by turn")):
            images.append((fn(charted, Path(charts_dir) / f"{name}.png"), alt))
    return render_page("dialogue_section.html", dialogue_css=trusted(CSS), images=images,
                       **_table_rows(rows, wins, diffs),
                       **_format_rows(summary["format"], summary["format_differences"]),
                       transcripts=trusted(side_by_side(turns, pairs, conversations)))


def build(judgment_paths: list[Path], out_dir: Path, *, conversation_paths: list[Path] = (),
          title: str = "lima-align dialogue evaluation") -> Path:
    """Write out_dir/dialogue.html (self-contained), dialogue.json and charts/; returns the page's path."""
    from .conversations import read_conversations_file
    from ..stats import load_judgments

    records = load_judgments(judgment_paths)
    convs = [c for p in conversation_paths for c in read_conversations_file(p)]
    out_dir = Path(out_dir)
    numbers = summarize(records, convs)
    section = report_section(records, out_dir / "charts", convs, numbers)
    if not section:
        from ..errors import LimaError

        raise LimaError("no dialogue judgments or conversations in these files", fix="pass the output of "
                        "`lima-align judge turns` or `judge conversations`, and/or --conversations files")
    turns, pairs = split(records)
    created = time.strftime("%Y-%m-%d %H:%M:%S")
    summary = {"title": title, "created": created, "files": [str(p) for p in judgment_paths], **numbers}
    write_text_atomic(out_dir / "dialogue.json", json.dumps(summary, indent=2, ensure_ascii=False))
    sub = fragment("{} turn ratings, {} conversation verdicts &middot; generated {}", len(turns), len(pairs), created)
    page = render_page("page.html", title=title, sub=sub, sections=[trusted(section)])
    return write_text_atomic(out_dir / "dialogue.html", page)
