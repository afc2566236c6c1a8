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

import html
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from .dialogue_judge import turn_of
from .jsonl import write_text_atomic

LEVELS = ("fail", "pass", "excellent")
PALETTE = ("#3b6fb6", "#e0823d", "#3c9d74", "#8e5ea2", "#d1495b", "#6b7280")
CSS = """.dlg-grid{display:grid;gap:10px} .dlg-turn{border-radius:6px;padding:6px 9px;margin:4px 0;white-space:pre-wrap}
.dlg-user{background:#eef2f7} .dlg-asst{background:#fafafa;border:1px solid #e4e7ec}
.dlg-badge{display:inline-block;border-radius:4px;padding:0 6px;margin-right:4px;font-size:11.5px;color:#fff}
.dlg-fail{background:#d1495b} .dlg-pass{background:#edae49;color:#222} .dlg-excellent{background:#3c9d74}
.dlg-none{background:#9aa0a6} details.dlg{margin:6px 0} details.dlg summary{cursor:pointer}"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


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


N_BOOT, CONFIDENCE = 2000, 0.95


def _level_counts(by_conv: dict[str, dict[int, list[Any]]], ids: list[str]) -> np.ndarray:
    """(conversations, 4): counts of fail / pass / excellent ratings and of parsed ratings per conversation."""
    out = np.zeros((len(ids), len(LEVELS) + 1))
    for i, cid in enumerate(ids):
        scores = [x for ss in by_conv[cid].values() for x in ss if x in LEVELS]
        out[i, :len(LEVELS)] = [scores.count(k) for k in LEVELS]
        out[i, -1] = len(scores)
    return out


def _boot_shares(counts: np.ndarray, seed: int) -> np.ndarray:
    """(N_BOOT, levels) shares of each level, resampling whole conversations: the turns of one conversation
    are not independent (a model that lost the thread fails the turns that follow), so they move together."""
    from .stats import _resample_idx, _share

    boot = counts[_resample_idx(len(counts), N_BOOT, seed)].sum(axis=1)  # (N_BOOT, levels + 1)
    return _share(boot[:, :len(LEVELS)], boot[:, -1:])


def _summary(model: str, judge: str, rs: list[dict[str, Any]]) -> dict[str, Any]:
    from .stats import _ci, wilson

    by_turn: dict[int, list[Any]] = {}
    by_conv: dict[str, dict[int, list[Any]]] = {}
    for r in rs:
        cid, t = turn_of(r)  # type: ignore[misc]
        by_turn.setdefault(t, []).append(r.get("score"))
        by_conv.setdefault(cid, {}).setdefault(t, []).append(r.get("score"))
    # A turn fails when most of its ratings say fail (one judge: its rating; people: a strict majority).
    early = sum(any(ss.count("fail") * 2 > len(ss) for t, ss in ts.items() if t <= 3) for ts in by_conv.values())
    shares = _shares([r.get("score") for r in rs])
    boot = _boot_shares(_level_counts(by_conv, sorted(by_conv)), seed=0)
    ci = {}
    for i, k in enumerate(LEVELS):
        share = shares["shares"][k]
        if share in (0.0, 1.0):
            # Every rating on one side: the bootstrap cannot move. Wilson's interval with n = conversations
            # treats each conversation's turns as one observation (conservative, as they are correlated).
            ci[k] = wilson(round(share * len(by_conv)), len(by_conv))["ci"]
        else:
            ci[k] = _ci(boot[:, i], CONFIDENCE)
    return {"model": model, "judge": judge, "label": f"{model} ({judge.split('@', 1)[0]})", **shares, "ci": ci,
            "conversations": len(by_conv), "failed_within_3_turns": early,
            "by_turn": [{"turn": t, **_shares(by_turn[t])} for t in sorted(by_turn)]}


def turn_differences(turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per judge (and pooled people) and pair of models rated on the same conversations: B's share minus A's
    for each level over their shared conversations, with a paired bootstrap that resamples conversations
    (both models' turns of a drawn conversation come along, so the script's difficulty cancels out)."""
    from .stats import _ci, _resample_idx, _share, newcombe

    by: dict[tuple[str, str], dict[str, dict[int, list[Any]]]] = {}
    for r in turns:
        cid, t = turn_of(r)  # type: ignore[misc]
        judges = [r["judge"]] + ([PEOPLE] if r["judge"].startswith("human:") else [])
        for j in judges:
            by.setdefault((j, r["model"]), {}).setdefault(cid, {}).setdefault(t, []).append(r.get("score"))
    people_models = {m for (j, m) in by if j.startswith("human:")}
    out = []
    for judge in sorted({j for j, _ in by}):
        models = sorted(m for j, m in by if j == judge)
        if judge == PEOPLE and sum(j.startswith("human:") for j in {j for j, _ in by}) < 2:
            continue  # one person: their own rows already say it
        for a_i, a in enumerate(models):
            for b in models[a_i + 1:]:
                ids = sorted(set(by[(judge, a)]) & set(by[(judge, b)]))
                if not ids or (judge == PEOPLE and not {a, b} <= people_models):
                    continue
                ca, cb = _level_counts(by[(judge, a)], ids), _level_counts(by[(judge, b)], ids)
                idx = _resample_idx(len(ids), N_BOOT, seed=0)  # the same draws for both models: paired
                sa, sb = ca[idx].sum(axis=1), cb[idx].sum(axis=1)
                diff = _share(sb[:, :len(LEVELS)], sb[:, -1:]) - _share(sa[:, :len(LEVELS)], sa[:, -1:])
                ta, tb = ca.sum(axis=0), cb.sum(axis=0)
                difference = {}
                for i, k in enumerate(LEVELS):
                    if not (ta[-1] and tb[-1]):
                        difference[k] = {"value": None, "ci": [None, None]}
                        continue
                    pa, pb = ta[i] / ta[-1], tb[i] / tb[-1]
                    if pa in (0.0, 1.0) and pb in (0.0, 1.0):  # the bootstrap cannot move (see _summary)
                        n = len(ids)
                        difference[k] = newcombe(round(pa * n), n, round(pb * n), n)
                    else:
                        difference[k] = {"value": pb - pa, "ci": _ci(diff[:, i], CONFIDENCE)}
                out.append({"model_a": a, "model_b": b, "judge": judge, "conversations": len(ids),
                            "turns": [int(ta[-1]), int(tb[-1])], "difference": difference})
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


def format_summary(conversations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What needs no judge, per model and assistant turn number: how often the model ended its turn itself
    (finish reason "eot"/"stop"), ran into the length cap, or wrote a line for the user; mean words.
    A base model that has not learnt the turn format fails these long before content quality matters."""
    cells: dict[tuple[str, int], list[tuple[str | None, str]]] = {}
    for c in conversations:
        replies = [m["content"] for m in c["messages"] if m["role"] == "assistant"]
        finishes = list(c.get("finish_reasons") or [])
        for i, text in enumerate(replies):
            cells.setdefault((c["model"], i + 1), []).append((finishes[i] if i < len(finishes) else None, text))
    out: dict[str, dict[str, Any]] = {}
    for (model, turn), xs in sorted(cells.items()):
        n = len(xs)
        row = {"turn": turn, "n": n,
               "ended_turn": sum(f in ("eot", "stop") for f, _ in xs) / n,
               "hit_length_cap": sum(f == "length" for f, _ in xs) / n,
               "spoke_for_user": sum(any(k in t for k in ROLE_LINE) for _, t in xs) / n,
               "mean_words": sum(len(t.split()) for _, t in xs) / n}
        m = out.setdefault(model, {"model": model, "by_turn": []})
        m["by_turn"].append(row)
    for m in out.values():
        total = sum(r["n"] for r in m["by_turn"])
        for key in ("ended_turn", "hit_length_cap", "spoke_for_user"):
            m[key] = sum(r[key] * r["n"] for r in m["by_turn"]) / total
        m["turns"] = total
    return list(out.values())


def _format_table(rows: list[dict[str, Any]]) -> str:
    from .report import _table

    if not rows:
        return ""
    turns = sorted({t["turn"] for r in rows for t in r["by_turn"]})
    cell = lambda t: f"{_pct(t['ended_turn'])} ended &middot; {_pct(t['spoke_for_user'])} spoke for user (n={t['n']})"
    return ("<h3>Turn format by turn number (no judge needed)</h3>"
            + _table(["model", "turns", "ended its turn", "hit length cap", "spoke for the user"],
                     [[_e(r["model"]), r["turns"], _pct(r["ended_turn"]), _pct(r["hit_length_cap"]),
                       _pct(r["spoke_for_user"])] for r in rows])
            + _table(["model"] + [f"turn {t}" for t in turns],
                     [[_e(r["model"])] + [next((cell(x) for x in r["by_turn"] if x["turn"] == t), "&ndash;")
                                          for t in turns] for r in rows]))


# ----------------------------------------------------------------- charts


def shares_chart(rows: list[dict[str, Any]], path: Path) -> str:
    from .report import C_EXC, C_FAIL, C_PASS, _png, _stacked_bars

    segments = [(name, color, [r["shares"][name.lower()] or 0.0 for r in rows])
                for name, color in (("Fail", C_FAIL), ("Pass", C_PASS), ("Excellent", C_EXC))]
    notes = [f"n={r['n']} turns" + (f", {r['null']} unparsed" if r["null"] else "") for r in rows]
    fig = _stacked_bars([r["label"] for r in rows], segments, notes, "Share of assistant turns rated "
                        "Fail / Pass / Excellent", midline=False)
    return _png(fig, path)


def by_turn_chart(rows: list[dict[str, Any]], path: Path) -> str:
    """Excellent share (solid) and Fail share (dashed) by turn number, one colour per model x judge."""
    from .report import _new_figure, _png, _style_axes

    fig = _new_figure(8.0, 3.8)
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
    _style_axes(ax)
    ax.set_title("Excellent (solid) and Fail (dashed) share by turn", loc="left", fontsize=11)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    return _png(fig, path)


# ----------------------------------------------------------------- html


def _pct(x: float | None) -> str:
    return "&ndash;" if x is None else f"{100 * x:.1f}%"


def _badge(score: Any, who: str = "") -> str:
    cls = f"dlg-{score}" if score in LEVELS else "dlg-none"
    label = score if score in LEVELS else "unparsed"
    return f"<span class='dlg-badge {cls}'>{_e(who + ': ' if who else '')}{_e(label)}</span>"


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
        models = sorted(by_model)
        cols = []
        for model in models:
            k, cells = 0, []
            for m in by_model[model]:
                if m["role"] == "assistant":
                    k += 1
                    badges = "".join(_badge(s, j) for j, s in ratings.get((cid, model, k), []))
                    cells.append(f"<div class='dlg-turn dlg-asst'>{badges}<br>{_e(m['content'])}</div>")
                else:
                    cells.append(f"<div class='dlg-turn dlg-user'><b>{_e(m['role'])}</b>: {_e(m['content'])}</div>")
            cols.append(f"<div><b>{_e(model)}</b>{''.join(cells)}</div>")
        v = f" &middot; conversation verdicts: {_e('; '.join(verdicts[cid]))}" if cid in verdicts else ""
        blocks.append(f"<details class=dlg><summary>{_e(cid)}{v}</summary><div class=dlg-grid "
                      f"style='grid-template-columns:repeat({len(models)},1fr)'>{''.join(cols)}</div></details>")
    return "".join(blocks)


def _signed(x: float | None) -> str:
    return "&ndash;" if x is None else f"{100 * x:+.1f}"


def _with_ci(row: dict[str, Any], level: str) -> str:
    lo, hi = row["ci"][level]
    ci = f" <small>[{100 * lo:.0f}&ndash;{100 * hi:.0f}]</small>" if lo is not None else ""
    return f"{_pct(row['shares'][level])}{ci}"


def _tables(rows: list[dict[str, Any]], wins: list[dict[str, Any]], diffs: list[dict[str, Any]] = ()) -> str:
    from .report import _table

    parts = []
    if rows:
        parts.append(_table(["model (judge)", "turns", "Excellent", "Pass", "Fail", "unparsed", "conversations",
                             "failed within 3 turns"],
                            [[_e(r["label"]), r["n"], _with_ci(r, "excellent"), _with_ci(r, "pass"),
                              _with_ci(r, "fail"), r["null"], r["conversations"],
                              f"{r['failed_within_3_turns']} of {r['conversations']}"] for r in rows]))
        turns = sorted({t["turn"] for r in rows for t in r["by_turn"]})
        cell = lambda t: (f"E {_pct(t['shares']['excellent'])} &middot; F {_pct(t['shares']['fail'])} "
                          f"(n={t['n']})")
        parts.append(_table(["model (judge)"] + [f"turn {t}" for t in turns],
                            [[_e(r["label"])] + [next((cell(x) for x in r["by_turn"] if x["turn"] == t), "&ndash;")
                                                 for t in turns] for r in rows]))
    if diffs:
        d = lambda x, k: (f"{_signed(x['difference'][k]['value'])} [{_signed(x['difference'][k]['ci'][0])}, "
                          f"{_signed(x['difference'][k]['ci'][1])}]")
        parts.append("<h3>B minus A over the same conversations (percentage points, 95% interval)</h3>"
                     + _table(["model A", "model B", "judge", "conversations", "Excellent", "Pass", "Fail"],
                              [[_e(x["model_a"]), _e(x["model_b"]), _e(x["judge"].split("@", 1)[0]),
                                x["conversations"], d(x, "excellent"), d(x, "pass"), d(x, "fail")]
                               for x in diffs], text_cols=3))
    if wins:
        parts.append(_table(["model A", "model B", "judge", "A better", "tie", "B better", "unparsed"],
                            [[_e(w["model_a"]), _e(w["model_b"]), _e(w["judge"].split("@", 1)[0]),
                              w["counts"]["a"], w["counts"]["tie"], w["counts"]["b"], w["counts"]["null"]]
                             for w in wins], text_cols=3))
    return "".join(parts)


def report_section(records: list[dict[str, Any]], charts_dir: Path,
                   conversations: list[dict[str, Any]] = ()) -> str:
    """The dialogue section of a report page; "" when the records hold no dialogue judgments."""
    turns, pairs = split(records)
    if not turns and not pairs and not conversations:
        return ""
    rows, wins, diffs = turn_summary(turns), conversation_summary(pairs), turn_differences(turns)
    imgs = ""
    if rows:
        for name, fn, alt in (("dialogue_shares", shares_chart, "turn rating shares"),
                              ("dialogue_by_turn", by_turn_chart, "quality by turn")):
            data = fn(rows, Path(charts_dir) / f"{name}.png")
            imgs += f'<img src="data:image/png;base64,{data}" class=chart alt="{alt}">'
    return (f"<style>{CSS}</style><section><h2>Multi-turn dialogue (LIMA Figure 7)</h2>{imgs}{_tables(rows, wins, diffs)}"
            f"{_format_table(format_summary(list(conversations)))}"
            "<p class=note>Every assistant turn rated in context; a conversation counts as failed within three turns "
            "when any of its first three turns is rated Fail (by most of its raters, for the pooled people). "
            "Intervals are 95%: a bootstrap that resamples whole conversations (their turns are not independent), "
            "paired for the differences; where every rating falls on one side the bootstrap cannot move, so the "
            "interval is Wilson's (Newcombe's for a difference) with n = conversations. Conversation verdicts "
            "compare whole conversations in both orders.</p></section>"
            f"<section><h2>Conversations side by side</h2>{side_by_side(turns, pairs, conversations)}</section>")


def build(judgment_paths: list[Path], out_dir: Path, *, conversation_paths: list[Path] = (),
          title: str = "lima-align dialogue evaluation") -> Path:
    """Write out_dir/dialogue.html (self-contained), dialogue.json and charts/; returns the page's path."""
    from .dialogue import read_conversations_file
    from .report import REPORT_CSS
    from .stats import load_judgments

    records = load_judgments(judgment_paths)
    convs = [c for p in conversation_paths for c in read_conversations_file(p)]
    out_dir = Path(out_dir)
    section = report_section(records, out_dir / "charts", convs)
    if not section:
        from .errors import LimaError

        raise LimaError("no dialogue judgments or conversations in these files", fix="pass the output of "
                        "`lima-align judge turns` or `judge conversations`, and/or --conversations files")
    turns, pairs = split(records)
    created = time.strftime("%Y-%m-%d %H:%M:%S")
    summary = {"title": title, "created": created, "files": [str(p) for p in judgment_paths],
               "turns": turn_summary(turns), "turn_differences": turn_differences(turns),
               "conversations": conversation_summary(pairs),
               "format": format_summary(convs)}
    write_text_atomic(out_dir / "dialogue.json", json.dumps(summary, indent=2, ensure_ascii=False))
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{REPORT_CSS}</style></head><body><main><header><h1>{_e(title)}</h1><div class=sub>"
            f"{len(turns)} turn ratings, {len(pairs)} conversation verdicts &middot; generated {created}</div></header>"
            f"{section}</main></body></html>")
    return write_text_atomic(out_dir / "dialogue.html", page)
