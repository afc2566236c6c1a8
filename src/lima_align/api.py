"""An OpenAI-compatible chat client that survives real endpoints, and answering prompts through it.

`ChatClient.chat` posts to `<base_url>/chat/completions` (OpenAI, vLLM, llama.cpp, TGI, ...).
Endpoints fail in ordinary ways: rate limits (429, often with Retry-After), overloaded servers
(5xx), stalls, dropped connections, truncated bodies. Those are retried with exponential backoff
and jitter; a Retry-After header is honoured (capped) and pauses every request of this client,
since the limit is per key, not per request. Errors a retry cannot fix (a bad key, a wrong model
name, a prompt that is too long) raise `ApiError` at once, with the server's own message and a fix.

`generate_from_api` answers a prompt list concurrently and appends each answer as it finishes,
in the same generations format as local `generate`; a rerun skips answered prompts.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from .decoding import Decoding, Reply
from .errors import LimaError, Problem
from .jsonl import JsonlAppender, done_keys
from .records import Conversation, generation_record

T = TypeVar("T")

# A retry cannot fix these; any other 4xx is retried only if listed in RETRY_STATUS.
RETRY_STATUS = {408, 409, 429}
# These say the endpoint, key or model is wrong, so every other request will fail the same way.
CONFIG_STATUS = {401, 403, 404}
# Retries of a refused connection before the endpoint ever answered: a server still starting gets a
# few seconds, one that is not running (a wrong port) is reported then, not after a minute of backoff.
REFUSED_RETRIES = 2


@dataclass
class ChatResult:
    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None = None  # the API's own value: "stop", "length", "content_filter", ...


class ApiError(LimaError):
    """A request that failed for good. `status` is the last HTTP status (None: no response)."""

    def __init__(self, problem: Problem, *, status: int | None = None, affects_all: bool = False):
        super().__init__(problem)
        self.status = status
        # True when the cause is the endpoint/key/model, not this request: callers stop the whole run.
        self.affects_all = affects_all


class _Retryable(Exception):
    """One failed attempt that may succeed if tried again."""

    def __init__(self, what: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(what)
        self.what, self.status, self.retry_after = what, status, retry_after


def parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _server_message(resp: httpx.Response) -> str:
    """The error text the server sent: OpenAI's {"error": {"message"}} or the start of the body."""
    try:
        body = resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        return resp.text.strip()[:500] or "(empty body)"
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body.get("message")))
        if isinstance(err, dict):
            err = err.get("message", err)
        if err:
            return str(err)[:500]
    return json.dumps(body)[:500]


class ChatClient:
    """Any OpenAI-compatible /v1/chat/completions endpoint, with retries and a concurrency limit.

    usage: running totals. "requests" counts HTTP requests sent (retries included), "retries"
    the attempts that were tried again, "errors" the chat() calls that raised in the end.
    """

    def __init__(self, base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY",
                 max_concurrency: int = 8, max_retries: int = 6, timeout_s: float = 120.0,
                 backoff_s: float = 1.0, max_backoff_s: float = 60.0, max_retry_after_s: float = 120.0):
        if max_concurrency < 1 or max_retries < 0:
            raise LimaError(f"need max_concurrency >= 1 and max_retries >= 0, got {max_concurrency} and {max_retries}",
                            fix="use at least one concurrent request and zero or more retries")
        self.base_url = base_url.rstrip("/")
        # Accept the full endpoint too: people paste either form.
        self.url = self.base_url if self.base_url.endswith("/chat/completions") else self.base_url + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env
        self.max_concurrency, self.max_retries, self.timeout_s = max_concurrency, max_retries, timeout_s
        self.backoff_s, self.max_backoff_s, self.max_retry_after_s = backoff_s, max_backoff_s, max_retry_after_s
        self.usage: dict[str, int] = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                      "retries": 0, "errors": 0}
        # httpx clients and semaphores belong to one event loop; a later asyncio.run gets fresh ones.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http: httpx.AsyncClient | None = None
        self._sem: asyncio.Semaphore | None = None
        self._answered = False  # whether any request to this endpoint got an HTTP response
        self._not_before = 0.0  # monotonic time before which no request is sent (set by Retry-After)

    def describe(self) -> str:
        return f"{self.model}@{self.base_url}"

    def _key(self) -> str:
        # Local servers (vLLM, llama.cpp) take any key; OpenAI's client sends "EMPTY" by convention.
        return os.environ.get(self.api_key_env) or "EMPTY"

    def _session(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._http is None or self._sem is None:
            limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s), limits=limits)
            self._sem = asyncio.Semaphore(self.max_concurrency)
            self._loop = loop
        return self._http, self._sem

    async def aclose(self) -> None:
        if self._http is not None and self._loop is asyncio.get_running_loop():
            await self._http.aclose()
        self._http, self._sem, self._loop = None, None, None

    async def __aenter__(self) -> ChatClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def chat(self, messages: list[dict], *, max_tokens: int, temperature: float,
                   top_p: float = 1.0, seed: int | None = None) -> ChatResult:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": max_tokens,
                                "temperature": temperature, "top_p": top_p}
        if seed is not None:
            body["seed"] = seed
        http, sem = self._session()
        last = _Retryable("no attempt made")
        refused = 0
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.usage["retries"] += 1
                await asyncio.sleep(self._delay(attempt - 1, last))
            wait = self._not_before - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                async with sem:
                    self.usage["requests"] += 1
                    # httpx's timeout is per read; this bounds the whole request, so a trickling server ends too.
                    return await asyncio.wait_for(self._attempt(http, body), self.timeout_s)
            except _Retryable as e:
                last = e
            except asyncio.TimeoutError:
                last = _Retryable(f"no complete answer within {self.timeout_s:g} s")
            except httpx.TimeoutException:
                last = _Retryable(f"timed out ({self.timeout_s:g} s)")
            except httpx.ConnectError as e:
                last = _Retryable(f"connection failed ({type(e).__name__}: {e or 'no details'})")
                refused += not self._answered
                if refused > REFUSED_RETRIES:
                    self.usage["errors"] += 1
                    raise ApiError(self._unreachable(e, refused), affects_all=True) from None
            except httpx.TransportError as e:
                last = _Retryable(f"connection failed ({type(e).__name__}: {e or 'no details'})")
            except ApiError:
                self.usage["errors"] += 1
                raise
            if last.retry_after is not None:
                self._not_before = max(self._not_before,
                                       time.monotonic() + min(last.retry_after, self.max_retry_after_s))
        self.usage["errors"] += 1
        raise ApiError(self._exhausted(last), status=last.status)

    def _delay(self, retry: int, failure: _Retryable) -> float:
        """Exponential backoff with jitter (so many clients do not retry in lockstep); Retry-After wins."""
        if failure.retry_after is not None:
            wait = min(failure.retry_after, self.max_retry_after_s)
            return wait + random.uniform(0, 0.1 * wait)
        cap = min(self.max_backoff_s, self.backoff_s * 2 ** retry)
        return cap / 2 + random.uniform(0, cap / 2)

    async def _attempt(self, http: httpx.AsyncClient, body: dict[str, Any]) -> ChatResult:
        resp = await http.post(self.url, json=body, headers={"Authorization": f"Bearer {self._key()}"})
        self._answered = True  # the endpoint exists: later connection failures are retried in full
        if resp.status_code != 200:
            message = _server_message(resp)
            if resp.status_code in RETRY_STATUS or resp.status_code >= 500:
                raise _Retryable(f"HTTP {resp.status_code}: {message}", resp.status_code,
                                 parse_retry_after(resp.headers))
            raise ApiError(self._rejected(resp.status_code, message), status=resp.status_code,
                           affects_all=resp.status_code in CONFIG_STATUS)
        try:
            data = resp.json()
            choice = data["choices"][0]
            text = choice["message"].get("content")
            finish = choice.get("finish_reason")
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
            # A truncated body (a proxy cut it) is a transient fault like a dropped connection.
            raise _Retryable(f"response body is not valid JSON ({e}): {resp.text[:200]!r}", 200) from None
        except (KeyError, IndexError, TypeError, AttributeError):
            raise _Retryable(f"response has no choices[0].message: {resp.text[:300]!r}", 200) from None
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
        pt, ct = (pt if isinstance(pt, int) else None), (ct if isinstance(ct, int) else None)
        self.usage["prompt_tokens"] += pt or 0
        self.usage["completion_tokens"] += ct or 0
        # Content is null for some servers when nothing was generated (e.g. a length stop at 0 tokens).
        return ChatResult(text if isinstance(text, str) else "", pt, ct, finish if isinstance(finish, str) else None)

    def _rejected(self, status: int, message: str) -> Problem:
        where = f"{self.url} (model {self.model!r})"
        what = f"HTTP {status}: {message}"
        if status == 401:
            state = "is set" if os.environ.get(self.api_key_env) else "is not set, so the key 'EMPTY' was sent"
            fix = f"set the environment variable {self.api_key_env} to a valid API key ({self.api_key_env} {state})"
        elif status == 403:
            fix = f"the key in {self.api_key_env} may not have access to model {self.model!r}; check its permissions"
        elif status == 404:
            fix = ("check --api-base (it usually ends in /v1, e.g. http://127.0.0.1:8000/v1) and that the "
                   f"server serves model {self.model!r}")
        elif status == 413 or "context" in message.lower() or "too long" in message.lower():
            fix = ("the prompt plus max_tokens exceeds what the model accepts; "
                   "lower max_new_tokens or shorten the prompt")
        else:
            fix = "the server rejected this request; its message above says which parameter"
        return Problem(where, what, fix)

    def _unreachable(self, e: httpx.ConnectError, attempts: int) -> Problem:
        return Problem(self.url, f"cannot connect ({e or type(e).__name__}), {attempts} attempts; nothing has "
                       "answered at this address yet", "start the server (e.g. `lima-align serve`, which listens on "
                       "http://127.0.0.1:8000/v1) or fix --api-base: its host and port")

    def _exhausted(self, last: _Retryable) -> Problem:
        what = f"still failing after {self.max_retries + 1} attempts; last: {last.what}"
        if last.status == 429:
            fix = "the rate limit held; lower the concurrency, wait, or raise the limit on your account"
        elif last.status is not None and last.status >= 500:
            fix = "the server keeps failing; check its logs or try later (a rerun resumes)"
        elif last.status == 200:
            fix = "the server keeps sending malformed answers; check that it speaks the OpenAI chat API"
        else:
            fix = "check that the server is up and reachable, or raise timeout_s for slow models"
        return Problem(f"{self.url} (model {self.model!r})", what, fix)


async def run_all(coros: list[Awaitable[T]], desc: str | None, *, on_done: Callable[[int, T | ApiError], None] | None = None,
                  total: int | None = None, initial: int = 0) -> list[T | ApiError]:
    """Run many requests at once (the client's semaphore limits how many are in flight) under a progress bar.

    Results come back in input order. A request that fails for good gives its ApiError in place of a
    result, so one bad prompt does not lose the others; an ApiError with affects_all (bad key, wrong
    model) is raised at once and cancels the rest, since every other request would fail the same way.
    on_done(index, result) runs as each one finishes, e.g. to append it to a file. desc=None: no bar
    (the caller keeps its own).
    """
    from tqdm.auto import tqdm

    tasks = [asyncio.ensure_future(c) for c in coros]
    index = {t: i for i, t in enumerate(tasks)}
    results: list[Any] = [None] * len(tasks)
    bar = tqdm(total=total if total is not None else len(tasks), initial=initial, desc=desc, unit="req",
               dynamic_ncols=True, disable=desc is None)
    try:
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                exc = t.exception()
                if exc is not None and not (isinstance(exc, ApiError) and not exc.affects_all):
                    raise exc
                results[index[t]] = exc if exc is not None else t.result()
                if on_done is not None:
                    on_done(index[t], results[index[t]])
                bar.update(1)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        bar.close()
    return results


# ----------------------------------------------------------------- generation through an API

FINISH = {"stop": "eot", "length": "length"}  # API finish_reason -> ours; other values are kept as they are


def generate_from_api(client: ChatClient, prompts: list[Conversation], output: Path, decoding: Decoding,
                      model_label: str, *, log: Callable[[str], None] = print) -> Path:
    """Answer every prompt through `client`, appending one generations record per finished answer.

    Prompt ids already in `output` are skipped, so a rerun makes no request for them (a half-written
    last line is repaired first). A prompt that still fails after retries is not written (a rerun
    tries it again); when any failed, LimaError is raised at the end with the count and first error.
    """
    output = Path(output)
    done = done_keys(output, lambda r: r.get("prompt_id"), model=model_label)
    todo, seen = [], set(done)
    for c in prompts:
        if c.id not in seen:  # a duplicate id would be answered twice; the first one stands
            seen.add(c.id)
            todo.append(c)
    unique = len({c.id for c in prompts})
    if not todo:
        log(f"{output}: all {unique} prompts already answered")
        return output
    if decoding.repetition_penalty not in (None, 1.0):
        log(f"note: repetition_penalty={decoding.repetition_penalty} is not part of the OpenAI API and is not sent")
    dec = asdict(decoding)
    dec["repetition_penalty"] = None  # record what the endpoint actually applied
    failures: list[tuple[str, ApiError]] = []

    with JsonlAppender(output) as w:
        def write(i: int, result: ChatResult | ApiError) -> None:
            if isinstance(result, ApiError):
                failures.append((todo[i].id, result))
            else:
                w.write(_api_record(todo[i], result, model_label, dec, client))

        async def main() -> None:
            try:
                coros = [client.chat([m.to_dict() for m in c.messages], max_tokens=decoding.max_new_tokens,
                                     temperature=decoding.temperature, top_p=decoding.top_p, seed=decoding.seed)
                         for c in todo]
                await run_all(coros, f"generate {model_label}", on_done=write, total=unique,
                              initial=unique - len(todo))
            finally:
                await client.aclose()

        asyncio.run(main())

    if failures:
        first_id, first = failures[0]
        raise LimaError(Problem(
            str(output),
            f"{len(failures)} of {len(todo)} prompts failed after retries and were not written; "
            f"first (prompt {first_id!r}): {first}",
            "rerun the same command: answered prompts are kept and only the failed ones are requested again"))
    log(f"{output}: {len(todo)} answered through {client.describe()} "
        f"({client.usage['prompt_tokens']} prompt + {client.usage['completion_tokens']} completion tokens, "
        f"{client.usage['retries']} retries)")
    return output


def _api_record(c: Conversation, r: ChatResult, label: str, dec: dict[str, Any], client: ChatClient) -> dict[str, Any]:
    finish = FINISH.get(r.finish_reason or "", r.finish_reason)
    reply = Reply(r.text.strip(), finish, r.prompt_tokens, r.completion_tokens)  # type: ignore[arg-type]
    return generation_record(c, reply, label, dec, meta={"api_base": client.base_url, "api_model": client.model,
                                                         "api_finish_reason": r.finish_reason})
