"""`lima-align judge`: compare two models' answers pairwise, or rate one model's answers, with judges.

A judge is any object with a `name`, a `price` (a `Price` or None), `can_rate` (whether it can rate a
single answer) and two async methods:

    async def judge_pair(prompt_messages, shown_a, shown_b, instructions) -> Vote
    async def rate(prompt_messages, text, scale, instructions) -> Rating

and, optionally, `async def aclose()` (called when a run ends, to close connections).
`shown_a` / `shown_b` are the two answers in the order the judge sees them ("Response A" is the
one shown first). The judge answers in those terms; `judge_pairwise` shows every pair in both
orders and maps each verdict back to the ORIGINAL model_a / model_b in one place (`show` /
`unswap`), so no judge can get the swap wrong. A judge's whole answer is its text: `Vote.label`
and `Rating.score` are parsed from that text, which is why a cached text reproduces a verdict
exactly. The instructions are passed with every call so the hash stored in each record is the
hash of the text the judge was actually given, and several judges can share one file.

Judges here:
- `ApiJudge(client)`: an LLM behind any OpenAI-compatible endpoint (`api.ChatClient`), temperature
  0. A local model is the same judge pointed at `lima-align serve`:
  `ApiJudge(ChatClient("http://127.0.0.1:8000/v1", "my-model"))`.
- `LongestJudge()`: the baseline that prefers the longer answer (characters; equal -> tie).
Several judges at once are a list; each writes its own records (the judge's name is in the id).

The `Judge` protocol, these judges and `Price` are in judges.py (light to import: the command line lists
the judge kinds without loading asyncio or SQLite).

Instruction files, reading a verdict out of a judge's answer, and the order swap are in judge_text.py.

Every judge answer is cached in SQLite (WAL, so parallel runs can share it) under the sha256 of
(judge name, instructions sha256, order, prompt messages, answer shown first, answer shown
second); a rerun, or a run writing another output file, makes no request for an answer it has
already seen. Delete the cache file to ask again. Records are appended as each pair finishes;
records whose id is already in the output are skipped, so an interrupted run resumes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import LimaError, Problem, ProblemList
from .jsonl import JsonlAppender, done_keys
from .judge_cache import JudgeCache, default_cache_path, digest
from .judge_text import RETRY_MARK, combine, load_instructions, parse_score, parse_verdict, show, unswap
from .judges import Judge, Rating, Vote, can_rate
from .verdicts import ORDERS, SCALES


# ----------------------------------------------------------------- running


@dataclass
class _Tally:
    """What a run did, for the progress bar and the returned summary."""

    calls: int = 0
    cached: int = 0
    retried: int = 0
    unparseable: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    priced: bool = False
    bar: Any = None

    def made(self, judge: Judge, raw: str, p: int, c: int) -> None:
        """A judge answered just now."""
        self.calls += 1
        self.retried += RETRY_MARK in raw
        self.prompt_tokens += p
        self.completion_tokens += c
        if judge.price is not None:
            self.priced = True
            self.cost_usd += judge.price.cost(p, c)
        self._tick()

    def reused(self) -> None:
        """An answer came from the cache."""
        self.cached += 1
        self._tick()

    def _tick(self) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(made=self.calls, cached=self.cached, refresh=False)

    def summary(self, **head: Any) -> dict[str, Any]:
        return {**head, "calls": self.calls, "cached": self.cached, "unparseable": self.unparseable,
                "retried": self.retried,
                "tokens": {"prompt": self.prompt_tokens, "completion": self.completion_tokens},
                "cost_usd": round(self.cost_usd, 6) if self.priced else None}


async def _cached_call(cache: JudgeCache, key: str, judge: Judge, sem: asyncio.Semaphore, tally: _Tally,
                       call: Callable[[], Awaitable[Vote | Rating]]) -> tuple[str, int, int]:
    hit = cache.get(key)
    if hit is not None:
        tally.reused()
        return hit
    async with sem:
        answer = await call()
    got = (answer.raw, answer.prompt_tokens, answer.completion_tokens)
    cache.put(key, judge.name, *got)
    tally.made(judge, *got)
    return got


async def _run_all(coros: list[Awaitable[dict[str, Any]]], judges: list[Judge], output: Path, cache: JudgeCache,
                   tally: _Tally) -> None:
    """Run every judgment concurrently, appending each record as it finishes. A request that failed
    for good (api.ApiError) loses only its own judgment: the rest go on, and at the end one error says
    how many to rerun. Any other error, or an ApiError that every request would hit (bad key, wrong
    model), cancels the rest at once. Records already written stay, so a rerun resumes."""
    from .api import ApiError, run_all

    try:
        with JsonlAppender(output) as writer:
            results = await run_all(coros, None, on_done=lambda _, r: writer.write(r) if isinstance(r, dict) else None)
    finally:
        for j in judges:  # HTTP connections belong to this event loop: close them with it
            close = getattr(j, "aclose", None)
            if close is not None:
                await close()
        cache.close()
        if tally.bar is not None:
            tally.bar.close()
    failures = [r for r in results if isinstance(r, ApiError)]
    if failures:
        raise LimaError(Problem(str(output), f"{len(failures)} of {len(results)} judgments failed after retries and "
                                f"were not written; first: {failures[0]}",
                                "rerun the same command: written judgments are kept and cached answers reused"))


def _usage(judge: Judge, p: int, c: int) -> dict[str, Any]:
    cost = judge.price.cost(p, c) if judge.price is not None else None
    return {"prompt_tokens": p, "completion_tokens": c, "cost_usd": None if cost is None else round(cost, 6)}


def _check_judges(judges: list[Judge]) -> None:
    if not judges:
        raise LimaError("no judge given", fix="name at least one judge (an API judge or 'longest')")
    names = [j.name for j in judges]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise LimaError(f"the same judge is named twice: {', '.join(twice)}",
                        fix="give each judge once (records of one judge are identified by its name)")


def _check_generations(gens: list[dict[str, Any]], source: str, problems: ProblemList) -> None:
    for i, g in enumerate(gens):
        if not isinstance(g.get("prompt_id"), str) or not isinstance(g.get("output"), str) \
                or not isinstance(g.get("model"), str) or not isinstance(g.get("messages"), list):
            problems.add(f"{source} record {i + 1}", "needs string 'prompt_id', 'model', 'output' and a "
                         "'messages' list", "use a generations file written by `lima-align generate`")


def _id_list(ids: list[str], limit: int = 20) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f" ... and {len(ids) - limit} more" if len(ids) > limit else "")


def _by_prompt_id(gens: list[dict[str, Any]], source: str, problems: ProblemList) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    dup = []
    for g in gens:
        if g["prompt_id"] in out:
            dup.append(g["prompt_id"])
        out[g["prompt_id"]] = g
    if dup:
        problems.add(source, f"{len(dup)} prompt id(s) answered more than once: {_id_list(dup)}",
                     "keep one answer per prompt (one model per generations file)")
    return out


def _user_turns(messages: list[dict[str, Any]]) -> list[Any]:
    return [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") != "system"]


def match_pairs(gens_a: list[dict[str, Any]], gens_b: list[dict[str, Any]], *, allow_partial: bool = False,
                sources: tuple[str, str] = ("A", "B")) -> tuple[list[tuple[dict[str, Any], dict[str, Any]]], int]:
    """Pair the two sides' answers by prompt_id, in A's order; returns (pairs, prompt ids skipped).

    Prompt ids present on one side only are an error listing them, unless allow_partial, which
    judges the intersection. Answers to different prompt texts under one id are always an error.
    """
    problems = ProblemList()
    _check_generations(gens_a, sources[0], problems)
    _check_generations(gens_b, sources[1], problems)
    problems.raise_if_any()
    a, b = _by_prompt_id(gens_a, sources[0], problems), _by_prompt_id(gens_b, sources[1], problems)
    only_a = [p for p in a if p not in b]
    only_b = [p for p in b if p not in a]
    if not allow_partial:
        if only_a:
            problems.add(sources[1], f"lacks {len(only_a)} prompt id(s) that {sources[0]} answers: {_id_list(only_a)}",
                         "generate the missing answers, or judge only the shared prompts (allow_partial / --partial)")
        if only_b:
            problems.add(sources[0], f"lacks {len(only_b)} prompt id(s) that {sources[1]} answers: {_id_list(only_b)}",
                         "generate the missing answers, or judge only the shared prompts (allow_partial / --partial)")
    differ = [p for p in a if p in b and _user_turns(a[p]["messages"]) != _user_turns(b[p]["messages"])]
    if differ:
        problems.add(f"{sources[0]} vs {sources[1]}", f"{len(differ)} prompt id(s) hold different prompts on the "
                     f"two sides: {_id_list(differ)}", "generate both files from the same prompts file")
    if not a or not b:
        problems.add(f"{sources[0]} vs {sources[1]}", "nothing to judge: a side has no answers", "check the inputs")
    problems.raise_if_any()
    pairs = [(a[p], b[p]) for p in a if p in b]
    if not pairs:
        raise LimaError(f"{sources[0]} and {sources[1]} share no prompt id", fix="judge answers to the same prompts")
    return pairs, len(only_a) + len(only_b)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="call", dynamic_ncols=True)


def judge_pairwise(gens_a: list[dict[str, Any]], gens_b: list[dict[str, Any]], judges: list[Judge],
                   output: str | Path, *, instructions_path: str | Path | None = None,
                   cache_path: str | Path | None = None, max_concurrency: int = 8, allow_partial: bool = False,
                   sources: tuple[str, str] = ("A", "B"), progress: bool = True, log: Any = print) -> dict[str, Any]:
    """Judge every shared prompt's two answers with every judge, in both orders; append records to output.

    Everything is checked (prompt ids on both sides, judges, instructions) before any request.
    `sources` names the two sides in messages (the CLI passes the file paths). Returns a summary:
    pairs (records written now), existing (already in output), skipped (unmatched prompt ids),
    calls (judge calls made now), cached (answers taken from the cache), unparseable (null votes in the
    records written now), retried (calls that needed the reminder), tokens and cost_usd of the calls
    made now (cost None unless a judge has a price). Records carry each judgment's own tokens and cost,
    cached or not, so a rerun writes identical records.
    """
    return asyncio.run(_judge_pairwise(
        gens_a, gens_b, judges, Path(output), instructions_path=instructions_path, cache_path=cache_path,
        max_concurrency=max_concurrency, allow_partial=allow_partial, sources=sources, progress=progress, log=log))


async def _judge_pairwise(gens_a: list[dict[str, Any]], gens_b: list[dict[str, Any]], judges: list[Judge],
                          output: Path, *, instructions_path: str | Path | None, cache_path: str | Path | None,
                          max_concurrency: int, allow_partial: bool, sources: tuple[str, str], progress: bool,
                          log: Any) -> dict[str, Any]:
    _check_judges(judges)
    if max_concurrency < 1:
        raise LimaError(f"max_concurrency must be at least 1, got {max_concurrency}", fix="use 1 or more")
    instructions = load_instructions(instructions_path, "pairwise")
    pairs, skipped = match_pairs(gens_a, gens_b, allow_partial=allow_partial, sources=sources)
    if skipped:
        log(f"judging the {len(pairs)} prompt ids both sides answer; {skipped} prompt id(s) on one side only skipped")
    done = done_keys(output, lambda r: r.get("id"))
    units = []
    for ga, gb in pairs:
        for j in judges:
            rid = digest(["pairwise", j.name, instructions.sha256, ga["prompt_id"], ga["model"], gb["model"],
                          ga["output"], gb["output"]])
            if rid not in done:
                units.append((rid, ga, gb, j))
    tally = _Tally()
    head = {"pairs": len(units), "existing": len(pairs) * len(judges) - len(units), "skipped": skipped}
    if not units:
        log(f"{output}: all {head['existing']} judgments already there")
        return tally.summary(**head)
    cache = JudgeCache(cache_path if cache_path is not None else default_cache_path())
    sem = asyncio.Semaphore(max_concurrency)
    tally.bar = _progress(2 * len(units), "judge pairwise", progress)

    async def vote(ga: dict[str, Any], gb: dict[str, Any], judge: Judge, order: str) -> dict[str, Any]:
        first, second = show(ga["output"], gb["output"], order)
        key = digest(["pairwise", judge.name, instructions.sha256, order, ga["messages"], first, second])
        raw, p, c = await _cached_call(cache, key, judge, sem, tally,
                                       lambda: judge.judge_pair(ga["messages"], first, second, instructions))
        return {"order": order, "raw": raw, "verdict": unswap(parse_verdict(raw), order), "_tokens": (p, c)}

    async def one(rid: str, ga: dict[str, Any], gb: dict[str, Any], judge: Judge) -> dict[str, Any]:
        votes = list(await asyncio.gather(*(vote(ga, gb, judge, o) for o in ORDERS)))
        p = sum(v["_tokens"][0] for v in votes)
        c = sum(v["_tokens"][1] for v in votes)
        for v in votes:
            del v["_tokens"]
            tally.unparseable += v["verdict"] is None
        verdict, consistent = combine(votes[0]["verdict"], votes[1]["verdict"])
        return {"id": rid, "type": "pairwise", "prompt_id": ga["prompt_id"], "prompt": ga["messages"],
                      "model_a": ga["model"], "model_b": gb["model"], "output_a": ga["output"],
                      "output_b": gb["output"], "judge": judge.name, "instructions": instructions.record(),
                      "votes": votes, "verdict": verdict, "consistent": consistent,
                      "usage": _usage(judge, p, c), "created": round(time.time(), 3)}

    await _run_all([one(*u) for u in units], judges, output, cache, tally)
    return tally.summary(**head)


def judge_absolute(gens: list[dict[str, Any]], judges: list[Judge], output: str | Path, *, scale: str,
                   instructions_path: str | Path | None = None, cache_path: str | Path | None = None,
                   max_concurrency: int = 8, progress: bool = True, log: Any = print) -> dict[str, Any]:
    """Rate every answer in gens on `scale` with every judge; append records to output.

    Returns the same summary as judge_pairwise, with `ratings` (written now) in place of pairs and
    no `skipped`.
    """
    return asyncio.run(_judge_absolute(gens, judges, Path(output), scale=scale, instructions_path=instructions_path,
                                       cache_path=cache_path, max_concurrency=max_concurrency, progress=progress,
                                       log=log))


async def _judge_absolute(gens: list[dict[str, Any]], judges: list[Judge], output: Path, *, scale: str,
                          instructions_path: str | Path | None, cache_path: str | Path | None,
                          max_concurrency: int, progress: bool, log: Any) -> dict[str, Any]:
    if scale not in SCALES:
        raise LimaError(f"unknown scale {scale!r}", fix=f"use one of {', '.join(SCALES)}")
    _check_judges(judges)
    cannot = [j.name for j in judges if not can_rate(j)]
    if cannot:
        raise LimaError(f"judge(s) {', '.join(cannot)} cannot rate single answers",
                        fix="use them for pairwise judging; rate with an API judge")
    if max_concurrency < 1:
        raise LimaError(f"max_concurrency must be at least 1, got {max_concurrency}", fix="use 1 or more")
    instructions = load_instructions(instructions_path, scale)
    problems = ProblemList()
    _check_generations(gens, "generations", problems)
    problems.raise_if_any()
    seen: set[tuple[str, str]] = set()
    dup = []
    for g in gens:
        if (g["model"], g["prompt_id"]) in seen:
            dup.append(f"{g['model']}:{g['prompt_id']}")
        seen.add((g["model"], g["prompt_id"]))
    if dup:
        raise LimaError(Problem("generations", f"{len(dup)} answer(s) appear more than once: {_id_list(dup)}",
                                "keep one answer per model and prompt id"))
    if not gens:
        raise LimaError("nothing to rate: no generations", fix="check the input file")
    done = done_keys(output, lambda r: r.get("id"))
    units = []
    for g in gens:
        for j in judges:
            rid = digest(["absolute", j.name, instructions.sha256, scale, g["prompt_id"], g["model"], g["output"]])
            if rid not in done:
                units.append((rid, g, j))
    tally = _Tally()
    head = {"ratings": len(units), "existing": len(gens) * len(judges) - len(units)}
    if not units:
        log(f"{output}: all {head['existing']} ratings already there")
        return tally.summary(**head)
    cache = JudgeCache(cache_path if cache_path is not None else default_cache_path())
    sem = asyncio.Semaphore(max_concurrency)
    tally.bar = _progress(len(units), f"judge {scale}", progress)

    async def one(rid: str, g: dict[str, Any], judge: Judge) -> dict[str, Any]:
        key = digest(["absolute", judge.name, instructions.sha256, scale, g["messages"], g["output"], ""])
        raw, p, c = await _cached_call(cache, key, judge, sem, tally,
                                       lambda: judge.rate(g["messages"], g["output"], scale, instructions))
        score = parse_score(raw, scale)
        tally.unparseable += score is None
        return {"id": rid, "type": "absolute", "prompt_id": g["prompt_id"], "prompt": g["messages"],
                      "model": g["model"], "output": g["output"], "judge": judge.name,
                      "instructions": instructions.record(), "scale": scale, "raw": raw, "score": score,
                      "usage": _usage(judge, p, c), "created": round(time.time(), 3)}

    await _run_all([one(*u) for u in units], judges, output, cache, tally)
    return tally.summary(**head)
