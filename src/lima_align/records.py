"""Conversation records: the JSONL format every stage reads and writes, and readers for other formats.

Our record (TRL's `messages` convention):

    {"id": "ex-1", "source": "stackexchange",
     "messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...],
     "meta": {...}}

Rules: an optional system message comes first; then user and assistant alternate starting with
user; no turn is empty. A *training* example ends with an assistant turn; a *prompt* ends with a
user turn. Readers also accept LIMA's own format (`conversations: [u, a, u, a, ...]`), Alpaca
(`instruction`/`input`/`output`) and ShareGPT/FastChat (`conversations: [{"from", "value"}]`),
in JSONL or in a JSON list.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .errors import LimaError, Problem, ProblemList
from .jsonl import json_error, read_jsonl, read_text

if TYPE_CHECKING:  # decoding reads the config; records is imported by nearly everything and stays light
    from .decoding import Decoding, Reply

ROLES = ("system", "user", "assistant")
FORMATS = ("auto", "ours", "lima", "alpaca", "sharegpt")
Purpose = Literal["train", "prompt", "any"]

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "system": "system"}


@dataclass
class Message:
    role: str
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass
class Conversation:
    id: str
    messages: list[Message]
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "messages": [m.to_dict() for m in self.messages],
                "meta": self.meta}

    @property
    def prompt(self) -> str:
        """The first user turn: what a single-turn example asks."""
        return next((m.content for m in self.messages if m.role == "user"), "")


def check_messages(messages: list[Message], where: str, purpose: Purpose, problems: ProblemList) -> None:
    """Check the turn structure; every problem names the message index and how to fix it."""
    if not messages:
        problems.add(f"{where} messages", "no messages", "give at least one user turn")
        return
    body_start = 1 if messages[0].role == "system" else 0
    for i, m in enumerate(messages):
        here = f"{where} messages[{i}]"
        if m.role not in ROLES:
            problems.add(f"{here}.role", f"unknown role {m.role!r}", f"use one of {', '.join(ROLES)}")
            continue
        if not m.content.strip():
            problems.add(f"{here}.content", f"empty {m.role} turn", "write the turn or remove the record")
        if m.role == "system" and i != 0:
            problems.add(f"{here}.role", "a system message may only come first", "move it to messages[0]")
            continue
        if i >= body_start and m.role != "system":
            expected = "user" if (i - body_start) % 2 == 0 else "assistant"
            if m.role != expected:
                problems.add(f"{here}.role", f"expected {expected!r} (turns alternate, user first), got {m.role!r}",
                             "merge consecutive turns of the same role, or add the missing turn")
    if len(messages) == body_start:
        problems.add(f"{where} messages", "only a system message", "add a user turn")
        return
    last = messages[-1].role
    if purpose == "train" and last != "assistant":
        problems.add(f"{where} messages[{len(messages) - 1}]", "a training example must end with an assistant turn",
                     "add the assistant's answer or drop the trailing user turn")
    if purpose == "prompt" and last != "user":
        problems.add(f"{where} messages[{len(messages) - 1}]", "a prompt must end with a user turn",
                     "drop the trailing assistant turn (it is what the model will generate)")


def _message_list(raw: Any, where: str, problems: ProblemList) -> list[Message]:
    if not isinstance(raw, list):
        problems.add(f"{where} messages", f"expected a list, got {type(raw).__name__}",
                     'write "messages": [{"role": "user", "content": "..."}, ...]')
        return []
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            problems.add(f"{where} messages[{i}]", "each message needs string fields 'role' and 'content'",
                         '{"role": "user", "content": "..."}')
            continue
        out.append(Message(m["role"], m["content"]))
    return out


def detect_format(obj: dict[str, Any]) -> str:
    if "messages" in obj:
        return "ours"
    if "instruction" in obj and "output" in obj:
        return "alpaca"
    conv = obj.get("conversations")
    if isinstance(conv, list):
        if all(isinstance(c, str) for c in conv):
            return "lima"
        if all(isinstance(c, dict) for c in conv):
            return "sharegpt"
    return "unknown"


def parse_record(obj: dict[str, Any], where: str, fmt: str, fallback_id: str, problems: ProblemList) -> Conversation | None:
    """Turn one raw object of any supported format into a Conversation (problems collected, not raised)."""
    kind = detect_format(obj) if fmt == "auto" else fmt
    rid = obj.get("id", obj.get("question_id", fallback_id))
    rid = str(rid) if rid is not None else fallback_id
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    source = obj.get("source") if isinstance(obj.get("source"), str) else ""
    n = len(problems.problems)
    if kind == "ours":
        messages = _message_list(obj.get("messages"), where, problems)
        if "meta" in obj and not isinstance(obj["meta"], dict):
            problems.add(f"{where} meta", "must be an object", 'use "meta": {} or drop the field')
    elif kind == "lima":
        conv = obj.get("conversations")
        if not isinstance(conv, list) or not all(isinstance(c, str) for c in conv):
            problems.add(f"{where} conversations", "LIMA format needs a list of strings",
                         '"conversations": ["user text", "assistant text", ...]')
            return None
        messages = [Message("user" if i % 2 == 0 else "assistant", c) for i, c in enumerate(conv)]
    elif kind == "alpaca":
        ins, inp, out = obj.get("instruction"), obj.get("input", ""), obj.get("output")
        if not isinstance(ins, str) or not isinstance(out, str) or not isinstance(inp, str):
            problems.add(where, "Alpaca format needs string fields 'instruction', 'output' (and optional 'input')", "")
            return None
        prompt = f"{ins}\n\n{inp}" if inp.strip() else ins
        messages = [Message("user", prompt)] + ([Message("assistant", out)] if out.strip() else [])
    elif kind == "sharegpt":
        messages = []
        for i, c in enumerate(obj.get("conversations") or []):
            frm = c.get("from") if isinstance(c, dict) else None
            val = c.get("value") if isinstance(c, dict) else None
            if frm not in SHAREGPT_ROLES or not isinstance(val, str):
                problems.add(f"{where} conversations[{i}]",
                             f"ShareGPT turns need 'from' in {sorted(SHAREGPT_ROLES)} and a string 'value'", "")
                continue
            messages.append(Message(SHAREGPT_ROLES[frm], val))
    else:
        problems.add(where, f"unrecognised record (keys: {', '.join(sorted(obj)) or 'none'})",
                     "use our format ('messages'), LIMA ('conversations' of strings), "
                     "Alpaca ('instruction'/'output') or ShareGPT ('conversations' of {from, value})")
        return None
    if len(problems.problems) > n:
        return None
    return Conversation(rid, messages, source, dict(meta))


def _iter_raw(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line-or-index, object) from JSONL, or from a JSON file holding a list of objects."""
    if path.suffix == ".json":
        try:
            data = json.loads(read_text(path))
        except json.JSONDecodeError as e:
            raise LimaError(Problem(f"{path}:{e.lineno}", json_error(e), "fix the JSON syntax")) from None
        if not isinstance(data, list):
            raise LimaError(Problem(str(path), "a .json dataset must hold a list of records", "or use JSONL"))
        for i, obj in enumerate(data):
            if not isinstance(obj, dict):
                raise LimaError(Problem(f"{path}[{i}]", "expected an object", ""))
            yield i, obj
    else:
        yield from read_jsonl(path)


def read_conversations(path: str | Path, *, fmt: str = "auto", purpose: Purpose = "any",
                       max_problems: int = 50) -> list[Conversation]:
    """Read and validate a whole dataset file; raise once with every problem (capped) found."""
    path = Path(path)
    rows = ((f"{path}[{n}]" if path.suffix == ".json" else f"{path}:{n}", f"{path.stem}-{n}", obj)
            for n, obj in _iter_raw(path))
    return conversations_from_rows(rows, str(path), fmt=fmt, purpose=purpose, max_problems=max_problems)


def conversations_from_rows(rows: Iterable[tuple[str, str, dict[str, Any]]], name: str, *, fmt: str = "auto",
                            purpose: Purpose = "any", max_problems: int = 50) -> list[Conversation]:
    """Parse and validate (where, fallback id, raw object) rows of one dataset, from a file or a
    `datasets` table; raise once with every problem (capped) found."""
    if fmt not in FORMATS:
        raise LimaError(f"unknown format {fmt!r}", fix=f"use one of {', '.join(FORMATS)}")
    problems = ProblemList()
    out: list[Conversation] = []
    seen: dict[str, str] = {}
    for where, fallback_id, obj in rows:
        conv = parse_record(obj, where, fmt, fallback_id, problems)
        if conv is None:
            continue
        check_messages(conv.messages, where, purpose, problems)
        if conv.id in seen:
            problems.add(f"{where} id", f"duplicate id {conv.id!r} (first at {seen[conv.id]})", "make ids unique")
        seen.setdefault(conv.id, where)
        out.append(conv)
        if len(problems.problems) >= max_problems:
            problems.add(name, f"stopped after {max_problems} problems", "fix these and run again")
            break
    problems.raise_if_any()
    if not out:  # nothing to train on or answer is never what was meant, so it is not a silent success
        turns = '{"role": "user", "content": "..."}' + (', {"role": "assistant", "content": "..."}'
                                                         if purpose == "train" else "")
        raise LimaError(Problem(name, "holds no records", f'add records, one JSON object a line, e.g. '
                                f'{{"id": "q1", "messages": [{turns}]}}'))
    return out


def to_format(conv: Conversation, fmt: str) -> dict[str, Any]:
    """Write a conversation in one of the supported formats (for `data convert`)."""
    if fmt == "ours":
        return conv.to_dict()
    body = [m for m in conv.messages if m.role != "system"]
    system = [m for m in conv.messages if m.role == "system"]
    if fmt == "lima":
        if system:
            raise LimaError(f"record {conv.id!r} has a system message, which LIMA's format cannot hold",
                            fix="convert to 'ours' or 'sharegpt' instead")
        return {"conversations": [m.content for m in body], "source": conv.source}
    if fmt == "sharegpt":
        names = {"user": "human", "assistant": "gpt", "system": "system"}
        return {"id": conv.id, "conversations": [{"from": names[m.role], "value": m.content} for m in conv.messages]}
    if fmt == "alpaca":
        if len(body) > 2 or system:
            raise LimaError(f"record {conv.id!r} is multi-turn or has a system message; Alpaca holds one exchange",
                            fix="convert to 'ours', 'lima' or 'sharegpt' instead")
        return {"instruction": body[0].content, "input": "", "output": body[1].content if len(body) > 1 else ""}
    raise LimaError(f"unknown output format {fmt!r}", fix="use ours, lima, alpaca or sharegpt")


def stats(convs: list[Conversation], tokenizer: Any = None) -> dict[str, Any]:
    """Counts by source, meta.domain, meta.kind and length; token lengths when a tokenizer is given."""
    def words(t: str) -> int:
        return len(t.split())

    answer_words = [sum(words(m.content) for m in c.messages if m.role == "assistant") for c in convs]
    user_turns = [sum(m.role == "user" for m in c.messages) for c in convs]
    buckets = Counter()
    for w in answer_words:
        if w == 0:
            buckets["no answer"] += 1
        elif w < 60:
            buckets["short (<60 words)"] += 1
        elif w <= 400:
            buckets["medium (60-400)"] += 1
        else:
            buckets["long (>400)"] += 1
    out: dict[str, Any] = {
        "records": len(convs),
        "by_source": dict(Counter(c.source or "(none)" for c in convs).most_common()),
        "by_domain": dict(Counter(str(c.meta.get("domain", "(none)")) for c in convs).most_common()),
        "by_kind": dict(Counter(str(c.meta.get("kind", "(none)")) for c in convs).most_common()),
        "by_length": dict(buckets.most_common()),
        "user_turns": dict(sorted(Counter(user_turns).items())),
    }
    if answer_words:
        out["answer_words"] = {"mean": round(statistics.mean(answer_words), 1),
                               "median": statistics.median(answer_words), "max": max(answer_words)}
    if tokenizer is not None and convs:
        lens = sorted(len(tokenizer("\n".join(m.content for m in c.messages))["input_ids"]) for c in convs)
        out["tokens"] = {"mean": round(statistics.mean(lens), 1), "median": statistics.median(lens),
                         "p95": lens[int(0.95 * (len(lens) - 1))], "max": lens[-1]}
    return out


def generation_record(c: Conversation, r: Reply, label: str, decoding: Decoding | dict[str, Any] | None, *,
                      meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """One answer as a generations-file record (fields: generate.py's docstring), for every writer: the
    transformers and vLLM backends, the in-context baseline and answers through an API.

    The record id is the model's last path part and the prompt id: labels of local models are folder paths,
    whose parent folders tell a reader nothing. decoding: the settings the answer was sampled with (a dict
    when they differ from a Decoding's, as through an API that ignores some).
    """
    rec: dict[str, Any] = {
        "id": f"{Path(label).name}:{c.id}", "prompt_id": c.id, "model": label,
        "messages": [m.to_dict() for m in c.messages], "output": r.text, "finish_reason": r.finish_reason,
        "tokens": {"prompt": r.prompt_tokens, "output": r.output_tokens}}
    if r.output_ids is not None:
        rec["output_ids"] = r.output_ids
    rec["decoding"] = asdict(decoding) if is_dataclass(decoding) else decoding
    rec["created"] = round(time.time(), 3)
    if meta is not None:
        rec["meta"] = meta
    return rec


def imported_record(prompt_id: str, model: str, messages: list[dict[str, str]], output: str, *, created: float,
                    meta: dict[str, Any]) -> dict[str, Any]:
    """An answer written by another tool (AlpacaEval, FastChat) as a generations-file record: the same fields
    as `generation_record`, with what the other tool did not record (finish reason, token counts, decoding)
    null rather than guessed."""
    return {"id": f"{model}:{prompt_id}", "prompt_id": prompt_id, "model": model, "messages": messages,
            "output": output, "finish_reason": None, "tokens": None, "decoding": None, "created": created,
            "meta": meta}


def read_generations(path: str | Path) -> list[dict[str, Any]]:
    """Read a generations file, checking each record has what later stages need."""
    out = []
    for n, r in read_jsonl(path):
        missing = [k for k in ("prompt_id", "model", "messages", "output") if k not in r]
        if missing:
            raise LimaError(f"generation record lacks {', '.join(missing)}", where=f"{path}:{n}",
                            fix="this file was not written by `lima-align generate`; regenerate or convert it")
        out.append(r)
    if not out:
        raise LimaError("holds no generation records", where=str(path),
                        fix=f"generate answers into it first: lima-align generate --output {path} ...")
    return out
