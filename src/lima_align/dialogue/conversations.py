"""`lima-align converse`: hold whole conversations with a model, scripted or against a simulated user.

Scripted: the user turns are fixed in advance and the model answers each in turn, seeing its own
earlier answers. Sources (`--script`):
  FILE             JSONL, one conversation a line: {"id", "turns": ["first user turn", ...]}, optional
                   "system" and "category"; a record with "messages" gives its user turns instead.
  mt_bench:PATH    MT-Bench's question.jsonl ({"question_id", "category", "turns"}), or its folder.
  dialogue_eval    our own packaged test set (data/dialogue_eval/*.jsonl).
Simulated: a user model (any OpenAI-compatible endpoint, or a local model via LocalChatClient)
plays the user from a short scenario ({"id", "scenario", "opening"?}; `dialogue_eval` names our
packaged scenarios) for N user turns. It sees the conversation from the user's side: its own turns
as "assistant", the model's answers as "user".

The model under test is local (Generator: conversations are batched turn by turn, so every batch
makes one generate call per turn) or any OpenAI-compatible API (ChatClient). Conversation record:

    {"id", "conversation_id", "model", "mode": "scripted" | "simulated", "messages": [...],
     "finish_reasons": [one per assistant turn], "decoding": {...}, "created",
     "meta": {"source", "category"?, "scenario"?, "user_model"?, "trimmed": [{"turn", "dropped_messages"}]}}

A conversation is written only when all its turns are done, so a killed run resumes cleanly: done
conversation ids are skipped and a half-done one starts over. When the history no longer fits the
local model's context, the oldest exchanges are dropped for that turn (generate.trim_history): the
record keeps the whole transcript and lists each trimmed turn in meta.trimmed, and the log says so.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import LimaError, Problem, ProblemList
from ..jsonl import JsonlAppender, done_keys, read_jsonl
from ..records import Message

DIALOGUE_EVAL_DIR = Path(__file__).parents[1] / "data" / "dialogue_eval"
MT_BENCH = "mt_bench:"
DIALOGUE_EVAL = "dialogue_eval"

# What the user model is told. Written for this project; the scenario is inserted as it is.
USER_SYSTEM = """You are role-playing a person who is chatting with an AI assistant. Stay in character.

Who you are and what you want:
{scenario}

Write only the person's next message to the assistant: no labels, no quotation marks, no notes about
the role-play. React to what the assistant just said, the way this person would: ask follow-up
questions, push back on mistakes, add details or change what you want. Keep it to a few sentences."""
USER_START = "(The chat is open. Write your first message to the assistant.)"
EMPTY_USER_TURN = "Please go on."


@dataclass
class Plan:
    """One conversation to hold."""

    id: str
    mode: str  # "scripted" | "simulated"
    turns: list[str]  # scripted: every user turn; simulated: the opening, if the scenario gives one
    n_turns: int  # user turns in all
    system: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Turn:
    text: str
    finish_reason: str
    dropped: int = 0  # messages trimmed from the history for this turn


# ----------------------------------------------------------------- inputs


def _script_files(spec: str) -> tuple[list[Path], str]:
    if spec == DIALOGUE_EVAL and not Path(spec).exists():
        files = sorted(DIALOGUE_EVAL_DIR.glob("*.jsonl"))
        if not files:
            raise LimaError("the packaged dialogue test set is missing", where=str(DIALOGUE_EVAL_DIR),
                            fix="reinstall lima-align")
        return files, "de"
    if spec.startswith(MT_BENCH) and not Path(spec).exists():
        p = Path(spec[len(MT_BENCH):])
        p = p / "question.jsonl" if p.is_dir() else p
        if not p.is_file():
            raise LimaError(f"MT-Bench questions not found: {p}", where=spec,
                            fix="point at MT-Bench's question.jsonl or the folder holding it")
        return [p], "mt_bench"
    p = Path(spec)
    if not p.is_file():
        raise LimaError("script file not found", where=spec,
                        fix=f"give a JSONL file of {{\"id\", \"turns\"}} records, {MT_BENCH}PATH or {DIALOGUE_EVAL}")
    return [p], ""


def load_scripts(spec: str) -> list[Plan]:
    """Scripted conversations from a file, MT-Bench, or the packaged set; every problem listed at once."""
    files, prefix = _script_files(spec)
    plans: list[Plan] = []
    problems = ProblemList()
    seen: set[str] = set()
    for path in files:
        for n, r in read_jsonl(path):
            where = f"{path}:{n}"
            raw_id = r.get("id", r.get("question_id"))
            if isinstance(r.get("messages"), list):
                msgs = [m for m in r["messages"] if isinstance(m, dict)]
                turns = [m.get("content") for m in msgs if m.get("role") == "user"]
                system = next((m.get("content") for m in msgs if m.get("role") == "system"), None)
            else:
                turns, system = r.get("turns"), r.get("system")
            if raw_id is None or isinstance(raw_id, (dict, list)):
                problems.add(f"{where} id", "missing", 'give each conversation an "id"')
                continue
            cid = f"{prefix}-{raw_id}" if prefix == "mt_bench" else str(raw_id)
            if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
                problems.add(f"{where} turns", "needs a non-empty list of non-empty user turns",
                             '"turns": ["first user turn", "second user turn", ...]')
                continue
            if cid in seen:
                problems.add(f"{where} id", f"{cid!r} appears twice", "give every conversation its own id")
            seen.add(cid)
            meta = {"source": spec, **({"category": r["category"]} if isinstance(r.get("category"), str) else {})}
            plans.append(Plan(cid, "scripted", list(turns), len(turns), system if isinstance(system, str) else None,
                              meta))
    problems.raise_if_any()
    if not plans:
        raise LimaError(f"no conversations in {spec}", fix="add at least one record")
    return plans


def load_scenarios(path: str | Path, n_turns: int) -> list[Plan]:
    """Simulated conversations: {"id", "scenario", "opening"?} per line, each held for n_turns user turns."""
    if n_turns < 1:
        raise LimaError(f"--turns must be at least 1, got {n_turns}", fix="e.g. --turns 3")
    if str(path) == DIALOGUE_EVAL and not Path(path).exists():
        path = DIALOGUE_EVAL_DIR / "scenarios" / "scenarios.jsonl"  # our packaged scenarios
    problems = ProblemList()
    plans: list[Plan] = []
    seen: set[str] = set()
    for n, r in read_jsonl(path):
        where = f"{path}:{n}"
        cid, scenario, opening = r.get("id"), r.get("scenario"), r.get("opening")
        if not isinstance(cid, (str, int)) or str(cid) in seen:
            problems.add(f"{where} id", "missing or repeated", "give every scenario its own id")
            continue
        if not isinstance(scenario, str) or not scenario.strip():
            problems.add(f"{where} scenario", "needs a short text: who the user is and what they want",
                         '"scenario": "A student preparing for a chemistry exam who ..."')
            continue
        if opening is not None and (not isinstance(opening, str) or not opening.strip()):
            problems.add(f"{where} opening", "must be the first user message as text", "or leave it out")
            continue
        seen.add(str(cid))
        plans.append(Plan(str(cid), "simulated", [opening] if opening else [], n_turns,
                          meta={"source": str(path), "scenario": scenario}))
    problems.raise_if_any()
    if not plans:
        raise LimaError(f"no scenarios in {path}", fix="add at least one record")
    return plans


# ----------------------------------------------------------------- the two sides


class LocalAssistant:
    """A local model through Generator; one generate call per turn for a whole batch of conversations."""

    def __init__(self, gen: Any, label: str, *, log: Any = print):
        self.gen, self.label, self.log = gen, label, log
        self.decoding = asdict(gen.dec)

    async def reply_many(self, histories: list[list[Message]], seed_key: str) -> list[Turn | Exception]:
        from ..generate import trim_history

        reserve = min(self.gen.dec.max_new_tokens, self.gen.context // 4)
        kept, dropped = [], []
        for h in histories:
            k, d = trim_history(self.gen, h, reserve=reserve)
            kept.append(k)
            dropped.append(d)
        replies = self.gen.generate(kept)  # each history seeds itself (decoding.prompt_seed)
        return [Turn(r.text, r.finish_reason, d) for r, d in zip(replies, dropped)]


class ApiAssistant:
    """A model behind an OpenAI-compatible endpoint (the endpoint fits the history into its context)."""

    def __init__(self, client: Any, decoding: Any, label: str):
        self.client, self.dec, self.label = client, decoding, label
        self.decoding = {**asdict(decoding), "repetition_penalty": None}  # not part of the OpenAI API

    async def reply_many(self, histories: list[list[Message]], seed_key: str) -> list[Turn | Exception]:
        import asyncio  # imported where used: `lima-align --help` imports this module, and needs no asyncio

        from ..api import FINISH

        async def one(h: list[Message]) -> Turn:
            r = await self.client.chat([m.to_dict() for m in h], max_tokens=self.dec.max_new_tokens,
                                       temperature=self.dec.temperature, top_p=self.dec.top_p, seed=self.dec.seed)
            return Turn(r.text.strip(), FINISH.get(r.finish_reason or "", r.finish_reason or "unknown"))

        return list(await asyncio.gather(*(one(h) for h in histories), return_exceptions=True))


class SimulatedUser:
    """A user model that writes the user's turns from a scenario."""

    def __init__(self, client: Any, *, max_tokens: int = 256, temperature: float = 0.7):
        self.client, self.max_tokens, self.temperature = client, max_tokens, temperature
        self.name = f"{client.model}@{client.base_url}"

    async def next_turn(self, scenario: str, messages: list[Message]) -> str:
        # The user model's own view: it wrote the user turns ("assistant"), it reads the replies ("user").
        view = [{"role": "system", "content": USER_SYSTEM.replace("{scenario}", scenario)},
                {"role": "user", "content": USER_START}]
        for m in messages:
            if m.role != "system":
                view.append({"role": "assistant" if m.role == "user" else "user", "content": m.content})
        r = await self.client.chat(view, max_tokens=self.max_tokens, temperature=self.temperature)
        text = r.text.strip()
        for label in ("User:", "user:", "Me:"):  # role labels and quotes the model may add around its turn
            text = text[len(label):].strip() if text.startswith(label) else text
        if len(text) >= 2 and text[0] == text[-1] == '"':
            text = text[1:-1].strip()
        return text or EMPTY_USER_TURN


class LocalChatClient:
    """A local model behind ChatClient's `chat` interface, so it can play the user (SimulatedUser)."""

    def __init__(self, gen: Any, name: str):
        self.gen, self.model, self.base_url = gen, name, "local"

    async def chat(self, messages: list[dict], *, max_tokens: int, temperature: float, top_p: float = 1.0,
                   seed: int | None = None) -> Any:
        from ..api import ChatResult
        from ..generate import trim_history

        history = [Message(m["role"], m["content"]) for m in messages]
        history, _ = trim_history(self.gen, history, reserve=min(max_tokens, self.gen.context // 4))
        r = self.gen.generate([history])[0]
        return ChatResult(r.text, r.prompt_tokens, r.output_tokens, "stop" if r.finish_reason == "eot" else "length")

    async def aclose(self) -> None:
        return None


# ----------------------------------------------------------------- holding conversations


def _record(plan: Plan, messages: list[Message], finishes: list[str], trimmed: list[dict[str, int]],
            assistant: Any, user: SimulatedUser | None) -> dict[str, Any]:
    meta = dict(plan.meta, trimmed=trimmed)
    if plan.mode == "simulated" and user is not None:
        meta["user_model"] = user.name
    return {"id": f"{Path(assistant.label).name}:{plan.id}", "conversation_id": plan.id, "model": assistant.label,
            "mode": plan.mode, "messages": [m.to_dict() for m in messages], "finish_reasons": finishes,
            "decoding": assistant.decoding, "created": round(time.time(), 3), "meta": meta}


async def _hold_batch(plans: list[Plan], assistant: Any, user: SimulatedUser | None,
                      log: Any, on_turns: Any = None) -> list[dict[str, Any] | Exception]:
    """Hold a batch of conversations in lockstep, turn by turn; a failed one is returned as its error.
    on_turns(n): called after each turn with the number of conversations the assistant was asked to answer."""
    import asyncio

    from ..api import ApiError

    msgs = [[Message("system", p.system)] if p.system else [] for p in plans]
    finishes: list[list[str]] = [[] for _ in plans]
    trimmed: list[list[dict[str, int]]] = [[] for _ in plans]
    failed: dict[int, Exception] = {}
    for t in range(max(p.n_turns for p in plans)):
        active = [i for i, p in enumerate(plans) if t < p.n_turns and i not in failed]
        if not active:
            break

        async def user_turn(i: int, t: int) -> str:
            p = plans[i]
            if t < len(p.turns):
                return p.turns[t]
            return await user.next_turn(p.meta["scenario"], msgs[i])  # type: ignore[union-attr]

        got = await asyncio.gather(*(user_turn(i, t) for i in active), return_exceptions=True)
        for i, u in zip(active, got):
            if isinstance(u, BaseException):
                failed[i] = _fatal(u, ApiError)
            else:
                msgs[i].append(Message("user", u))
        active = [i for i in active if i not in failed]
        if not active:
            continue
        replies = await assistant.reply_many([msgs[i] for i in active], seed_key=f"{plans[active[0]].id}#t{t + 1}")
        if on_turns is not None:
            on_turns(len(active))
        for i, r in zip(active, replies):
            if isinstance(r, BaseException):
                failed[i] = _fatal(r, ApiError)
                continue
            msgs[i].append(Message("assistant", r.text))
            finishes[i].append(r.finish_reason)
            if r.dropped:
                trimmed[i].append({"turn": t + 1, "dropped_messages": r.dropped})
                log(f"note: {plans[i].id} turn {t + 1}: the context is full, so the oldest {r.dropped} messages "
                    "were left out of what the model saw (recorded in meta.trimmed)")
    return [failed[i] if i in failed else _record(p, msgs[i], finishes[i], trimmed[i], assistant, user)
            for i, p in enumerate(plans)]


def _fatal(e: BaseException, api_error: type) -> Exception:
    """An ApiError for this conversation only is kept as its failure; anything else stops the run."""
    if isinstance(e, api_error) and not getattr(e, "affects_all", False):
        return e  # type: ignore[return-value]
    raise e


def converse(plans: list[Plan], assistant: Any, output: str | Path, *, user: SimulatedUser | None = None,
             batch_size: int = 8, progress: bool = True, log: Any = print) -> dict[str, int]:
    """Hold every planned conversation not yet in `output`, appending each when it is complete.

    Returns {"conversations": written now, "existing": already there, "failed": failed for good}."""
    import asyncio

    output = Path(output)
    if batch_size < 1:
        raise LimaError(f"batch size must be at least 1, got {batch_size}", fix="e.g. generate.batch_size=8")
    if any(p.mode == "simulated" for p in plans) and user is None:
        raise LimaError("simulated conversations need a user model", fix="give --user-api-base and --user-api-model")
    done = done_keys(output, lambda r: r.get("conversation_id"), model=assistant.label, what="conversations")
    todo = [p for p in plans if p.id not in done]
    summary = {"conversations": 0, "existing": len(plans) - len(todo), "failed": 0}
    if not todo:
        log(f"{output}: all {len(plans)} conversations already held")
        return summary
    bar = None
    if progress:
        from tqdm.auto import tqdm

        # Counted in assistant turns, not conversations: a batch of long conversations takes minutes on a CPU,
        # and a bar that moves once per batch looks stuck.
        bar = tqdm(total=sum(p.n_turns for p in plans), initial=sum(p.n_turns for p in plans if p.id in done),
                   desc=f"converse {Path(assistant.label).name}", unit="turn", dynamic_ncols=True)
    failures: list[Exception] = []

    async def main() -> None:
        try:
            with JsonlAppender(output) as w:
                for s in range(0, len(todo), batch_size):
                    batch = todo[s:s + batch_size]
                    bar_at = bar.n if bar is not None else 0
                    results = await _hold_batch(batch, assistant, user, log, bar.update if bar is not None else None)
                    w.write_many(r for r in results if isinstance(r, dict))
                    failures.extend(r for r in results if isinstance(r, Exception))
                    summary["conversations"] += sum(isinstance(r, dict) for r in results)
                    if bar is not None:  # turns a failed conversation never held
                        bar.update(sum(p.n_turns for p in batch) - (bar.n - bar_at))
        finally:
            for c in {id(x): x for x in (getattr(assistant, "client", None), getattr(user, "client", None))
                      if x is not None}.values():
                await c.aclose()
            if bar is not None:
                bar.close()

    asyncio.run(main())
    summary["failed"] = len(failures)
    if failures:
        raise LimaError(Problem(str(output), f"{len(failures)} of {len(todo)} conversations failed after retries and "
                                f"were not written; first: {failures[0]}",
                                "rerun the same command: finished conversations are kept"))
    return summary


def read_conversations_file(path: str | Path) -> list[dict[str, Any]]:
    """Conversation records written by `converse`, checked; every problem listed with file:line."""
    problems = ProblemList()
    out = []
    for n, r in read_jsonl(path):
        where = f"{path}:{n}"
        msgs = r.get("messages")
        if not isinstance(r.get("conversation_id"), str) or not isinstance(r.get("model"), str) \
                or not isinstance(msgs, list) or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                                                         and isinstance(m.get("content"), str) for m in msgs):
            problems.add(where, "not a conversation record (needs 'conversation_id', 'model' and 'messages')",
                         "pass a file written by `lima-align converse`")
            continue
        if not any(m["role"] == "assistant" for m in msgs):
            problems.add(f"{where} messages", "has no assistant turn", "hold the conversation again")
            continue
        out.append({**r, "_where": where})
    problems.raise_if_any()
    if not out:
        raise LimaError(f"no conversations in {path}", fix="check the file")
    return out
