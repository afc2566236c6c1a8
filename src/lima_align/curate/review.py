"""Step through selected examples in the terminal; accept, reject or edit each; survive interruption.

Every key press that decides something is appended at once (fsynced) to a decisions JSONL:

    {"id", "decision": "accept" | "reject" | "edit" | "skip" | "undo", "record_sha", "time",
     "response": "edited answer" (edit only)}

The selection file is never written: an edit lives in its decision line, beside the original.
The log is replayed on start, so a rerun resumes at the first undecided example; `undo` is itself
a line (it takes back the latest decision still standing, also from an earlier session); `skip`
leaves an example undecided for a later pass. `apply_review` writes the accepted examples (edited
ones with their new answer) and refuses decisions whose example changed since (record_sha).

Keys: a accept, r reject, e edit (opens $VISUAL / $EDITOR on a temporary file, or reads lines
until a lone "." when no editor is set), s skip, u undo, q quit. Input comes from injectable
functions, so tests drive the loop with a list of keystrokes.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import LimaError, ProblemList
from ..jsonl import JsonlAppender, read_jsonl, write_jsonl_atomic
from .dedup import prompt_of, response_of, text_hash

DECISIONS = ("accept", "reject", "edit", "skip", "undo")
STANDING = ("accept", "reject", "edit")  # decisions that decide an example
HELP = "[a]ccept  [r]eject  [e]dit  [s]kip  [u]ndo  [q]uit"


def record_sha(record: dict[str, Any]) -> str:
    return text_hash(json.dumps(record.get("messages"), sort_keys=True, ensure_ascii=False))


def read_selection(path: str | Path) -> list[dict[str, Any]]:
    problems = ProblemList()
    out, seen = [], {}
    for n, obj in read_jsonl(path):
        rid = obj.get("id")
        if not isinstance(rid, (str, int)) or isinstance(rid, bool):
            problems.add(f"{path}:{n} id", "every example needs an id to hang decisions on", "add a unique \"id\"")
            continue
        if not response_of(obj):
            problems.add(f"{path}:{n} messages", "no assistant turn to review", "review a training set (user + assistant)")
        if str(rid) in seen:
            problems.add(f"{path}:{n} id", f"duplicate id {rid!r} (first at line {seen[str(rid)]})", "make ids unique")
        seen.setdefault(str(rid), n)
        out.append(obj)
    problems.raise_if_any()
    return out


def replay(path: str | Path) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """id -> its standing decisions (last one counts), and the undo stack of ids, from the log."""
    state: dict[str, list[dict[str, Any]]] = {}
    stack: list[str] = []
    if not Path(path).exists():
        return state, stack
    problems = ProblemList()
    for n, d in read_jsonl(path, allow_partial_tail=True):
        kind = d.get("decision")
        if kind not in DECISIONS or (kind != "undo" and not isinstance(d.get("id"), str)):
            problems.add(f"{path}:{n}", f"not a review decision: {json.dumps(d)[:80]}",
                         f"each line needs \"decision\" in {DECISIONS} and a string \"id\"")
            continue
        if kind == "edit" and not isinstance(d.get("response"), str):
            problems.add(f"{path}:{n} response", "an edit needs the edited answer as a string")
            continue
        if kind == "undo":
            if stack:
                state[stack.pop()].pop()
        elif kind in STANDING:
            state.setdefault(d["id"], []).append(d)
            stack.append(d["id"])
    problems.raise_if_any()
    return state, stack


def current(state: dict[str, list[dict[str, Any]]], rid: str) -> dict[str, Any] | None:
    return state[rid][-1] if state.get(rid) else None


# ------------------------------------------------------------------ terminal input


def _tty_key(prompt: str) -> str:
    """One key press without Enter on a terminal; a line otherwise (pipes, tests)."""
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        return line.strip()
    import termios
    import tty

    sys.stdout.write(prompt)
    sys.stdout.flush()
    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        ch = sys.stdin.read(1)
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)
    sys.stdout.write("\n")
    if ch in ("\x03", "\x04"):  # Ctrl-C / Ctrl-D in raw mode
        raise EOFError
    return ch


def _edit_with_editor(text: str, editor: str) -> str | None:
    with tempfile.NamedTemporaryFile("w", suffix=".md", delete=False, encoding="utf-8") as f:
        f.write(text)
        tmp = f.name
    try:
        rc = subprocess.run([*shlex.split(editor), tmp], check=False).returncode
        if rc != 0:
            return None
        return Path(tmp).read_text(encoding="utf-8")
    except OSError:
        return None
    finally:
        os.unlink(tmp)


def _edit_inline(read_line: Callable[[str], str], console: Any) -> str:
    _say(console, "Type the new answer; a line with a single '.' ends it (an empty answer keeps the old one).")
    lines = []
    while True:
        line = read_line("")
        if line.strip() == ".":
            return "\n".join(lines)
        lines.append(line)


# ------------------------------------------------------------------ the loop


def _show(console: Any, rec: dict[str, Any], i: int, total: int, counts: Counter) -> None:
    from rich.markdown import Markdown
    from rich.markup import escape
    from rich.panel import Panel
    from rich.text import Text

    meta = rec.get("meta") if isinstance(rec.get("meta"), dict) else {}
    where = " · ".join(str(x) for x in (rec.get("source"), meta.get("group"), meta.get("stratum") or meta.get("site"))
                       if x)
    # User text is data, never rich markup: "[b]" in an answer must show as typed.
    console.rule(escape(f"[{i + 1}/{total}] {rec['id']}" + (f"  ({where})" if where else "")))
    if meta.get("url"):
        _say(console, f"{meta['url']}" + (f"  (licence: {meta['license']})" if meta.get("license") else ""))
    console.print(Panel(Text(prompt_of(rec)), title="prompt", title_align="left"))
    console.print(Panel(Markdown(response_of(rec)), title=f"response ({len(response_of(rec))} chars)",
                        title_align="left"))
    _say(console, f"decided {sum(counts.values())}: accepted {counts['accept']}, edited {counts['edit']}, "
         f"rejected {counts['reject']}    {HELP}")


def _say(console: Any, text: str) -> None:
    console.print(text, markup=False, highlight=False)


def review(selected: str | Path, decisions: str | Path, *, read_key: Callable[[str], str] | None = None,
           read_line: Callable[[str], str] | None = None, editor: str | None = None, console: Any = None,
           reviewer: str | None = None) -> dict[str, int]:
    """Run the review loop until every example is decided, `q`, or end of input. Returns the tallies."""
    from ..crash import console as pipe_aware_console

    console = console or pipe_aware_console()  # `| head` ends quietly with 141, as every command does
    read_key = read_key or _tty_key
    read_line = read_line or (input if read_key is _tty_key else read_key)
    editor = (os.environ.get("VISUAL") or os.environ.get("EDITOR") or "") if editor is None else editor
    records = read_selection(selected)
    ids = [str(r["id"]) for r in records]
    index = {rid: i for i, rid in enumerate(ids)}
    state, stack = replay(decisions)
    stack = [rid for rid in stack if rid in index]

    def undecided_from(start: int) -> int | None:
        return next((j for j in range(start, len(ids)) if current(state, ids[j]) is None), None)

    def counts() -> Counter:
        return Counter(d["decision"] for rid in ids if (d := current(state, rid)))

    pos = undecided_from(0)
    if pos is not None and pos > 0:
        _say(console, f"resuming at example {pos + 1} of {len(ids)} ({sum(counts().values())} already decided)")
    with JsonlAppender(decisions) as log:
        def write(rid: str, kind: str, **extra: Any) -> dict[str, Any]:
            d = {"id": rid, "decision": kind, "record_sha": record_sha(records[index[rid]]),
                 "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
            if reviewer:
                d["reviewer"] = reviewer
            log.write(d)
            return d

        shown = None
        while pos is not None:
            rec, rid = records[pos], ids[pos]
            if shown != pos:
                _show(console, rec, pos, len(ids), counts())
                shown = pos
            try:
                key = read_key("> ").strip().lower()[:1]
            except (EOFError, StopIteration):
                key = "q"
            if not key:
                continue  # Enter after a key press on a terminal, or a blank line in piped input
            if key in ("a", "r"):
                d = write(rid, "accept" if key == "a" else "reject")
            elif key == "e":
                try:
                    new = (_edit_with_editor(response_of(rec), editor) if editor
                           else _edit_inline(read_line, console))
                except (EOFError, StopIteration):
                    new = None
                if new is None or not new.strip() or new.strip() == response_of(rec).strip():
                    _say(console, "no change saved (editor failed, answer empty or unchanged)")
                    continue
                d = write(rid, "edit", response=new.rstrip("\n"))
            elif key == "s":
                write(rid, "skip")
                pos = undecided_from(pos + 1)
                continue
            elif key == "u":
                if not stack:
                    _say(console, "nothing to undo")
                    continue
                back = stack.pop()
                log.write({"id": back, "decision": "undo",
                           "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
                state[back].pop()
                pos = index[back]
                continue
            elif key == "q":
                break
            else:
                _say(console, f"unknown key {key!r}: {HELP}")
                continue
            state.setdefault(rid, []).append(d)
            stack.append(rid)
            pos = undecided_from(pos + 1)
    tally = counts()
    left = sum(1 for rid in ids if current(state, rid) is None)
    _say(console, f"accepted {tally['accept']}, edited {tally['edit']}, rejected {tally['reject']}, undecided {left}"
                  + (" (rerun to continue)" if left else ""))
    return {"accept": tally["accept"], "edit": tally["edit"], "reject": tally["reject"], "undecided": left}


# ------------------------------------------------------------------ apply


def apply_review(selected: str | Path, decisions: str | Path, output: str | Path) -> dict[str, int]:
    """Write the accepted examples (edits applied, `meta.review` added) in selection order."""
    records = read_selection(selected)
    if not Path(decisions).exists():
        raise LimaError("decisions file not found", where=str(decisions),
                        fix="run `lima-align curate review` first")
    state, _ = replay(decisions)
    by_id = {str(r["id"]): r for r in records}
    problems = ProblemList()
    for rid, ds in state.items():
        if not ds:
            continue
        if rid not in by_id:
            problems.add(f"{decisions} id {rid!r}", "decision for an example that is not in the selection",
                         "review the matching selection file, or delete that line")
        elif ds[-1].get("record_sha") not in (None, record_sha(by_id[rid])):
            problems.add(f"{decisions} id {rid!r}", "the example changed since it was reviewed",
                         "review it again (delete its lines from the decisions file) or restore the selection")
    problems.raise_if_any()
    out, tally = [], Counter()
    for rec in records:
        d = current(state, str(rec["id"]))
        tally[d["decision"] if d else "undecided"] += 1
        if d is None or d["decision"] == "reject":
            continue
        rec = json.loads(json.dumps(rec))  # deep copy: the selection stays as it was
        meta = rec.get("meta") if isinstance(rec.get("meta"), dict) else {}
        meta["review"] = {"decision": d["decision"]}
        if d["decision"] == "edit":
            last = max(i for i, m in enumerate(rec["messages"]) if m.get("role") == "assistant")
            meta["review"]["original_sha256"] = text_hash(rec["messages"][last]["content"])
            rec["messages"][last]["content"] = d["response"]
        rec["meta"] = meta
        out.append(rec)
    write_jsonl_atomic(output, out)
    return {k: tally[k] for k in ("accept", "edit", "reject", "undecided")} | {"written": len(out)}
