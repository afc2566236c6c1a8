"""`lima-align serve`: an OpenAI-compatible HTTP server for one model lima-align can load.

Endpoints: GET /v1/models, POST /v1/chat/completions (plain JSON or server-sent events with
`stream: true`), GET /health. Prompts are encoded in the model's turn format and decoded with
LIMA's settings, exactly as `lima-align generate` does; a request's temperature, top_p,
max_tokens (or max_completion_tokens), seed and repetition_penalty override them for that
request only. Without a seed the configured one (generate.seed) is used, so the same request
gets the same answer, as in `generate`; send a different seed for a different sample.

Choices made here:
* The request's `model` field is not checked: this server holds one model, and any name gets
  it (as llama.cpp and other local servers do); the response's `model` says which one it was.
* One model, one lock: generations run one at a time (torch's RNG is global, and a CPU has no
  spare cores for a second one); later requests wait their turn.
* A conversation too long for the context loses its oldest exchanges, as in `chat`; the
  response says so in the header `x-lima-trimmed-turns: N` and the log line.
* `stop` strings are honoured by cutting the text (generation itself runs to its own end);
  n > 1, tools and logprobs are refused with a 400 rather than ignored.
* A streaming client that disconnects stops its generation at the next token.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from transformers import TextIteratorStreamer

from .config import GenerateConfig, ModelConfig, TurnsConfig
from .errors import LimaError, ProblemList
from .decoding import Decoding
from .generate import ROLE_STOP, Generator, Reply, load_for_generation, trim_history
from .records import Message, check_messages

log = logging.getLogger("lima_align.serve")

FINISH = {"eot": "stop", "stop": "stop", "length": "length"}  # ours -> OpenAI's
TRIMMED_HEADER = "x-lima-trimmed-turns"


# ----------------------------------------------------------------- request


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    # Clients send fields we have no use for (user, frequency_penalty, ...): accept and ignore them.
    model_config = ConfigDict(extra="allow")
    model: str = ""
    messages: list[ChatMessageIn]
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    repetition_penalty: float | None = Field(None, gt=0)
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
        content = m.content
        if isinstance(content, list):  # content parts: only text can reach a text-only model
            if any(p.get("type") != "text" or not isinstance(p.get("text"), str) for p in content):
                problems.add(f"messages[{i}].content", "only text content parts are supported",
                             'send a string, or parts like {"type": "text", "text": "..."}')
                continue
            content = "".join(p["text"] for p in content)
        if content is None:
            problems.add(f"messages[{i}].content", "missing content", "give every message a string 'content'")
            continue
        # OpenAI's newer name for the system turn.
        messages.append(Message("system" if m.role == "developer" else m.role, content))
    if not problems:
        check_messages(messages, "", "prompt", problems)
    for p in problems.problems:
        p.where = p.where.strip()
    problems.raise_if_any()
    return messages


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


# ----------------------------------------------------------------- the app


@dataclass
class Job:
    id: str
    messages: list[Message]
    decoding: Decoding
    stops: list[str]
    trimmed: int
    prompt_tokens: int
    started: float


class _ClientGone(Exception):
    pass


class _Streamer(TextIteratorStreamer):
    """A TextIteratorStreamer that ends the generation at its next token once the client has gone."""

    cancelled = False

    def put(self, value: Any) -> None:
        if self.cancelled:
            raise _ClientGone()
        super().put(value)


def _error(status: int, message: str, *, param: str | None = None, code: str | None = None,
           kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)


class Server:
    """The state behind the app: one generator, one lock."""

    def __init__(self, generator: Generator, model_name: str):
        self.gen, self.name = generator, model_name
        self.lock = threading.Lock()  # held by the thread that runs the model (see module doc)
        self.created = int(time.time())

    def generator_for(self, decoding: Decoding) -> Generator:
        # A shallow copy shares the model and tokenizer but not the decoding settings, so a
        # request never changes what another one (or the server's defaults) uses.
        g = copy.copy(self.gen)
        g.dec = decoding
        return g

    def prepare(self, req: ChatRequest) -> Job:
        """Validate, pick the decoding and fit the prompt into the context (under the lock: the tokenizer is shared)."""
        messages = request_messages(req)
        dec = request_decoding(req, self.gen.dec)
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        with self.lock:
            kept, dropped = trim_history(self.gen, messages, reserve=min(dec.max_new_tokens, self.gen.context // 4))
            n = len(self.gen.prompt_ids(kept))
        if n >= self.gen.context:
            raise _ContextFull(n, dropped, self.gen.context)
        return Job(f"chatcmpl-{uuid.uuid4().hex}", kept, dec, stops, dropped, n, time.perf_counter())

    def run(self, job: Job, streamer: Any = None) -> Reply:
        with self.lock:
            return self.generator_for(job.decoding).generate([job.messages], streamer=streamer)[0]

    def finish(self, job: Job, reply: Reply, stream: bool) -> tuple[str, str]:
        text, stopped = cut_at_stops(reply.text, job.stops)
        finish = "stop" if stopped else FINISH[reply.finish_reason]
        log.info("%s %s: %d messages%s, %d prompt + %d completion tokens, finish %s, %.2fs", job.id,
                 "stream" if stream else "json", len(job.messages),
                 f" ({job.trimmed} oldest turns trimmed)" if job.trimmed else "", reply.prompt_tokens,
                 reply.output_tokens, finish, time.perf_counter() - job.started)
        return text, finish

    def usage(self, reply: Reply) -> dict[str, int]:
        return {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.output_tokens,
                "total_tokens": reply.prompt_tokens + reply.output_tokens}

    def chunk(self, job: Job, delta: dict[str, Any], finish: str | None = None) -> str:
        body = {"id": job.id, "object": "chat.completion.chunk", "created": int(time.time()), "model": self.name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(body)}\n\n"

    async def stream(self, job: Job, include_usage: bool) -> AsyncIterator[str]:
        streamer = _Streamer(self.gen.tok, skip_prompt=True, skip_special_tokens=True)
        result: dict[str, Any] = {}
        worker = threading.Thread(target=self._stream_worker, args=(job, streamer, result), daemon=True,
                                  name=f"lima-serve-{job.id}")
        worker.start()
        plain = self.gen.fmt.kind == "plain"
        raw = sent = ""
        try:
            yield self.chunk(job, {"role": "assistant", "content": ""})
            while (piece := await anyio.to_thread.run_sync(next, streamer, None)) is not None:
                raw += piece
                shown = visible_so_far(raw, plain, job.stops)
                if len(shown) > len(sent):
                    yield self.chunk(job, {"content": shown[len(sent):]})
                    sent = shown
            await anyio.to_thread.run_sync(worker.join)
            if "reply" not in result:
                err = {"message": f"generation failed: {result.get('error')}", "type": "server_error",
                       "param": None, "code": None}
                yield f"data: {json.dumps({'error': err})}\n\n"
                return
            reply = result["reply"]
            text, finish = self.finish(job, reply, stream=True)
            if text.startswith(sent):
                if len(text) > len(sent):
                    yield self.chunk(job, {"content": text[len(sent):]})
            else:  # a decoding quirk made the streamed text diverge; the client already has it
                log.warning("%s: streamed text is not a prefix of the final text", job.id)
            yield self.chunk(job, {}, finish)
            if include_usage:
                body = {"id": job.id, "object": "chat.completion.chunk", "created": int(time.time()),
                        "model": self.name, "choices": [], "usage": self.usage(reply)}
                yield f"data: {json.dumps(body)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            streamer.cancelled = True  # a no-op when generation is over; otherwise the client has gone

    def _stream_worker(self, job: Job, streamer: _Streamer, result: dict[str, Any]) -> None:
        try:
            result["reply"] = self.run(job, streamer)
        except _ClientGone:
            log.info("%s: client disconnected; generation stopped", job.id)
            result["error"] = "client disconnected"
        except Exception as e:  # reported to the client in the stream, and here with its traceback
            log.exception("%s: generation failed", job.id)
            result["error"] = f"{type(e).__name__}: {e}"
        if "reply" not in result:
            streamer.text_queue.put(streamer.stop_signal)  # unblock the reader


class _ContextFull(Exception):
    def __init__(self, tokens: int, dropped: int, context: int):
        self.tokens, self.dropped, self.context = tokens, dropped, context


def create_app(generator: Generator, model_name: str) -> FastAPI:
    """The OpenAI-compatible app for one loaded model (see the module doc for its behaviour)."""
    server = Server(generator, model_name)
    app = FastAPI(title=f"lima-align serve: {model_name}")
    app.state.server = server

    @app.exception_handler(LimaError)
    async def _bad_request(request: Request, exc: LimaError) -> JSONResponse:
        return _error(400, str(exc), param=exc.problems[0].where or None, code="invalid_value")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        def where(loc: tuple[Any, ...]) -> str:
            out = ""
            for part in loc[1:] if loc and loc[0] == "body" else loc:
                out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
            return out or "body"

        errs = exc.errors()
        lines = [f"{where(tuple(e.get('loc', ())))}: {e.get('msg', 'invalid')}" for e in errs]
        message = "; ".join(lines) + ("; fix: send a JSON body like {\"model\": \"...\", \"messages\": "
                                      "[{\"role\": \"user\", \"content\": \"...\"}]}")
        return _error(400, message, param=where(tuple(errs[0].get("loc", ()))) if errs else None,
                      code="invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}",
                      code="not_found" if exc.status_code == 404 else None)

    @app.exception_handler(_ContextFull)
    async def _too_long(request: Request, exc: _ContextFull) -> JSONResponse:
        return _error(400, f"the prompt is {exc.tokens} tokens (after dropping {exc.dropped} older turns) but the "
                      f"model's context is {exc.context} tokens; fix: shorten the last user message "
                      "(or the system message)", param="messages", code="context_length_exceeded")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": server.name, "busy": server.lock.locked()}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": server.name, "object": "model", "created": server.created,
                                            "owned_by": "lima-align"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest) -> Any:
        job = await run_in_threadpool(server.prepare, req)
        headers = {TRIMMED_HEADER: str(job.trimmed)} if job.trimmed else {}
        if req.stream:
            include_usage = bool((req.stream_options or {}).get("include_usage"))
            return StreamingResponse(server.stream(job, include_usage), media_type="text/event-stream",
                                     headers={**headers, "cache-control": "no-cache"})
        reply = await run_in_threadpool(server.run, job)
        text, finish = server.finish(job, reply, stream=False)
        body = {"id": job.id, "object": "chat.completion", "created": int(time.time()), "model": server.name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": finish, "logprobs": None}],
                "usage": server.usage(reply)}
        return JSONResponse(body, headers=headers)

    return app


def serve(model_cfg: ModelConfig, turns_cfg: TurnsConfig, gen_cfg: GenerateConfig, host: str = "127.0.0.1",
          port: int = 8000) -> None:
    """Load the model and serve it until interrupted (Ctrl-C)."""
    import uvicorn

    if not log.handlers and not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    if gen_cfg.backend == "vllm":  # answers arrive whole (a stream sends them as one piece)
        from .vllm_backend import load_generator

        gen, _ = load_generator(model_cfg, turns_cfg, gen_cfg)
        fmt = gen.fmt
    else:
        lm, fmt = load_for_generation(model_cfg, turns_cfg)
        gen = Generator(lm, fmt, Decoding.from_config(gen_cfg), cache=gen_cfg.cache)
    name = gen_cfg.model_label or model_cfg.name
    log.info("serving %s (%s) at http://%s:%d/v1", name, fmt.describe(), host, port)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: there is no authentication, anyone who can reach this port can use the model",
                    host)
    uvicorn.run(create_app(gen, name), host=host, port=port, log_level="info")
