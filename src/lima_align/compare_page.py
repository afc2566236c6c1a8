"""The side-by-side page of two generation files (the quickstart's compare.html): every prompt both files
answered with the two answers next to each other, under a one-line account of how they were decoded and the
judge-free figures of each model (answer_checks). The page is templates/compare.html."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .answer_checks import figures_rows, summarize
from .html_parts import render_page
from .jsonl import write_text_atomic

# what each finish_reason means (README "Generation"), in words for the page
FINISH_TEXT = {"eot": "ended its turn", "stop": "began the user's next turn", "length": "hit the length cap"}
DECODING_KEYS = (("temperature", "temperature {}"), ("top_p", "top-p {}"),
                 ("repetition_penalty", "repetition penalty {}"), ("max_new_tokens", "at most {} new tokens"))


def decoding_text(records: list[dict[str, Any]]) -> str | None:
    """'temperature 0.7, top-p 0.9, repetition penalty 1.2, at most 160 new tokens' (the settings that shape an
    answer; seed and batch size do not), 'several settings' when records differ, None when none recorded it."""
    seen = {tuple((k, (r.get("decoding") or {}).get(k)) for k, _ in DECODING_KEYS) for r in records}
    seen.discard(tuple((k, None) for k, _ in DECODING_KEYS))
    if not seen:
        return None
    if len(seen) > 1:
        return "several decoding settings"
    values = dict(seen.pop())
    return ", ".join(label.format(values[k]) for k, label in DECODING_KEYS if values[k] is not None)


def lead_line(a: list[dict[str, Any]], b: list[dict[str, Any]], names: tuple[str, str], note: str = "") -> str:
    """One human sentence: how many prompts, and how the answers were decoded."""
    da, db = decoding_text(a), decoding_text(b)
    if da == db:
        how = f"decoding for both: {da}" if da else "decoding not recorded"
    else:
        how = f"decoding: {names[0]}: {da or 'not recorded'}; {names[1]}: {db or 'not recorded'}"
    text = f"{len(a)} prompt{'' if len(a) == 1 else 's'} answered by both models; {how}."
    return f"{text} {note}" if note else text


def side_by_side_html(a: list[dict[str, Any]], b: list[dict[str, Any]], path: str | Path, *, title: str,
                      names: tuple[str, str], summary: str = "") -> Path:
    """One row per prompt id present in both files, in the order of `a`; `summary` is an optional note added
    to the lead line. The figures are computed over the prompts shown, so the two columns count the same."""
    by_id = {r["prompt_id"]: r for r in b}
    pairs = [(r, by_id[r["prompt_id"]]) for r in a if r["prompt_id"] in by_id]
    shown_a, shown_b = [x for x, _ in pairs], [y for _, y in pairs]

    def answer(r: dict[str, Any]) -> dict[str, str]:
        tokens = (r.get("tokens") or {}).get("output")
        meta = ", ".join(x for x in (f"{tokens} tokens" if tokens is not None else "",
                                     FINISH_TEXT.get(r.get("finish_reason") or "", r.get("finish_reason") or ""))
                         if x)
        return {"text": r["output"], "meta": meta}

    rows = [{"prompt": r["messages"][-1]["content"], "prompt_id": r["prompt_id"],
             "answers": [answer(r), answer(other)]} for r, other in pairs]
    page = render_page("compare.html", title=title, lead=lead_line(shown_a, shown_b, names, summary), names=names,
                       figures=figures_rows([summarize(shown_a), summarize(shown_b)]), rows=rows)
    return write_text_atomic(path, page)
