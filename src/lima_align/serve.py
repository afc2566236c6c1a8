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
  spare cores for a second one); later requests wait their turn, first come first served.
  Everything else (parsing, checking, trimming, tokenising the prompt) happens before that
  wait, outside the lock, so one huge request cannot hold up the others for longer than its
  own generation.
* A conversation too long for the context loses its oldest exchanges, as in `chat`; the
  response says so in the header `x-lima-trimmed-turns: N` and the log line.
* `stop` strings are honoured by cutting the text (generation itself runs to its own end);
  n > 1, tools and logprobs are refused with a 400 rather than ignored.
* A client that disconnects gives up its place in the queue, and stops its generation at the
  next token if it had started (streamed or not).
* Request bodies over --max-body-mib (8 MiB) get a 413. Every error, including unexpected
  ones, is OpenAI's JSON error object, so clients show the message instead of retrying blind.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from transformers import TextIteratorStreamer

from .config import GenerateConfig, ModelConfig, TurnsConfig
from .decoding import Decoding
from .errors import LimaError
from .generate import Generator, Reply, load_for_generation, trim_history
from .records import Message
from .serve_protocol import (FINISH, BodyLimit, ChatRequest, cut_at_stops, error_response, request_decoding,
                             request_messages, visible_so_far)

log = logging.getLogger("lima_align.serve")

TRIMMED_HEADER = "x-lima-trimmed-turns"
MAX_BODY_MIB = 8  # a 1.5 MB conversation of 40,000 turns is legitimate; 10 MB of prompt is not
DISCONNECT_POLL_S = 0.1  # how often a waiting or generating request checks its client is still there


# ----------------------------------------------------------------- the app


@dataclass
class Job:
    id: str
    messages: list[Message]
    ids: list[int]  # the prompt, tokenised before the request waits for the model
    decoding: Decoding
    stops: list[str]
    trimmed: int
    started: float


class _ClientGone(Exception):
    pass


class _Stopper:
    """Passed to generate() as its streamer: ends the generation at its next token once the client has gone."""

    cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def put(self, value: Any) -> None:
        if self.cancelled:
            raise _ClientGone()

    def end(self) -> None:
        pass


class _Streamer(TextIteratorStreamer):
    """A TextIteratorStreamer that ends the generation at its next token once the client has gone."""

    cancelled = False

    def put(self, value: Any) -> None:
        if self.cancelled:
            raise _ClientGone()
        super().put(value)


async def _while_connected(request: Request, work: Awaitable[Any],
                           on_gone: Callable[[], None] | None = None) -> tuple[bool, Any]:
    """(True, work's result), or (False, None) when the client went away first; then on_gone() is
    called, or without one the work is cancelled. The client is checked every DISCONNECT_POLL_S."""
    result: list[Any] = []
    failure: list[Exception] = []
    async with anyio.create_task_group() as tg:
        async def watch() -> None:
            while not await request.is_disconnected():
                await anyio.sleep(DISCONNECT_POLL_S)
            (on_gone or tg.cancel_scope.cancel)()

        tg.start_soon(watch)
        try:
            result.append(await work)
        except Exception as e:  # raised below, not wrapped in the task group's ExceptionGroup
            failure.append(e)
        tg.cancel_scope.cancel()
    if failure:
        raise failure[0]
    return (True, result[0]) if result else (False, None)


class Server:
    """The state behind the app: one generator, one lock, one queue for it."""

    def __init__(self, generator: Generator, model_name: str):
        self.gen, self.name = generator, model_name
        self.lock = threading.Lock()  # held by the thread that runs the model (see module doc)
        # The queue for the model: waiting here costs no thread, is first come first served, and
        # a request can leave it (anyio's semaphore hands the place on when a waiter is cancelled).
        self.turn = anyio.Semaphore(1)
        self.waiting = 0
        self.created = int(time.time())

    def generator_for(self, job: Job) -> Generator:
        # A shallow copy shares the model and tokenizer but not the decoding settings, so a
        # request never changes what another one (or the server's defaults) uses. The prompt
        # was tokenised before the wait: generate() gets those ids instead of tokenising again
        # under the lock.
        g = copy.copy(self.gen)
        g.dec = job.decoding
        g.prompt_ids = lambda messages: job.ids  # type: ignore[method-assign]
        return g

    def prepare(self, req: ChatRequest) -> Job:
        """Validate, pick the decoding and fit the prompt into the context; no lock (the tokenizer
        only reads its state here, and trimming is linear in the conversation's size)."""
        messages = request_messages(req)
        dec = request_decoding(req, self.gen.dec)
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        kept, dropped = trim_history(self.gen, messages, reserve=min(dec.max_new_tokens, self.gen.context // 4))
        if self.gen.fmt.kind == "plain":
            # The plain format keeps every text it tokenises (turns.py caches them), so a prompt that
            # cannot fit is refused before it is rendered: 4 MB messages grew the server by 150 MB each.
            own = sum(len(x) for x in self.gen.tok([m.content for m in kept], add_special_tokens=False)["input_ids"])
            if own >= self.gen.context:
                raise _ContextFull(own, dropped, self.gen.context)
        ids = self.gen.prompt_ids(kept)
        if len(ids) >= self.gen.context:
            raise _ContextFull(len(ids), dropped, self.gen.context)
        return Job(f"chatcmpl-{uuid.uuid4().hex}", kept, ids, dec, stops, dropped, time.perf_counter())

    async def admit(self, request: Request) -> bool:
        """Wait for the model's turn; False (and no place kept) if the client leaves before it comes.
        True obliges the caller to release self.turn."""
        self.waiting += 1
        try:
            admitted, _ = await _while_connected(request, self.turn.acquire())
        finally:
            self.waiting -= 1
        return admitted

    def run(self, job: Job, streamer: Any) -> Reply:
        with self.lock:
            return self.generator_for(job).generate([job.messages], streamer=streamer)[0]

    async def answer(self, job: Job, request: Request) -> Reply | None:
        """The reply to a non-streamed request, or None when its client went away first."""
        if not await self.admit(request):
            log.info("%s: client disconnected while waiting; not generated", job.id)
            return None
        stopper = _Stopper()
        try:
            _, reply = await _while_connected(request, run_in_threadpool(self.run, job, stopper), stopper.cancel)
            return reply
        except _ClientGone:
            log.info("%s: client disconnected; generation stopped", job.id)
            return None
        finally:
            self.turn.release()

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

    async def stream(self, job: Job, include_usage: bool, request: Request) -> AsyncIterator[str]:
        yield self.chunk(job, {"role": "assistant", "content": ""})
        if not await self.admit(request):
            log.info("%s: client disconnected while waiting; not generated", job.id)
            return
        streamer = _Streamer(self.gen.tok, skip_prompt=True, skip_special_tokens=True)
        result: dict[str, Any] = {}
        worker = threading.Thread(target=self._stream_worker, args=(job, streamer, result), daemon=True,
                                  name=f"lima-serve-{job.id}")
        worker.start()
        plain = self.gen.fmt.kind == "plain"
        raw = sent = ""
        try:
            while (piece := await anyio.to_thread.run_sync(next, streamer, None)) is not None:
                if await request.is_disconnected():
                    return
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
            # A no-op when generation is over; otherwise the client has gone and the worker stops at
            # its next token. The next request may take its turn now: self.lock keeps the model to
            # one generation until the worker is out.
            streamer.cancelled = True
            self.turn.release()

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


def create_app(generator: Generator, model_name: str, *, max_body_bytes: int = MAX_BODY_MIB * 2 ** 20) -> FastAPI:
    """The OpenAI-compatible app for one loaded model (see the module doc for its behaviour)."""
    app = FastAPI(title=f"lima-align serve: {model_name}")
    app.state.server = Server(generator, model_name)
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    # Registered from tables rather than with decorators: mutmut (benchmarks/mutation.py) skips decorated
    # functions, and these are the handlers whose behaviour clients depend on.
    for exc, handler in ((LimaError, on_lima_error), (RequestValidationError, on_invalid_body),
                         (StarletteHTTPException, on_http_error), (_ContextFull, on_context_full),
                         (Exception, on_crash)):
        app.add_exception_handler(exc, handler)
    for method, path, endpoint in (("GET", "/health", health), ("GET", "/v1/models", models),
                                   ("POST", "/v1/chat/completions", chat_completions)):
        app.add_api_route(path, endpoint, methods=[method])
    return app


async def on_lima_error(request: Request, exc: LimaError) -> Response:
    return error_response(400, str(exc), param=exc.problems[0].where or None, code="invalid_value")


def _field(loc: tuple[Any, ...]) -> str:
    """A validation error's location as a field path (`messages[0].content`), "body" for the body itself."""
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


async def on_invalid_body(request: Request, exc: RequestValidationError) -> Response:
    errs = exc.errors()
    lines = [f"{_field(tuple(e.get('loc', ())))}: {e.get('msg', 'invalid')}" for e in errs]
    message = "; ".join(lines) + ("; fix: send a JSON body like {\"model\": \"...\", \"messages\": "
                                  "[{\"role\": \"user\", \"content\": \"...\"}]}")
    return error_response(400, message, param=_field(tuple(errs[0].get("loc", ()))) if errs else None,
                          code="invalid_value")


async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
    if exc.status_code == 413:
        return error_response(413, str(exc.detail), code="request_too_large")
    return error_response(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}",
                          code="not_found" if exc.status_code == 404 else None)


async def on_context_full(request: Request, exc: _ContextFull) -> Response:
    return error_response(400, f"the prompt is {exc.tokens} tokens or more (after dropping {exc.dropped} older "
                          f"turns) but the model's context is {exc.context} tokens; fix: shorten the last user "
                          "message (or the system message)", param="messages", code="context_length_exceeded")


async def on_crash(request: Request, exc: Exception) -> Response:
    # Starlette logs the traceback after sending this; OpenAI's shape lets a client show the message.
    return error_response(500, f"the server failed on this request: {type(exc).__name__}: {exc}",
                          kind="server_error", code="internal_error")


async def health(request: Request) -> dict[str, Any]:
    server: Server = request.app.state.server
    return {"status": "ok", "model": server.name, "busy": server.lock.locked(), "waiting": server.waiting}


async def models(request: Request) -> dict[str, Any]:
    server: Server = request.app.state.server
    return {"object": "list", "data": [{"id": server.name, "object": "model", "created": server.created,
                                        "owned_by": "lima-align"}]}


async def chat_completions(req: ChatRequest, request: Request) -> Any:
    server: Server = request.app.state.server
    job = await run_in_threadpool(server.prepare, req)
    headers = {TRIMMED_HEADER: str(job.trimmed)} if job.trimmed else {}
    if req.stream:
        include_usage = bool((req.stream_options or {}).get("include_usage"))
        return StreamingResponse(server.stream(job, include_usage, request), media_type="text/event-stream",
                                 headers={**headers, "cache-control": "no-cache"})
    reply = await server.answer(job, request)
    if reply is None:  # nobody is listening; nginx's code for it, for the access log
        return error_response(499, "the client closed the request", code="client_closed_request")
    text, finish = server.finish(job, reply, stream=False)
    body = {"id": job.id, "object": "chat.completion", "created": int(time.time()), "model": server.name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish, "logprobs": None}],
            "usage": server.usage(reply)}
    return JSONResponse(body, headers=headers)


def serve(model_cfg: ModelConfig, turns_cfg: TurnsConfig, gen_cfg: GenerateConfig, host: str = "127.0.0.1",
          port: int = 8000, max_body_mib: float = MAX_BODY_MIB) -> None:
    """Load the model and serve it until interrupted (Ctrl-C)."""
    import uvicorn

    if not 0 < max_body_mib < float("inf"):  # NaN fails too
        raise LimaError(f"--max-body-mib is {max_body_mib}", where="serve --max-body-mib",
                        fix="give a positive size in MiB (the default 8 takes a 40,000-turn conversation)")

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
    uvicorn.run(create_app(gen, name, max_body_bytes=int(max_body_mib * 2 ** 20)), host=host, port=port,
                log_level="info")
