"""Judge-free figures for generations files: what can be read off the answers without any judge.

Per answer (one generations record, README "Generation"):

* ended its turn: `finish_reason == "eot"` (the model stopped by itself at the end-of-turn token);
* hit the length cap: `finish_reason == "length"`;
* asks for a list: the prompt's last user message asks for a list or steps (`asks_for_list`);
* has a line break: the answer contains a newline;
* repeated 4-gram share: repeated word 4-grams / all word 4-grams of the answer (a degenerate, looping
  answer scores high; 0 for an answer of fewer than four words);
* output tokens.

Per model (`summarize`): the shares with Wilson 95% intervals, "line breaks among answers to list/steps
prompts" (k of n: an aligned model should answer a request for steps with a list, a base model usually
runs on in one paragraph or never stops), the mean repeated 4-gram share and the mean output tokens.
Imported answers (AlpacaEval, FastChat) have no finish reason or token count; those figures are then
counted over the answers that have them and show n/a when none do.

This module is the one source of these figures: `lima-align answers`, the quickstart's summary and the
compare page all read them from here.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from .errors import LimaError
from .jsonl import read_jsonl, write_text_atomic
from .intervals import wilson

# ------------------------------------------------------------------ the list/steps heuristic

_NUMBER = r"(?:\d+|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty)"
_ITEMS = r"(?:ways|tips|ideas|reasons|examples|things|options|steps|points|suggestions|items|questions|facts)"
# Each pattern is a request for several separate items; they are matched case-insensitively on the last user
# message. Kept conservative: a prompt that only mentions a list ("it lists them biggest first") or asks a
# "how do I" question is not counted, since a good answer to those may well be one paragraph.
LIST_PATTERNS: dict[str, str] = {
    "steps": r"\bstep[- ]by[- ]step\b|\bsteps\b",
    "bullets": r"\bbullet(?:s|ed|[- ]points?)?\b",
    "numbered": r"\bnumbered\b",
    "checklist": r"\bcheck-?list\b",
    "outline": r"\boutline\b",
    "a list": r"\b(?:give|make|write|provide|create|compile|draw up)\s+(?:me\s+|us\s+)?(?:a|an)\s+(?:[\w-]+\s+)?list\b"
              r"|\b(?:with|as|in|into)\s+a\s+(?:[\w-]+\s+)?list\b"  # "a summary with a list of action items"
              rf"|(?:^|[.!?]\s+|\byou\s+)(?:please\s+)?list\s+(?:the|all|some|every|a few|me|{_NUMBER})\b",
    "N items": rf"\b{_NUMBER}\s+(?:[\w-]+\s+){{0,2}}{_ITEMS}\b",
    "ideas": r"\b(?:give|suggest|share|need)\s+(?:me\s+|us\s+)?(?:some\s+|a few\s+|more\s+)?(?:[\w-]+\s+)?"
             r"(?:ideas|tips|suggestions)\b|\bany\s+(?:[\w-]+\s+)?(?:ideas|tips|suggestions)\b",
    "what are some": r"\bwhat are some\b",
    "brainstorm": r"\bbrainstorm\b",
}
# A list asked for inside JSON need not break lines, so a prompt that asks for JSON is not a list prompt.
NOT_LIST = r"\bjson\b"
# Pasted material (a quoted passage, a code block) is what the user asks about, not the request itself:
# "42 monitoring points" inside a quoted report is no request for points.
PASTED = r'"[^"]{40,}"|“[^”]{40,}”|```.*?```'
_LIST_RE = {name: re.compile(p, re.IGNORECASE) for name, p in LIST_PATTERNS.items()}
_NOT_LIST_RE = re.compile(NOT_LIST, re.IGNORECASE)
_PASTED_RE = re.compile(PASTED, re.DOTALL)


def list_request(prompt: str) -> str | None:
    """The name of the first LIST_PATTERNS entry the prompt matches outside pasted material, or None (also
    for a request for JSON)."""
    request = _PASTED_RE.sub(" ", prompt)
    if _NOT_LIST_RE.search(request):
        return None
    return next((name for name, rx in _LIST_RE.items() if rx.search(request)), None)


def asks_for_list(prompt: str) -> bool:
    return list_request(prompt) is not None


# ------------------------------------------------------------------ per answer

_WORD = re.compile(r"\w+(?:['’]\w+)*")


def repeated_ngram_share(text: str, n: int = 4) -> float:
    """Repeated word n-grams / all word n-grams: every occurrence of an n-gram after its first counts as
    repeated. Words are lowercased, punctuation is ignored."""
    words = [w.lower() for w in _WORD.findall(text)]
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    return (len(grams) - len(set(grams))) / len(grams)


def last_user_message(record: dict[str, Any]) -> str:
    return next((m.get("content", "") for m in reversed(record["messages"]) if m.get("role") == "user"), "")


def check_answer(record: dict[str, Any]) -> dict[str, Any]:
    """The per-answer figures of one generations record (None where the record cannot say)."""
    finish = record.get("finish_reason")
    tokens = (record.get("tokens") or {}).get("output")
    return {"prompt_id": record["prompt_id"],
            "ended_turn": None if finish is None else finish == "eot",
            "hit_length_cap": None if finish is None else finish == "length",
            "asks_for_list": asks_for_list(last_user_message(record)),
            "has_line_break": "\n" in record["output"].strip(),
            "repeated_4gram_share": repeated_ngram_share(record["output"]),
            "output_tokens": tokens}


# ------------------------------------------------------------------ per model

def _share(flags: list[bool | None]) -> dict[str, Any]:
    known = [f for f in flags if f is not None]
    return {"k": sum(known), "n": len(known), **wilson(sum(known), len(known))}


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One model's figures over its answers."""
    checks = [check_answer(r) for r in records]
    tokens = [c["output_tokens"] for c in checks if c["output_tokens"] is not None]
    models = sorted({str(r.get("model")) for r in records})
    return {"model": models[0] if len(models) == 1 else ", ".join(models), "answers": len(checks),
            "ended_turn": _share([c["ended_turn"] for c in checks]),
            "hit_length_cap": _share([c["hit_length_cap"] for c in checks]),
            "list_prompts_with_line_breaks": _share([c["has_line_break"] for c in checks if c["asks_for_list"]]),
            "repeated_4gram_share": round(statistics.mean(c["repeated_4gram_share"] for c in checks), 4)
            if checks else None,
            "mean_output_tokens": round(statistics.mean(tokens), 1) if tokens else None}


def read_answers(path: str | Path) -> list[dict[str, Any]]:
    """A generations file, every record checked for what the figures read; problems raise with file:line."""
    p = Path(path)
    out, fix = [], "each line must be a generation record from `lima-align generate` (prompt_id, messages, output)"
    for n, r in read_jsonl(p):
        where = f"{p}:{n}"
        if not isinstance(r.get("output"), str) or "prompt_id" not in r:
            raise LimaError("not a generation record: 'prompt_id' or a text 'output' is missing", where=where,
                            fix=fix)
        msgs = r.get("messages")
        if not isinstance(msgs, list) or not all(isinstance(m, dict) and isinstance(m.get("content"), str)
                                                 for m in msgs):
            raise LimaError("'messages' must be a list of {role, content} objects", where=f"{where} messages",
                            fix=fix)
        if not isinstance(r.get("finish_reason"), str | None):
            raise LimaError("'finish_reason' must be a string", where=f"{where} finish_reason", fix=fix)
        tokens = r.get("tokens")
        if tokens is not None and not (isinstance(tokens, dict) and isinstance(tokens.get("output", 0), int)):
            raise LimaError("'tokens' must be {prompt, output} counts", where=f"{where} tokens", fix=fix)
        out.append(r)
    if not out:
        raise LimaError("the file holds no generation records", where=str(p), fix="generate answers into it first")
    return out


def answers_table(paths: list[str | Path]) -> list[dict[str, Any]]:
    """One row of figures per generations file (every file is read and checked before any is summarised)."""
    files = [(str(p), read_answers(p)) for p in paths]
    return [{"file": name, **summarize(records)} for name, records in files]


# ------------------------------------------------------------------ display

def fmt_share(s: dict[str, Any], *, counts: bool = True) -> str:
    """'75% [47-92] (9/12)', or 'n/a' where no answer could say."""
    if s["value"] is None:
        return "n/a"
    lo, hi = s["ci"]
    text = f"{100 * s['value']:.0f}% [{100 * lo:.0f}-{100 * hi:.0f}]"
    return f"{text} ({s['k']}/{s['n']})" if counts else text


def fmt_number(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


# (label, how a row's figure is written): one list for the terminal table, the quickstart and the compare page.
FIGURES: list[tuple[str, Any]] = [
    ("answers", lambda r: str(r["answers"])),
    ("ended its turn", lambda r: fmt_share(r["ended_turn"])),
    ("hit the length cap", lambda r: fmt_share(r["hit_length_cap"])),
    ("line breaks, list/steps prompts", lambda r: fmt_share(r["list_prompts_with_line_breaks"])),
    ("repeated 4-grams (mean share)", lambda r: fmt_number(r["repeated_4gram_share"], 3)),
    ("mean output tokens", lambda r: fmt_number(r["mean_output_tokens"])),
]


def figures_rows(summaries: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """The figures as (label, one cell per model) rows."""
    return [(label, [show(s) for s in summaries]) for label, show in FIGURES]


def rich_table(summaries: list[dict[str, Any]], names: list[str], title: str) -> Any:
    """Figures as rows, one column per model (the shape of the quickstart's table)."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("")
    for name in names:
        table.add_column(name)
    for label, cells in figures_rows(summaries):
        table.add_row(label, *cells)
    return table


# ------------------------------------------------------------------ `lima-align answers`

def cmd_answers(args: argparse.Namespace) -> int:
    from .crash import console

    rows = answers_table(args.files)
    names = [f"{r['model']}\n{Path(r['file']).name}" for r in rows]
    console().print(rich_table(rows, names, "judge-free figures (95% Wilson intervals; k/n)"))
    if args.json:
        write_text_atomic(args.json, json.dumps(rows, indent=2))
        print(f"figures: {args.json}")
    return 0


def add_commands(sub: Any) -> None:
    x = sub.add_parser("answers", help="judge-free figures of generations files (ended turn, length cap, lists, "
                       "repetition, length)",
                       description="Figures that need no judge, per generations file: how often the model ended its "
                       "turn itself or hit the length cap, how many answers to list/steps prompts break lines, the "
                       "share of repeated word 4-grams and the mean output length.")
    x.add_argument("files", nargs="+", metavar="GENS.jsonl", help="generations JSONL files, one column each")
    x.add_argument("--json", metavar="OUT", help="also write the figures to this JSON file")
    x.set_defaults(func=cmd_answers)
