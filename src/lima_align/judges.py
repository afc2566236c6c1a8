"""The judges: the `Judge` protocol every judge follows, the judges we ship, and what a judge returns.

- `ApiJudge(client)`: an LLM behind any OpenAI-compatible endpoint (`api.ChatClient`), temperature 0.
- `LongestJudge()`: the baseline that prefers the longer answer (characters; equal -> tie).

Running judges over many answers (order swap, cache, resumable output) is judge.py's; the kinds a user can
name are judge_kinds.py's. This module imports no asyncio, SQLite or HTTP client, so building the command
line parser (which lists the kinds and the --price flags) stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import LimaError
from .judge_text import REMINDERS, RETRY_MARK, Instructions, parse_score, parse_verdict, render_conversation


@dataclass
class Price:
    """US dollars per million tokens, to report what judging cost."""

    input_per_1m: float
    output_per_1m: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_1m + completion_tokens * self.output_per_1m) / 1e6


@dataclass
class Vote:
    """One pairwise judgment of the two answers in the order shown."""

    raw: str
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def label(self) -> str | None:  # 'A' (shown first), 'B' (shown second), 'tie', None
        return parse_verdict(self.raw)


@dataclass
class Rating:
    """One absolute judgment of one answer."""

    raw: str
    scale: str
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def score(self) -> str | int | None:
        return parse_score(self.raw, self.scale)


class Judge(Protocol):
    name: str
    price: Price | None
    can_rate: bool  # False: it only compares two answers (read with `can_rate(judge)`: a judge lacking it rates)

    async def judge_pair(self, prompt_messages: list[dict[str, str]], shown_a: str, shown_b: str,
                         instructions: Instructions) -> Vote: ...

    async def rate(self, prompt_messages: list[dict[str, str]], text: str, scale: str,
                   instructions: Instructions) -> Rating: ...


class ApiJudge:
    """An LLM judge through `api.ChatClient` (or any object with the same async `chat` method).

    Temperature 0. An answer without a verdict line is asked again once, in the same conversation,
    with a reminder; both answers are kept in the raw text.
    """

    can_rate = True

    def __init__(self, client: Any, *, name: str | None = None, price: Price | None = None,
                 max_tokens: int = 1024):
        self.client, self.price, self.max_tokens = client, price, max_tokens
        if name is None:
            model, base = getattr(client, "model", None), getattr(client, "base_url", None)
            if model is None or base is None:
                raise LimaError("cannot name the judge: the client has no `model` / `base_url` attribute",
                                fix="pass name='api:<model>@<base_url>' to ApiJudge")
            name = f"api:{model}@{str(base).rstrip('/')}"
        self.name = name

    async def _ask(self, text: str, parse: Callable[[str], Any], reminder: str) -> tuple[str, int, int]:
        messages = [{"role": "user", "content": text}]
        r = await self.client.chat(messages, max_tokens=self.max_tokens, temperature=0.0)
        raw, p, c = r.text or "", r.prompt_tokens or 0, r.completion_tokens or 0
        if parse(raw) is not None:
            return raw, p, c
        messages += [{"role": "assistant", "content": raw or "(no answer)"}, {"role": "user", "content": reminder}]
        r = await self.client.chat(messages, max_tokens=self.max_tokens, temperature=0.0)
        return raw + RETRY_MARK + (r.text or ""), p + (r.prompt_tokens or 0), c + (r.completion_tokens or 0)

    async def aclose(self) -> None:
        close = getattr(self.client, "aclose", None)
        if close is not None:
            await close()

    async def judge_pair(self, prompt_messages: list[dict[str, str]], shown_a: str, shown_b: str,
                         instructions: Instructions) -> Vote:
        text = instructions.fill({"prompt": render_conversation(prompt_messages),
                                  "response_a": shown_a, "response_b": shown_b})
        return Vote(*await self._ask(text, parse_verdict, REMINDERS["pairwise"]))

    async def rate(self, prompt_messages: list[dict[str, str]], text: str, scale: str,
                   instructions: Instructions) -> Rating:
        filled = instructions.fill({"prompt": render_conversation(prompt_messages), "response": text})
        raw, p, c = await self._ask(filled, lambda t: parse_score(t, scale), REMINDERS[scale])
        return Rating(raw, scale, p, c)


class LongestJudge:
    """Baseline: the longer answer (in characters) wins; exactly equal lengths tie. Pairwise only."""

    name = "longest"
    price = None
    can_rate = False  # length says nothing on an absolute scale

    async def judge_pair(self, prompt_messages: list[dict[str, str]], shown_a: str, shown_b: str,
                         instructions: Instructions) -> Vote:
        la, lb = len(shown_a), len(shown_b)
        label = "A" if la > lb else "B" if lb > la else "tie"
        return Vote(f"Response A has {la} characters, Response B has {lb}.\nVerdict: {label}")

    async def rate(self, prompt_messages: list[dict[str, str]], text: str, scale: str,
                   instructions: Instructions) -> Rating:
        raise LimaError("the 'longest' judge only compares two answers", fix="use an API judge for absolute ratings")


def can_rate(judge: Judge) -> bool:
    """Whether the judge can rate a single answer; a judge class written without `can_rate` can."""
    return bool(getattr(judge, "can_rate", True))
