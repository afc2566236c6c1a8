"""`lima-align serve`: the official OpenAI client against a real uvicorn server on loopback."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import uvicorn

from lima_align.config import ModelConfig, TurnsConfig
from lima_align.generate import Decoding, Generator, load_for_generation
from lima_align.serve import create_app, visible_so_far

NAME = "tiny-llama-test"
ASK = [{"role": "user", "content": "How do I boil an egg?"}]


@contextmanager
def running(app):
    """Base url of `app` served by uvicorn in a background thread; shut down cleanly afterwards."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]  # port 0: the OS picked a free one, no race
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    assert not thread.is_alive(), "server did not shut down"


def tiny_generator(path, max_new_tokens=24):
    lm, fmt = load_for_generation(ModelConfig(name=str(path), dtype="float32"), TurnsConfig(format="plain"))
    return Generator(lm, fmt, Decoding(max_new_tokens=max_new_tokens))


@pytest.fixture(scope="module")
def served(tiny_llama):
    """(base url, generator) of a server running in a background thread."""
    gen = tiny_generator(tiny_llama)
    with running(create_app(gen, NAME)) as url:
        yield url, gen


@pytest.fixture
def client(served):
    return openai.OpenAI(base_url=served[0] + "/v1", api_key="EMPTY", max_retries=0, timeout=30)


def test_completion_returns_text_usage_and_finish_reason(client):
    r = client.chat.completions.create(model=NAME, messages=ASK, temperature=0, seed=1)
    choice = r.choices[0]
    assert r.object == "chat.completion" and r.model == NAME and r.id.startswith("chatcmpl-")
    assert choice.message.role == "assistant" and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 5 and 0 < r.usage.completion_tokens <= 24
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_unknown_model_name_is_served_by_our_model(client):
    r = client.chat.completions.create(model="gpt-4o", messages=ASK, max_tokens=2)
    assert r.model == NAME


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_stream_concatenates_to_the_non_streamed_text(client, temperature):
    kw = dict(model=NAME, messages=ASK, temperature=temperature, seed=7, max_tokens=24)
    whole = client.chat.completions.create(**kw)
    chunks = list(client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(chunks) > 3  # it really streamed
    assert text == whole.choices[0].message.content
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_stream_ends_with_done(served):
    body = {"model": NAME, "messages": ASK, "max_tokens": 3, "stream": True}
    r = httpx.post(served[0] + "/v1/chat/completions", json=body, timeout=30)
    assert r.headers["content-type"].startswith("text/event-stream")
    lines = [line for line in r.text.splitlines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]" and '"finish_reason": "length"' in lines[-2]


def test_models_lists_the_model(client, served):
    assert [m.id for m in client.models.list().data] == [NAME]
    assert httpx.get(served[0] + "/health").json()["status"] == "ok"


@pytest.mark.parametrize("messages, where, hint", [
    ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], "messages[1]",
     "drop the trailing assistant turn"),
    ([{"role": "robot", "content": "Hi"}], "messages[0].role", "use one of system, user, assistant"),
    ([], "messages", "give at least one user turn"),
])
def test_bad_requests_get_400_saying_what_to_fix(client, messages, where, hint):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=NAME, messages=messages)
    err = e.value.body
    assert e.value.status_code == 400 and err["type"] == "invalid_request_error" and err["param"] == where
    assert where in err["message"] and hint in err["message"]


def test_malformed_fields_get_400_in_openai_shape(served):
    r = httpx.post(served[0] + "/v1/chat/completions", json={"messages": ASK, "temperature": -1, "n": 2})
    assert r.status_code == 400
    assert "temperature" in r.json()["error"]["message"]
    r = httpx.post(served[0] + "/v1/chat/completions", json={"messages": ASK, "n": 2})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_is_honoured(client, field):
    r = client.chat.completions.create(model=NAME, messages=ASK, temperature=1.0, seed=3, **{field: 4})
    assert r.usage.completion_tokens <= 4
    if r.usage.completion_tokens == 4:
        assert r.choices[0].finish_reason == "length"


def test_stop_strings_cut_the_text(client):
    whole = client.chat.completions.create(model=NAME, messages=ASK, temperature=0).choices[0].message.content
    stop = whole[len(whole) // 2:len(whole) // 2 + 2]
    r = client.chat.completions.create(model=NAME, messages=ASK, temperature=0, stop=[stop])
    assert r.choices[0].message.content == whole[:whole.find(stop)] and r.choices[0].finish_reason == "stop"


def test_long_conversation_is_trimmed_and_says_so(served):
    long = "The quick brown fox jumps over the lazy dog. " * 12
    messages = [{"role": "system", "content": "Be brief."}]
    for i in range(8):
        messages += [{"role": "user", "content": f"{i} {long}"}, {"role": "assistant", "content": long}]
    messages.append({"role": "user", "content": "How do I boil an egg?"})
    r = httpx.post(served[0] + "/v1/chat/completions", json={"messages": messages, "max_tokens": 4}, timeout=30)
    assert r.status_code == 200
    assert int(r.headers["x-lima-trimmed-turns"]) >= 2
    assert r.json()["usage"]["prompt_tokens"] <= served[1].context
    short = httpx.post(served[0] + "/v1/chat/completions", json={"messages": ASK, "max_tokens": 2}, timeout=30)
    assert "x-lima-trimmed-turns" not in short.headers
    huge = [{"role": "user", "content": long * 10}]
    r = httpx.post(served[0] + "/v1/chat/completions", json={"messages": huge}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


def test_concurrent_requests_both_succeed_one_generation_at_a_time(client, served, monkeypatch):
    model = served[1].model
    inner, active, peak, guard = model.generate, [0], [0], threading.Lock()

    def tracked(*args, **kwargs):
        with guard:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            time.sleep(0.2)  # long enough for the other request to arrive while this one runs
            return inner(*args, **kwargs)
        finally:
            with guard:
                active[0] -= 1

    monkeypatch.setattr(model, "generate", tracked)
    kw = dict(model=NAME, messages=ASK, max_tokens=6)
    with ThreadPoolExecutor(2) as pool:
        plain = pool.submit(lambda: client.chat.completions.create(**kw))
        streamed = pool.submit(lambda: list(client.chat.completions.create(**kw, stream=True)))
        assert plain.result().choices[0].message.content is not None
        assert streamed.result()[-1].choices[0].finish_reason in ("stop", "length")
    assert peak[0] == 1


@contextmanager
def slow_and_endless(gen):
    """While inside: the model never ends its turn by itself and takes 20 ms a token; yields the token count."""
    calls = [0]

    def hook(module, args, output):
        calls[0] += 1
        time.sleep(0.02)
        output[..., gen.fmt.stop_ids] -= 1e4
        return output

    handle = gen.model.get_output_embeddings().register_forward_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


def test_a_client_that_disconnects_stops_its_generation(served):
    url, gen = served
    with slow_and_endless(gen) as calls:
        body = {"messages": ASK, "max_tokens": 400, "stream": True, "temperature": 1.0}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as r:
            data = (line for line in r.iter_lines() if line.startswith("data: "))
            next(data), next(data)  # the role chunk, then text: the generation is running
        deadline = time.monotonic() + 5
        while httpx.get(url + "/health").json()["busy"]:
            assert time.monotonic() < deadline, "generation went on after the client left"
            time.sleep(0.02)
    assert calls[0] < 100  # far from the 400 tokens asked for


def test_streamed_text_never_shows_what_the_final_text_cuts():
    # plain format: a "\nUser:" the model starts ends its answer; it must not leak while half-written
    assert visible_so_far(" Boil it.\nUs", True, []) == "Boil it."
    assert visible_so_far(" Boil it.\nUser: and", True, []) == "Boil it."
    assert visible_so_far(" Boil it.\nUsually", True, []) == "Boil it.\nUsually"
    assert visible_so_far("Boil it. END", False, ["END"]) == "Boil it. "  # as cut_at_stops will cut it
    assert visible_so_far("Boil it. EN", False, ["END"]) == "Boil it. "
    assert visible_so_far("Boil it.  ", False, []) == "Boil it."
