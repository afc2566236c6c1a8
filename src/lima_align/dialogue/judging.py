"""`lima-align judge turns` and `judge conversations`: LIMA section 6's dialogue evaluation.

Turn level: every assistant turn of every conversation is rated Fail / Pass / Excellent in context.
Each turn becomes one item for judge.judge_absolute (so caching, resume, retries and the record
format are judge.py's): prompt = the messages before the turn, output = the turn, prompt_id =
"<conversation_id>#t<turn>" (turn = 1-based index among the assistant turns). The records are
EVAL_SPEC absolute records plus "conversation_id" and "turn"; people rating turns in the
annotation app write the same records with judge "human:<name>".

Conversation level: two models' conversations with the same id are compared whole with
judge.judge_pairwise, in both orders: prompt = the first user turn (scripted) or the scenario
(simulated, as a system message), output_a / output_b = the whole transcripts. Records are EVAL_SPEC
pairwise records plus "unit": "conversation" and "conversation_id".

The extra fields are added once the run's records are written (the output is rewritten atomically);
readers also derive them from prompt_id (`turn_of`), so records from an interrupted run read the same.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import LimaError, ProblemList
from ..jsonl import read_jsonl, write_jsonl_atomic
from ..judge_text import INSTRUCTIONS_DIR, render_conversation

TURN_INSTRUCTIONS = INSTRUCTIONS_DIR / "turn.md"
CONVERSATION_INSTRUCTIONS = INSTRUCTIONS_DIR / "conversation.md"
_TURN_ID = re.compile(r"^(?P<cid>.+)#t(?P<turn>[1-9][0-9]*)$")


def turn_id(conversation_id: str, turn: int) -> str:
    return f"{conversation_id}#t{turn}"


def turn_of(record: dict[str, Any]) -> tuple[str, int] | None:
    """(conversation_id, turn) of a turn-level record: its own fields, else parsed from prompt_id."""
    if isinstance(record.get("conversation_id"), str) and isinstance(record.get("turn"), int):
        return record["conversation_id"], record["turn"]
    m = _TURN_ID.match(str(record.get("prompt_id", "")))
    return (m["cid"], int(m["turn"])) if m else None


def turn_items(convs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One generations-like item per assistant turn, as judge_absolute reads them."""
    items = []
    for c in convs:
        k = 0
        for i, m in enumerate(c["messages"]):
            if m["role"] != "assistant":
                continue
            k += 1
            items.append({"prompt_id": turn_id(c["conversation_id"], k), "model": c["model"],
                          "messages": [{"role": x["role"], "content": x["content"]} for x in c["messages"][:i]],
                          "output": m["content"]})
    return items


def _add_fields(output: Path, extra: Any) -> None:
    """Give every record in output the fields extra(record) returns (None: leave it), in one atomic rewrite."""
    if not output.exists():
        return
    rows, changed = [], False
    for _, r in read_jsonl(output, allow_partial_tail=True):
        add = extra(r)
        if add and any(r.get(k) != v for k, v in add.items()):
            r = {**r, **add}
            changed = True
        rows.append(r)
    if changed:
        write_jsonl_atomic(output, rows)


def judge_turns(convs: list[dict[str, Any]], judges: list[Any], output: str | Path, *,
                instructions_path: str | Path | None = None, cache_path: str | Path | None = None,
                max_concurrency: int = 8, progress: bool = True, log: Any = print) -> dict[str, Any]:
    """Rate every assistant turn of every conversation (any number of models) with every judge."""
    output = Path(output)
    items = turn_items(convs)
    if not items:
        raise LimaError("no assistant turns to rate", fix="pass conversation files written by `lima-align converse`")

    def fields(r: dict[str, Any]) -> dict[str, Any] | None:
        t = turn_of(r) if r.get("type") == "absolute" else None
        return {"conversation_id": t[0], "turn": t[1]} if t else None

    from ..judge import judge_absolute  # here: the runner loads asyncio and SQLite, which `--help` need not

    try:
        return judge_absolute(items, judges, output, scale="fail_pass_excellent",
                              instructions_path=instructions_path or TURN_INSTRUCTIONS, cache_path=cache_path,
                              max_concurrency=max_concurrency, progress=progress, log=log)
    finally:
        _add_fields(output, fields)  # also after a partial run: what was written is complete


def _opening(c: dict[str, Any]) -> list[dict[str, str]]:
    scenario = (c.get("meta") or {}).get("scenario")
    if c.get("mode") == "simulated" and isinstance(scenario, str):
        return [{"role": "system", "content": f"Scenario the user was playing: {scenario}"}]
    first = next(m for m in c["messages"] if m["role"] == "user")
    return [{"role": "user", "content": first["content"]}]


def _check_pairable(a: list[dict[str, Any]], b: list[dict[str, Any]], sources: tuple[str, str]) -> None:
    problems = ProblemList()
    for convs, src in zip((a, b), sources):
        models = sorted({c["model"] for c in convs})
        if len(models) > 1:
            problems.add(src, f"holds conversations of {len(models)} models ({', '.join(models)})",
                         "pass one model's conversations per file")
    by_b = {c["conversation_id"]: c for c in b}
    for c in a:
        other = by_b.get(c["conversation_id"])
        if other is None:
            continue
        if c.get("mode") != other.get("mode"):
            problems.add(f"{c['_where']} mode", f"{c['conversation_id']!r} is {c.get('mode')} here and "
                         f"{other.get('mode')} at {other['_where']}", "compare conversations held the same way")
        elif c.get("mode") == "simulated":
            if _opening(c) != _opening(other):
                problems.add(f"{c['_where']} meta.scenario", f"the scenario of {c['conversation_id']!r} differs "
                             f"from the one at {other['_where']}", "simulate both models from the same scenarios")
        else:
            ua = [m["content"] for m in c["messages"] if m["role"] == "user"]
            ub = [m["content"] for m in other["messages"] if m["role"] == "user"]
            if ua != ub:
                problems.add(f"{c['_where']} messages", f"the user turns of {c['conversation_id']!r} differ from "
                             f"those at {other['_where']}", "hold both models' conversations from the same script")
    problems.raise_if_any()


def judge_conversations(convs_a: list[dict[str, Any]], convs_b: list[dict[str, Any]], judges: list[Any],
                        output: str | Path, *, instructions_path: str | Path | None = None,
                        cache_path: str | Path | None = None, max_concurrency: int = 8,
                        allow_partial: bool = False, sources: tuple[str, str] = ("A", "B"),
                        progress: bool = True, log: Any = print) -> dict[str, Any]:
    """Compare two models' whole conversations, matched by conversation_id, in both orders."""
    output = Path(output)
    _check_pairable(convs_a, convs_b, sources)

    def items(convs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"prompt_id": c["conversation_id"], "model": c["model"], "messages": _opening(c),
                 "output": render_conversation(c["messages"])} for c in convs]

    ids = {c["conversation_id"] for c in convs_a} | {c["conversation_id"] for c in convs_b}

    def fields(r: dict[str, Any]) -> dict[str, Any] | None:
        if r.get("type") == "pairwise" and r.get("prompt_id") in ids:
            return {"unit": "conversation", "conversation_id": r["prompt_id"]}
        return None

    from ..judge import judge_pairwise

    try:
        return judge_pairwise(items(convs_a), items(convs_b), judges, output,
                              instructions_path=instructions_path or CONVERSATION_INSTRUCTIONS,
                              cache_path=cache_path, max_concurrency=max_concurrency, allow_partial=allow_partial,
                              sources=sources, progress=progress, log=log)
    finally:
        _add_fields(output, fields)

