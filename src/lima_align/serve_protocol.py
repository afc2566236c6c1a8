"""The OpenAI chat-completions protocol as `lima-align serve` speaks it: the request and what is
checked in it, the decoding settings a request may override, how stop strings cut the text shown
to the client, and OpenAI's error object (for every error, a 413 for oversized bodies included)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from fastapi import HTTPException
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import NotRequired, TypedDict
from starlette.types import ASGIApp, Message as AsgiMessage, Receive, Scope, Send

from .decoding import ROLE_STOP, Decoding
from .errors import ProblemList
from .records import Message, check_messages

FINISH = {"eot": "stop", "stop": "stop", "length": "length"}  # ours -> OpenAI's
SEED_MAX = 2 ** 63 - 1  # OpenAI's seed is a signed 64-bit integer; ours are non-negative


# ----------------------------------------------------------------- request


class ChatMessageIn(TypedDict):
    # A TypedDict, not a model: validating 40,000 turns as models took 1.2 s on the event loop,
    # as dicts 0.03 s. Other keys (name, ...) are dropped.
    role: str
    content: NotRequired[str | list[dict[str, Any]] | None]


class ChatRequest(BaseModel):
    # Clients send fields we have no use for (user, frequency_penalty, ...): accept and ignore them.
    model_config = ConfigDict(extra="allow")
    model: str = ""
    messages: list[ChatMessageIn]
    temperature: float | None = Field(None, ge=0, le=2, allow_inf_nan=False)
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = Field(None, ge=0, le=SEED_MAX)
    repetition_penalty: float | None = Field(None, gt=0, allow_inf_nan=False)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    n: int = 1
    tools: list[Any] | None = None
    logprobs: bool | None = None


def request_messages(req: ChatRequest) -> list[Message]:
    """The request's turns as our Messages; every problem is reported at once (LimaError)."""
    problems = ProblemList()
    if req.n != 1:
        problems.add("n", f"n={req.n} is not supported", "send n=1 (or omit it) and make several requests")
    if req.tools:
        problems.add("tools", "tool calling is not supported by this server", "omit tools")
    if req.logprobs:
        problems.add("logprobs", "logprobs are not supported by this server", "omit logprobs")
    messages = []
    for i, m in enumerate(req.messages):
        content = m.get("content")
        if isinstance(content, list):  # content parts: only text can reach a text-only model
            if any(p.get("type") != "text" or not isinstance(p.get("text"), str) for p in content):
                problems.add(f"messages[{i}].content", "only text content parts are supported",
                             'send a string, or parts like {"type": "text", "text": "..."}')
                continue
            content = "".join(p["text"] for p in content)
        if content is None:
            problems.add(f"messages[{i}].content", "missing content", "give every message a string 'content'")
            continue
        if (bad := lone_surrogate(content)) is not None:
            problems.add(f"messages[{i}].content", f"not valid Unicode text: a lone UTF-16 surrogate "
                         f"(U+{ord(content[bad]):04X}) at character {bad}",
                         "send UTF-8 text (a character beyond U+FFFF is one surrogate pair in JSON, never half of one)")
            continue
        # OpenAI's newer name for the system turn.
        messages.append(Message("system" if m["role"] == "developer" else m["role"], content))
    for i, stop in enumerate([req.stop] if isinstance(req.stop, str) else req.stop or []):
        if (bad := lone_surrogate(stop)) is not None:
            problems.add(f"stop[{i}]", f"not valid Unicode text: a lone UTF-16 surrogate at character {bad}",
                         "send UTF-8 text")
    if not problems:
        check_messages(messages, "", "prompt", problems)
    for p in problems.problems:
        p.where = p.where.strip()
    problems.raise_if_any()
    return messages


def lone_surrogate(text: str) -> int | None:
    """Where text has half a surrogate pair (JSON's \\ud800 escapes allow it; no tokenizer or UTF-8 does)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.start
    return None


def pick(value: Any, default: Any) -> Any:
    return default if value is None else value


def request_decoding(req: ChatRequest, base: Decoding) -> Decoding:
    """A fresh Decoding for this request: the server's defaults, overridden by what the request sets."""
    return replace(base, max_new_tokens=pick(req.max_completion_tokens, pick(req.max_tokens, base.max_new_tokens)),
                   temperature=pick(req.temperature, base.temperature), top_p=pick(req.top_p, base.top_p),
                   repetition_penalty=pick(req.repetition_penalty, base.repetition_penalty),
                   seed=pick(req.seed, base.seed))


# ----------------------------------------------------------------- text shown to the client


def _partial_stop(text: str, stop: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of stop (it may become a stop)."""
    for n in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0


def cut_at_stops(text: str, stops: list[str]) -> tuple[str, bool]:
    """Text before the earliest stop string, and whether one was found."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return (text[:min(hits)], True) if hits else (text, False)


def visible_so_far(raw: str, plain: bool, stops: list[str]) -> str:
    """The part of a growing generation that will certainly begin the final text.

    The final text (Generator.generate) is cut at a "\\nUser:" the model starts (plain format)
    and stripped; the request's stop strings then cut it again. Holding back trailing
    whitespace and anything that could be the start of a stop string keeps every streamed
    piece a prefix of the non-streamed answer.
    """
    text = "\n" + raw if plain else raw
    if plain and ROLE_STOP in text:
        text = text.split(ROLE_STOP)[0]
    elif plain:
        text = text[:len(text) - _partial_stop(text, ROLE_STOP)]
    text = text.strip()
    end = len(text)
    for s in stops:
        if s:
            i = text.find(s)
            end = min(end, i if i >= 0 else len(text) - _partial_stop(text, s))
    return text[:end]


# ----------------------------------------------------------------- errors


def error_response(status: int, message: str, *, param: str | None = None, code: str | None = None,
                   kind: str = "invalid_request_error") -> Response:
    # ASCII JSON: a message may quote the request's own text, lone surrogates included.
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return Response(json.dumps(body), status, media_type="application/json")


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets a 413 before the app parses any of it."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    def _too_large(self) -> str:
        return (f"the request body is over {self.limit:,} bytes (serve --max-body-mib); fix: send a shorter "
                "conversation (the server keeps only the newest turns that fit the context anyway)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await error_response(413, self._too_large(), code="request_too_large")(scope, receive, send)
        seen = 0

        async def counted() -> AsgiMessage:  # a body sent in chunks, without a length up front
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, self._too_large())
            return message

        await self.app(scope, counted, send)
