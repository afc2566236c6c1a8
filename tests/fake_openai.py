"""A scripted OpenAI-compatible server on 127.0.0.1 for tests: answers, faults and latency on demand.

Use the `fake_openai` fixture (import it into a test module: `from fake_openai import fake_openai`)
or `with FakeOpenAI() as server:`. Point a client at `server.base_url`.

What each request gets, in order of precedence:
  1. the next Reply queued with `server.queue(...)` (one per request, first in first out);
  2. otherwise `server.respond(request)`: a str (the answer) or a Reply. The default echoes the
     last user turn as "echo: <text>".
Fault replies: `rate_limited(retry_after)`, `server_error()`, `http_error(status, message)`,
`slow(seconds)` (answers only after the delay, to trip a client timeout), `malformed()` (a 200
with a cut-off JSON body), `dropped()` (closes the connection without a response).
`latency_s` delays every response (e.g. 1.0 for a judge benchmark). The server counts requests
(`requests`), keeps their bodies and headers (`log`, `headers`), and tracks `in_flight` and
`max_in_flight` so tests can check a concurrency limit.
"""

from __future__ import annotations

import json
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


@dataclass
class Reply:
    text: str | None = None  # None: whatever `respond` would answer
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # a raw body instead of the usual JSON (for malformed answers)
    delay_s: float = 0.0
    drop: bool = False  # close the connection without answering
    finish_reason: str = "stop"


def ok(text: str | None = None, finish_reason: str = "stop") -> Reply:
    return Reply(text=text, finish_reason=finish_reason)


def rate_limited(retry_after: str | None = "1") -> Reply:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return http_error(429, "Rate limit reached for requests", headers)


def server_error(status: int = 500) -> Reply:
    return http_error(status, "The server had an error while processing your request")


def http_error(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    body = json.dumps({"error": {"message": message, "type": "fake_error", "code": status}}).encode()
    return Reply(status=status, body=body, headers=dict(headers or {}))


def slow(delay_s: float, text: str | None = None) -> Reply:
    return Reply(text=text, delay_s=delay_s)


def malformed() -> Reply:
    return Reply(body=b'{"id": "chatcmpl-1", "choices": [{"message": {"role": "assis')


def dropped() -> Reply:
    return Reply(drop=True)


def echo(request: dict[str, Any]) -> str:
    users = [m.get("content", "") for m in request.get("messages", []) if m.get("role") == "user"]
    return f"echo: {users[-1] if users else ''}"


def _words(text: str) -> int:
    return len(str(text).split())


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a handler still sleeping in `slow` must not block shutdown
    request_queue_size = 256  # the default 5 drops connections when a benchmark opens dozens at once


class FakeOpenAI:
    def __init__(self, respond: Callable[[dict[str, Any]], str | Reply] = echo, latency_s: float = 0.0):
        self.respond = respond
        self.latency_s = latency_s
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.log: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._httpd = _Server(("127.0.0.1", 0), self._handler_class())
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def queue(self, *replies: Reply) -> None:
        with self._lock:
            self._queue.extend(replies)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self.requests = self.max_in_flight = 0
            self.log.clear()
            self.headers.clear()

    def start(self) -> FakeOpenAI:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next(self, request: dict[str, Any], headers: dict[str, str]) -> Reply:
        with self._lock:
            self.requests += 1
            self.log.append(request)
            self.headers.append(headers)
            if self._queue:
                return self._queue.popleft()
        got = self.respond(request)
        return got if isinstance(got, Reply) else Reply(text=got)

    def _body(self, request: dict[str, Any], reply: Reply) -> bytes:
        text = reply.text
        if text is None:
            got = self.respond(request)
            if isinstance(got, Reply):
                got = got.text or ""
            text = got
        prompt = sum(_words(m.get("content", "")) for m in request.get("messages", []))
        return json.dumps({
            "id": f"chatcmpl-{self.requests}", "object": "chat.completion", "model": request.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": reply.finish_reason}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": _words(text),
                      "total_tokens": prompt + _words(text)}}).encode()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}).encode(), {})
                    return
                try:
                    request = json.loads(raw)
                except json.JSONDecodeError:
                    self._send(400, b'{"error": {"message": "request body is not JSON"}}', {})
                    return
                with server._lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    reply = server._next(request, {k.lower(): v for k, v in self.headers.items()})
                    if server._stopping.wait(server.latency_s + reply.delay_s):
                        return
                    if reply.drop:
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    body = reply.body if reply.body is not None else server._body(request, reply)
                    self._send(reply.status, body, reply.headers)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timed out) first
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

        return Handler


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server
