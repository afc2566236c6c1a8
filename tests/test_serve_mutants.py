"""`lima-align serve` behaviour that mutation testing (benchmarks/mutation.py) found unchecked.

The app runs in-process (starlette's TestClient, or raw ASGI calls where a client must leave at a
chosen moment), and most tests give it a scripted generator: the tiny model's tokenizer and turn
format, but a fixed answer, so status codes, bodies and stream chunks can be pinned exactly and
each generation records the decoding settings and prompt it was given.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import threading
import time
from dataclasses import replace
from types import SimpleNamespace

import anyio
import pytest
import torch
from fastapi.testclient import TestClient

from lima_align import serve as serve_mod
from lima_align.config import GenerateConfig, ModelConfig, TurnsConfig
from lima_align.decoding import Decoding, Reply
from lima_align.errors import LimaError, Problem
from lima_align.generate import Generator, trim_history
from lima_align.records import Message
from lima_align.serve import TRIMMED_HEADER, create_app
from test_serve import ASK, NAME, tiny_generator

URL = "/v1/chat/completions"
ANSWER = "Boil the egg. Done."
ID = re.compile(r"chatcmpl-[0-9a-f]{32}")


class Scripted(Generator):
    """The tiny model's generator with a fixed answer; every generation is recorded in `calls`.

    A streamer gets the prompt, then the answer token by token and the end-of-turn token, as
    model.generate feeds it (`streamed`: what the model wrote, when the final answer is cut from it).
    `fail` makes a generation raise; `endless` makes it feed tokens until the streamer stops it."""

    answer = ANSWER
    streamed: str | None = None
    finish = "eot"
    fail: Exception | None = None
    endless = False

    def generate(self, conversations, *, streamer=None, **kw):
        ids = self.prompt_ids(conversations[0])
        me = threading.current_thread()
        self.calls.append((self.dec, list(ids), conversations[0], me.name, me.daemon))
        if self.fail is not None:
            raise self.fail
        if streamer is not None:
            streamer.put(torch.tensor([ids]))
            pieces = self.tok(self.streamed or self.answer, add_special_tokens=False)["input_ids"]
            while True:
                for t in pieces:
                    self.fed[0] += 1  # a list: the server generates with a copy of this object
                    streamer.put(torch.tensor([t]))
                    if self.endless:
                        time.sleep(0.005)
                if not self.endless or self.fed[0] > 20000:
                    break
            if self.finish == "eot":
                streamer.put(torch.tensor([self.tok.eos_token_id]))
            streamer.end()
        return [Reply(self.answer, self.finish, len(ids), 7)]


@pytest.fixture(scope="module")
def real(tiny_llama):
    return tiny_generator(tiny_llama)


@pytest.fixture
def gen(real):
    g = Scripted.__new__(Scripted)
    g.__dict__.update(real.__dict__)
    g.dec = Decoding(max_new_tokens=24, temperature=0.7, top_p=0.9, repetition_penalty=1.2, seed=3)
    g.calls, g.fed = [], [0]
    return g


@pytest.fixture
def app(gen):
    return create_app(gen, NAME)


@pytest.fixture
def client(app):
    return TestClient(app, raise_server_exceptions=False)


def error(r):
    return r.status_code, r.json()["error"]


def events(r):
    """The data lines of an event stream, parsed ([DONE] kept as the string)."""
    lines = [line for line in r.text.split("\n\n") if line]
    assert all(line.startswith("data: ") for line in lines), lines
    return [line[6:] if line == "data: [DONE]" else json.loads(line[6:]) for line in lines]


# ----------------------------------------------------------------- models, health


def test_models_list_the_one_model_and_health_says_who_is_busy(gen):
    before = int(time.time())
    app = create_app(gen, NAME)
    after = int(time.time())
    client = TestClient(app)
    body = client.get("/v1/models").json()
    created = body["data"][0]["created"]
    assert before <= created <= after
    assert body == {"object": "list", "data": [{"id": NAME, "object": "model", "created": created,
                                                "owned_by": "lima-align"}]}
    assert client.get("/health").json() == {"status": "ok", "model": NAME, "busy": False, "waiting": 0}
    with app.state.server.lock:  # a generation is running
        assert client.get("/health").json()["busy"] is True


def test_the_app_names_its_model_and_takes_bodies_up_to_8_mib(client):
    assert client.get("/openapi.json").json()["info"]["title"] == f"lima-align serve: {NAME}"
    r = client.post(URL, content=b"x" * (8 * 2 ** 20 + 1), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over 8,388,608 bytes" in r.json()["error"]["message"]


# ----------------------------------------------------------------- plain answers


def test_a_plain_answer_in_openai_shape(client):
    before = int(time.time())
    r = client.post(URL, json={"model": "anything", "messages": ASK})
    after = int(time.time())
    assert r.status_code == 200 and TRIMMED_HEADER not in r.headers
    body = r.json()
    assert ID.fullmatch(body["id"]) and before <= body["created"] <= after
    prompt = body["usage"]["prompt_tokens"]
    assert prompt > 5
    assert body == {"id": body["id"], "object": "chat.completion", "created": body["created"], "model": NAME,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER},
                                 "finish_reason": "stop", "logprobs": None}],
                    "usage": {"prompt_tokens": prompt, "completion_tokens": 7, "total_tokens": prompt + 7}}
    assert client.post(URL, json={"messages": ASK}).json()["id"] != body["id"]  # one id per request


@pytest.mark.parametrize("finish, expected", [("length", "length"), ("stop", "stop"), ("eot", "stop")])
def test_the_finish_reason_is_openais_name_for_ours(client, gen, finish, expected):
    gen.finish = finish
    assert client.post(URL, json={"messages": ASK}).json()["choices"][0]["finish_reason"] == expected


@pytest.mark.parametrize("stop, text", [
    ("g.", "Boil the eg"),  # one string, not its characters ("g" comes earlier)
    (["Done", "egg"], "Boil the "),  # the earliest of several
    (["nowhere"], ANSWER),
    ([""], ANSWER),
])
def test_stop_strings_cut_the_answer_and_finish_it_with_stop(client, gen, stop, text):
    gen.finish = "length"
    choice = client.post(URL, json={"messages": ASK, "stop": stop}).json()["choices"][0]
    assert choice["message"]["content"] == text
    assert choice["finish_reason"] == ("length" if text == ANSWER else "stop")


def test_a_requests_settings_reach_its_generation_only(client, gen):
    base = gen.dec
    ask = {"messages": ASK, "temperature": 0.3, "top_p": 0.5, "max_tokens": 9, "seed": 4, "repetition_penalty": 1.1}
    assert client.post(URL, json=ask).status_code == 200
    assert client.post(URL, json={**ask, "max_completion_tokens": 5, "stream": True}).status_code == 200
    assert client.post(URL, json={"messages": ASK}).status_code == 200
    want = Decoding(9, 0.3, 0.5, 1.1, 4, base.repetition_penalty_scope)
    assert [c[0] for c in gen.calls] == [want, replace(want, max_new_tokens=5), base]
    assert gen.dec == base  # the server's defaults are untouched
    prompt = gen.fmt.encode_prompt([Message("user", ASK[0]["content"])])
    assert all(c[1] == prompt for c in gen.calls)


def test_the_prompt_is_tokenised_once_before_the_generation(client, gen, monkeypatch):
    renders = []
    real = gen.fmt.encode_prompt
    monkeypatch.setattr(gen.fmt, "encode_prompt", lambda m: renders.append(m) or real(m))
    assert client.post(URL, json={"messages": ASK}).status_code == 200
    assert len(renders) == 1 and gen.calls[0][1] == real(renders[0])


# ----------------------------------------------------------------- trimming, context


def chat(n_pairs, last="How do I boil an egg?"):
    messages = [{"role": "system", "content": "Be brief."}]
    for i in range(n_pairs):
        messages += [{"role": "user", "content": f"question {i} about the sea"},
                     {"role": "assistant", "content": f"answer {i}: waves fold and unfold"}]
    return messages + [{"role": "user", "content": last}]


def as_messages(messages):
    return [Message(m["role"], m["content"]) for m in messages]


def test_trimming_keeps_room_for_the_answer_but_at_most_a_quarter_of_the_context(client, gen):
    messages = chat(40)
    drops = {reserve: trim_history(gen, as_messages(messages), reserve=reserve)[1]
             for reserve in (5, gen.context // 4, gen.context // 5, gen.context // 3, 400)}
    assert len(set(drops.values())) == len(drops)  # each reserve drops a different number of turns
    for max_tokens, reserve in ((5, 5), (400, gen.context // 4)):
        r = client.post(URL, json={"messages": messages, "max_tokens": max_tokens})
        assert r.status_code == 200 and r.headers[TRIMMED_HEADER] == str(drops[reserve])
        kept = gen.calls[-1][2]
        assert kept == as_messages(messages[:1] + messages[1 + drops[reserve]:])
    r = client.post(URL, json={"messages": messages, "max_tokens": 5, "stream": True})
    assert r.headers[TRIMMED_HEADER] == str(drops[5]) and r.headers["cache-control"] == "no-cache"


def test_the_answers_room_is_whole_tokens_of_a_context_not_divisible_by_four(client, gen):
    """A prompt that leaves exactly context // 4 tokens free is kept whole (a quarter of 4q + r is q tokens)."""
    messages = chat(3)
    length = len(gen.prompt_ids(as_messages(messages)))
    r = length % 3 or 3
    q = (length - r) // 3
    gen.context = 4 * q + r  # context - context // 4 == length
    assert gen.context % 4 and gen.context - gen.context // 4 == length
    resp = client.post(URL, json={"messages": messages, "max_tokens": 10 * gen.context})
    assert resp.status_code == 200 and TRIMMED_HEADER not in resp.headers
    assert gen.calls[-1][2] == as_messages(messages)
    gen.context -= 1  # a token less: the oldest exchange goes
    resp = client.post(URL, json={"messages": messages, "max_tokens": 10 * gen.context})
    assert resp.headers[TRIMMED_HEADER] == "2"


def too_long(tokens, dropped, context):
    return {"message": f"the prompt is {tokens} tokens or more (after dropping {dropped} older turns) but the "
                       f"model's context is {context} tokens; fix: shorten the last user message (or the system "
                       "message)", "type": "invalid_request_error", "param": "messages",
            "code": "context_length_exceeded"}


def test_a_prompt_that_cannot_fit_is_refused_saying_how_long_it_is(client, gen):
    long = "The quick brown fox jumps over the lazy dog. " * 80
    own = sum(len(gen.tok(t, add_special_tokens=False)["input_ids"]) for t in ("Be brief.", long))  # kept turns
    assert own >= gen.context
    r = client.post(URL, json={"messages": chat(1, last=long)})
    assert error(r) == (400, too_long(own, 2, gen.context))
    assert gen.calls == []


@pytest.mark.parametrize("plain", [True, False])
def test_the_context_boundary(real, plain):
    text = "How do I boil an egg?"
    own = len(real.tok(text, add_special_tokens=False)["input_ids"])
    full = len(real.fmt.encode_prompt([Message("user", text)]))
    assert own < full

    def answer(context):
        g = copy.copy(real)
        g.context = context
        if not plain:  # what the message's own tokens are is the plain format's concern only
            g.fmt = SimpleNamespace(kind="template")
            g.prompt_ids = real.fmt.encode_prompt
        g.generate = lambda *a, **kw: [Reply("ok", "eot", full, 1)]
        return TestClient(create_app(g, NAME)).post(URL, json={"messages": [{"role": "user", "content": text}],
                                                                "max_tokens": 1})

    # plain: the message alone fills the context, refused before the prompt is rendered
    assert error(answer(own)) == (400, too_long(own if plain else full, 0, own))
    assert error(answer(own + 1)) == (400, too_long(full, 0, own + 1))
    assert error(answer(full)) == (400, too_long(full, 0, full))  # no room for a single token
    assert answer(full + 1).status_code == 200


# ----------------------------------------------------------------- streams


def test_a_stream_in_openai_shape(client):
    r = client.post(URL, json={"messages": ASK, "stream": True, "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-cache" and TRIMMED_HEADER not in r.headers
    chunks = events(r)
    assert chunks[-1] == "[DONE]"
    chunks = chunks[:-1]
    first, last = chunks[0], chunks[-1]
    assert ID.fullmatch(first["id"])
    for c in chunks:
        assert c["id"] == first["id"] and c["object"] == "chat.completion.chunk" and c["model"] == NAME
        assert abs(c["created"] - time.time()) < 60 and isinstance(c["created"], int)
    assert first["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
    texts = chunks[1:-2]
    assert len(texts) > 2 and all(c["choices"][0]["finish_reason"] is None and c["choices"][0]["index"] == 0
                                  and list(c["choices"][0]["delta"]) == ["content"] for c in texts)
    assert "".join(c["choices"][0]["delta"]["content"] for c in texts) == ANSWER
    assert all(c["choices"][0]["delta"]["content"] for c in texts)  # no empty pieces
    assert chunks[-2]["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    prompt = last["usage"]["prompt_tokens"]
    assert last["choices"] == [] and last["usage"] == {"prompt_tokens": prompt, "completion_tokens": 7,
                                                        "total_tokens": prompt + 7}


@pytest.mark.parametrize("options", [None, {}, {"include_usage": False}])
def test_a_stream_without_include_usage_has_no_usage_chunk(client, options):
    chunks = events(client.post(URL, json={"messages": ASK, "stream": True, "stream_options": options}))
    assert chunks[-1] == "[DONE]" and chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert not any("usage" in c for c in chunks[:-1])


def test_a_streamed_stop_string_never_reaches_the_client(client, gen):
    gen.finish = "length"
    chunks = events(client.post(URL, json={"messages": ASK, "stream": True, "stop": "egg"}))
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert text == "Boil the " and chunks[-2]["choices"][0]["finish_reason"] == "stop"


def test_the_rest_of_the_final_text_is_sent_before_the_finish(client, gen):
    gen.answer = "Boil it. EN"  # "EN" is held back while it may begin the stop string; it does not
    chunks = events(client.post(URL, json={"messages": ASK, "stream": True, "stop": ["END"]}))
    assert chunks[-3]["choices"][0]["delta"] == {"content": "EN"}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1]) == "Boil it. EN"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"  # the answer's own end (eot)


def test_a_stream_that_diverged_from_the_final_text_is_not_patched(client, gen, monkeypatch, caplog):
    real_generate = Scripted.generate

    def diverging(self, conversations, **kw):
        reply = real_generate(self, conversations, **kw)[0]
        return [replace(reply, text="Something else entirely, longer than the stream was")]

    monkeypatch.setattr(Scripted, "generate", diverging)
    with caplog.at_level(logging.WARNING, logger="lima_align.serve"):
        chunks = events(client.post(URL, json={"messages": ASK, "stream": True}))
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1]) == ANSWER
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and chunks[-1] == "[DONE]"
    assert messages_logged(caplog) == [f"{chunks[0]['id']}: streamed text is not a prefix of the final text"]


def test_a_generation_that_fails_mid_stream_says_why_and_frees_the_model(client, gen, app):
    gen.fail = RuntimeError("the accelerator caught fire")
    chunks = events(client.post(URL, json={"messages": ASK, "stream": True}))
    assert chunks[1:] == [{"error": {"message": "generation failed: RuntimeError: the accelerator caught fire",
                                     "type": "server_error", "param": None, "code": None}}]
    gen.fail = None
    assert client.post(URL, json={"messages": ASK}).json()["choices"][0]["message"]["content"] == ANSWER
    assert app.state.server.turn.value == 1


# ----------------------------------------------------------------- errors


def test_an_unexpected_failure_is_a_500_naming_it(client, gen, app):
    gen.fail = RuntimeError("boom")
    assert error(client.post(URL, json={"messages": ASK})) == (500, {
        "message": "the server failed on this request: RuntimeError: boom", "type": "server_error", "param": None,
        "code": "internal_error"})
    assert app.state.server.turn.value == 1 and not app.state.server.lock.locked()


def test_a_request_our_checks_refuse_is_a_400_naming_the_field(client):
    status, err = error(client.post(URL, json={"messages": ASK, "n": 2, "logprobs": True}))
    assert status == 400 and err["param"] == "n" and err["code"] == "invalid_value"
    assert err["type"] == "invalid_request_error" and "n=2" in err["message"] and "logprobs" in err["message"]


FIX = '; fix: send a JSON body like {"model": "...", "messages": [{"role": "user", "content": "..."}]}'


@pytest.mark.parametrize("body, param, message", [
    ({"messages": [{"content": "hi"}]}, "messages[0].role", "messages[0].role: Field required"),
    ({"messages": ASK, "temperature": 3}, "temperature",
     "temperature: Input should be less than or equal to 2"),
    ({"messages": ASK, "temperature": 3, "top_p": 0}, "temperature",
     "temperature: Input should be less than or equal to 2; top_p: Input should be greater than 0"),
    ([], "body", "body: Input should be a valid dictionary or object to extract fields from"),
])
def test_a_malformed_request_is_a_400_naming_the_field(client, body, param, message):
    assert error(client.post(URL, json=body)) == (400, {"message": message + FIX, "type": "invalid_request_error",
                                                         "param": param, "code": "invalid_value"})


@pytest.mark.parametrize("errors, param, message", [
    ([{"loc": ("body", "messages", 0, "content"), "msg": "bad"}], "messages[0].content",
     "messages[0].content: bad"),
    ([{"loc": ("query", "limit"), "msg": "bad"}], "query.limit", "query.limit: bad"),  # not the body: kept whole
    ([{"loc": ("body",), "msg": "bad"}], "body", "body: bad"),
    ([{"msg": "bad"}], "body", "body: bad"),  # an error that names no place
    ([{"loc": ("body", "n")}], "n", "n: invalid"),  # nor what is wrong
    ([], None, ""),
])
def test_a_validation_error_names_its_field_whatever_it_carries(errors, param, message):
    from fastapi.exceptions import RequestValidationError

    r = anyio.run(serve_mod.on_invalid_body, None, RequestValidationError(errors))
    assert r.status_code == 400 and json.loads(r.body) == {"error": {
        "message": message + FIX, "type": "invalid_request_error", "param": param, "code": "invalid_value"}}


def test_a_body_that_is_no_json_is_a_400(client):
    status, err = error(client.post(URL, content=b"{", headers={"content-type": "application/json"}))
    assert status == 400 and err["param"] == "[1]" and err["message"].startswith("[1]: JSON decode error")


@pytest.mark.parametrize("method, path, status, code", [
    ("GET", "/v1/nothing", 404, "not_found"),
    ("GET", URL, 405, None),
])
def test_unknown_paths_and_methods_get_openais_error_object(client, method, path, status, code):
    reason = {404: "Not Found", 405: "Method Not Allowed"}[status]
    assert error(client.request(method, path)) == (status, {
        "message": f"{reason}: {method} {path}", "type": "invalid_request_error", "param": None, "code": code})


@pytest.mark.parametrize("declared", [True, False])
def test_a_body_over_the_servers_limit_is_a_413(gen, declared):
    client = TestClient(create_app(gen, NAME, max_body_bytes=1000))
    body = json.dumps({"messages": [{"role": "user", "content": "x" * 1000}]}).encode()
    content = body if declared else iter([body[:600], body[600:]])  # without a length: counted as it comes
    status, err = error(client.post(URL, content=content, headers={"content-type": "application/json"}))
    assert (status, err["code"], err["param"]) == (413, "request_too_large", None)
    assert err["message"].startswith("the request body is over 1,000 bytes (serve --max-body-mib); fix: ")
    small = json.dumps({"messages": ASK}).encode()
    assert client.post(URL, content=small if declared else iter([small]),
                       headers={"content-type": "application/json"}).status_code == 200


# ----------------------------------------------------------------- clients that leave


async def post_by_hand(app, body, leave, seen_waiting):
    """POST `body` to the app by hand: the client leaves once leave() returns True (checked every 10 ms),
    noting server.waiting in `seen_waiting` meanwhile. Returns (status, the body's bytes).

    A stream is sent as ASGI 2.4: starlette then leaves noticing the client's departure to the app
    (under 2.3, uvicorn's, it cancels the stream itself, racing the app's own checks)."""
    server = app.state.server
    raw = json.dumps(body).encode()
    requested, sent = [False], []

    async def receive():
        if not requested[0]:
            requested[0] = True
            return {"type": "http.request", "body": raw, "more_body": False}
        while not leave():
            seen_waiting.append(server.waiting)
            await anyio.sleep(0.01)
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    spec = "2.4" if body.get("stream") else "2.3"
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": spec}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": URL, "raw_path": URL.encode(), "query_string": b"",
             "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def call(app, body, leave, turn_held=False):
    """post_by_hand in an event loop of its own. turn_held: another generation holds the model's turn until
    the client has left. Returns (status, the body's bytes, server.waiting seen while the request waited)."""
    server = app.state.server
    seen_waiting, result = [], []

    async def main():
        if turn_held:
            await server.turn.acquire()
        with anyio.fail_after(20):
            result.append(await post_by_hand(app, body, leave, seen_waiting))
        if turn_held:
            server.turn.release()

    anyio.run(main)
    status, data = result[0]
    return status, data, seen_waiting


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_while_waiting_is_never_generated_for(app, gen, stream, caplog):
    left_at = time.monotonic() + 0.3
    with caplog.at_level(logging.INFO, logger="lima_align.serve"):
        status, data, waiting = call(app, {"messages": ASK, "stream": stream}, lambda: time.monotonic() > left_at,
                                     turn_held=True)
    server = app.state.server
    assert 1 in waiting and server.waiting == 0
    assert gen.calls == [] and server.turn.value == 1  # the turn is neither kept nor handed out twice
    if stream:
        assert status == 200 and [json.loads(x[6:])["choices"][0]["delta"] for x in data.decode().split("\n\n") if x] \
            == [{"role": "assistant", "content": ""}]
    else:
        assert status == 499 and json.loads(data) == {"error": {
            "message": "the client closed the request", "type": "invalid_request_error", "param": None,
            "code": "client_closed_request"}}
    [line] = messages_logged(caplog)
    assert re.fullmatch(r"chatcmpl-[0-9a-f]{32}: client disconnected while waiting; not generated", line)


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_mid_generation_stops_it(app, gen, stream, caplog):
    gen.endless = True
    with caplog.at_level(logging.INFO, logger="lima_align.serve"):
        status, data, _ = call(app, {"messages": ASK, "stream": stream}, lambda: gen.fed[0] > 30)
        deadline = time.monotonic() + 10
        while app.state.server.lock.locked() or "generation stopped" not in caplog.text:
            assert time.monotonic() < deadline, "the generation went on after the client left"
            time.sleep(0.01)
    assert gen.fed[0] < 5000 and app.state.server.turn.value == 1
    [line] = [line for line in messages_logged(caplog) if "disconnected" in line]
    assert re.fullmatch(r"chatcmpl-[0-9a-f]{32}: client disconnected; generation stopped", line)
    if stream:
        assert line.startswith(json.loads(data.decode().split("\n\n")[0][6:])["id"])
    if not stream:
        assert status == 499 and json.loads(data)["error"]["code"] == "client_closed_request"
    else:
        assert b"[DONE]" not in data


def test_health_counts_every_request_waiting_for_the_model(app, gen):
    """Two requests wait while another generation holds the turn: /health's waiting says 2, and 0 once
    both clients have left (each gives up its own place)."""
    server = app.state.server
    seen, statuses = [], []

    def leave():
        return 2 in seen or time.monotonic() > give_up

    async def one():
        status, _ = await post_by_hand(app, {"messages": ASK}, leave, seen)
        statuses.append(status)

    async def main():
        await server.turn.acquire()
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(one)
                tg.start_soon(one)
        server.turn.release()

    give_up = time.monotonic() + 5
    anyio.run(main)
    assert max(seen) == 2 and statuses == [499, 499]
    assert server.waiting == 0 and server.turn.value == 1 and gen.calls == []


# ----------------------------------------------------------------- serve()


@pytest.mark.parametrize("host, warned", [("0.0.0.0", True), ("127.0.0.1", False), ("localhost", False),
                                          ("::1", False)])
def test_serve_loads_the_model_and_hands_uvicorn_the_app(tiny_llama, monkeypatch, caplog, host, warned):
    import uvicorn

    ran = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.update(app=app, **kw))
    monkeypatch.setattr(serve_mod.log, "level", logging.NOTSET)  # the root logger's WARNING would hide INFO
    serve_mod.serve(ModelConfig(name=str(tiny_llama), dtype="float32"), TurnsConfig(format="plain"),
                    GenerateConfig(temperature=0.2, seed=9, max_new_tokens=3, model_label="my-model"),
                    host=host, port=1234, max_body_mib=0.001)
    assert serve_mod.log.level == logging.INFO
    assert (ran["host"], ran["port"], ran["log_level"]) == (host, 1234, "info")
    describe = ran["app"].state.server.gen.fmt.describe()
    assert describe.startswith("turn format 'plain'")
    assert messages_logged(caplog) == [f"serving my-model ({describe}) at http://{host}:1234/v1"] + [
        f"listening on {host}: there is no authentication, anyone who can reach this port can use the model"] * warned
    client = TestClient(ran["app"])
    assert client.get("/v1/models").json()["data"][0]["id"] == "my-model"
    server = ran["app"].state.server
    assert server.gen.dec == Decoding(3, 0.2, 0.9, 1.2, 9) and server.gen.cache == "dynamic"
    limit = int(0.001 * 2 ** 20)  # 1,048 bytes
    big = json.dumps({"messages": [{"role": "user", "content": "x" * limit}]})
    assert client.post(URL, content=big, headers={"content-type": "application/json"}).json()["error"]["message"] \
        .startswith("the request body is over 1,048 bytes")


def test_serve_names_the_model_by_its_path_without_a_label(tiny_llama, monkeypatch):
    import uvicorn

    ran = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.update(app=app, **kw))
    serve_mod.serve(ModelConfig(name=str(tiny_llama), dtype="float32"), TurnsConfig(format="plain"),
                    GenerateConfig(cache="static"))
    assert (ran["host"], ran["port"]) == ("127.0.0.1", 8000)
    assert ran["app"].state.server.name == str(tiny_llama) and ran["app"].state.server.gen.cache == "static"
    client = TestClient(ran["app"])
    r = client.post(URL, content=b"x" * (8 * 2 ** 20 + 1), headers={"content-type": "application/json"})
    assert r.json()["error"]["message"].startswith("the request body is over 8,388,608 bytes")


def test_serve_with_vllm_serves_the_vllm_generator(monkeypatch, real):
    import uvicorn

    from lima_align import vllm_backend

    ran, asked = {}, []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.update(app=app, **kw))
    monkeypatch.setattr(vllm_backend, "load_generator", lambda *a: asked.append(a) or (real, "label"))
    g = GenerateConfig(backend="vllm", model_label="v")
    serve_mod.serve(ModelConfig(name="some/model"), TurnsConfig(), g)
    assert asked == [(ModelConfig(name="some/model"), TurnsConfig(), g)]
    assert ran["app"].state.server.gen is real and ran["app"].state.server.name == "v"


def test_serve_refuses_a_body_limit_that_is_no_size_before_loading(monkeypatch):
    with pytest.raises(LimaError) as e:
        serve_mod.serve(ModelConfig(name="never/loaded"), TurnsConfig(), GenerateConfig(), max_body_mib=0)
    assert e.value.problems == [Problem("serve --max-body-mib", "--max-body-mib is 0",
                                        "give a positive size in MiB (the default 8 takes a 40,000-turn conversation)")]


@pytest.mark.parametrize("root, own, configured", [(False, False, True), (True, False, False), (False, True, False)])
def test_serve_sets_up_logging_only_where_nobody_has(monkeypatch, real, root, own, configured):
    import uvicorn

    from lima_align import vllm_backend

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    monkeypatch.setattr(vllm_backend, "load_generator", lambda *a: (real, "label"))
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: calls.append(kw))
    monkeypatch.setattr(logging.getLogger(), "handlers", [logging.NullHandler()] if root else [])
    monkeypatch.setattr(serve_mod.log, "handlers", [logging.NullHandler()] if own else [])
    serve_mod.serve(ModelConfig(name="some/model"), TurnsConfig(), GenerateConfig(backend="vllm"))
    assert calls == ([{"level": logging.INFO, "format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}]
                     if configured else [])


# ----------------------------------------------------------------- what the log and the threads say


def messages_logged(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "lima_align.serve"]


def test_each_answer_is_logged_with_its_sizes(client, caplog):
    with caplog.at_level(logging.INFO, logger="lima_align.serve"):
        sent = time.perf_counter()
        body = client.post(URL, json={"messages": ASK}).json()
        took = time.perf_counter() - sent
        r = client.post(URL, json={"messages": chat(40), "max_tokens": 5, "stream": True})
    chunk = events(r)[0]
    trimmed = int(r.headers[TRIMMED_HEADER])
    prompt = body["usage"]["prompt_tokens"]
    plain, streamed = messages_logged(caplog)
    assert re.fullmatch(rf"{body['id']} json: 1 messages, {prompt} prompt \+ 7 completion tokens, finish stop, "
                        r"\d+\.\d\ds", plain), plain
    assert float(plain.split(", ")[-1][:-1]) <= took + 0.005  # the request's own time (rounded), not a clock
    assert re.fullmatch(rf"{chunk['id']} stream: {82 - trimmed} messages \({trimmed} oldest turns trimmed\), "
                        r"\d+ prompt \+ 7 completion tokens, finish stop, \d+\.\d\ds", streamed), streamed


def test_a_streamed_generation_runs_in_a_thread_named_after_its_request(app, gen):
    # sent from this (not a daemon) thread, as uvicorn runs the app in the main one: a new thread would
    # inherit that
    status, data, _ = call(app, {"messages": ASK, "stream": True}, lambda: False)
    chunk = json.loads(data.decode().split("\n\n")[0][6:])
    assert gen.calls[0][3] == f"lima-serve-{chunk['id']}"  # what a stack dump of a stuck server shows
    assert gen.calls[0][4] is True  # Ctrl-C does not wait for a generation to end


def test_a_failed_stream_is_logged_with_its_traceback(client, gen, caplog):
    gen.fail = RuntimeError("the accelerator caught fire")
    with caplog.at_level(logging.INFO, logger="lima_align.serve"):
        chunk = events(client.post(URL, json={"messages": ASK, "stream": True}))[0]
    record = next(r for r in caplog.records if r.name == "lima_align.serve" and r.levelno == logging.ERROR)
    assert record.getMessage() == f"{chunk['id']}: generation failed" and record.exc_info[1] is gen.fail


def test_a_request_refused_without_a_field_to_name_has_no_param(client, monkeypatch):
    def refuse(req, base):
        raise LimaError("this server is read-only today", fix="come back tomorrow")

    monkeypatch.setattr(serve_mod, "request_decoding", refuse)
    assert error(client.post(URL, json={"messages": ASK})) == (400, {
        "message": "this server is read-only today\n    fix: come back tomorrow", "type": "invalid_request_error",
        "param": None, "code": "invalid_value"})


def test_the_model_starting_the_users_turn_is_never_streamed(client, gen):
    gen.streamed, gen.answer = "Boil it.\nUser: thanks", "Boil it."  # generate() cuts the final text there
    chunks = events(client.post(URL, json={"messages": ASK, "stream": True}))
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1]) == "Boil it."
