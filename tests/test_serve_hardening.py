"""`lima-align serve` under hostile or careless clients: huge bodies and histories, clients that
leave, text no tokenizer takes, out-of-range seeds, unexpected failures; and per-request decoding
settings that must really reach the sampler."""

from __future__ import annotations

import copy
import json
import random
import threading
import time
from types import SimpleNamespace

import httpx
import pytest

from lima_align.config import TurnsConfig
from lima_align.generate import trim_history
from lima_align.records import Message
from lima_align.serve import create_app
from lima_align.serve_protocol import ChatRequest
from lima_align.turns import TurnFormat
from test_serve import ASK, NAME, running, slow_and_endless, tiny_generator

URL = "/v1/chat/completions"


@pytest.fixture(scope="module")
def gen(tiny_llama):
    return tiny_generator(tiny_llama)


@pytest.fixture(scope="module")
def served(gen):
    app = create_app(gen, NAME)
    with running(app) as url:
        yield url, gen, app.state.server


def post(url, body, timeout=30):
    return httpx.post(url + URL, json=body, timeout=timeout)


def old_trim_history(gen, messages, reserve):
    """The trimming serve did before: render the whole prompt again after every dropped pair."""
    dropped = 0
    system = [m for m in messages[:1] if m.role == "system"]
    body = messages[len(system):]
    while len(body) > 1 and len(gen.prompt_ids(system + body)) + reserve > gen.context:
        body = body[2:]
        dropped += 2
    return system + body, dropped


def conversation(rng, turns, system):
    words = "the quick brown fox jumps over lazy dog egg boil water gravity poem sea".split()
    text = lambda: " ".join(rng.choice(words) for _ in range(rng.choice([1, 2, 5, 20, 60])))  # noqa: E731
    messages = [Message("system", text())] if system else []
    return messages + [Message("user" if i % 2 == 0 else "assistant", text()) for i in range(turns)]


# ----------------------------------------------------------------- trimming


@pytest.mark.parametrize("template", [False, True])
def test_trimming_drops_the_same_turns_as_dropping_pairs_one_by_one(gen, template):
    tok = copy.deepcopy(gen.tok)
    if template:  # a chat template that strips whitespace: a turn can add fewer tokens than its text has
        tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] | trim }}</s>{% endfor %}"
                             "{% if add_generation_prompt %}<assistant>{% endif %}")
    fmt = TurnFormat(tok, TurnsConfig(format="template" if template else "plain", eot="eos"), for_training=False)
    g = SimpleNamespace(tok=tok, prompt_ids=fmt.encode_prompt, context=0)  # what trimming uses of a Generator
    rng = random.Random(0)
    cases = 0
    for _ in range(60):
        messages = conversation(rng, rng.choice([1, 3, 5, 9, 21, 41]), system=rng.random() < 0.5)
        if template and rng.random() < 0.5:
            messages[0] = Message(messages[0].role, " " * 400 + messages[0].content)
        g.context = rng.choice([64, 128, 256, 512])
        reserve = rng.choice([0, 16, 100])
        new, old = trim_history(g, messages, reserve), old_trim_history(g, messages, reserve)
        assert new == old, (g.context, reserve, len(messages))
        cases += old[1] > 0
    assert cases > 20  # most cases really trimmed something


def test_trimming_renders_the_prompt_a_few_times_not_once_per_dropped_pair(gen, monkeypatch):
    messages = conversation(random.Random(1), 4001, system=True)
    renders = [0]
    real = gen.fmt.encode_prompt

    def counted(m):
        renders[0] += 1
        return real(m)

    monkeypatch.setattr(gen.fmt, "encode_prompt", counted)
    kept, dropped = trim_history(gen, messages, reserve=24)
    assert dropped > 3900 and kept[0].role == "system" and kept[-1] == messages[-1]
    assert renders[0] < 30  # dropping pairs one by one rendered it ~2,000 times


def test_preparing_a_request_does_not_wait_for_the_model(served):
    _, gen, server = served
    long = conversation(random.Random(2), 401, system=False)
    req = ChatRequest(messages=[m.to_dict() for m in long], max_tokens=4)
    done = []
    with server.lock:  # a generation is running
        worker = threading.Thread(target=lambda: done.append(server.prepare(req)), daemon=True)
        worker.start()
        worker.join(timeout=20)
        assert done, "prepare waited for the model's lock"
    assert done[0].trimmed > 0 and len(done[0].ids) < gen.context


def test_the_prompt_is_not_tokenised_again_under_the_lock(served, monkeypatch):
    url, gen, server = served
    under_lock = []
    real = gen.fmt.encode_prompt
    monkeypatch.setattr(gen.fmt, "encode_prompt", lambda m: under_lock.append(server.lock.locked()) or real(m))
    assert post(url, {"messages": ASK, "max_tokens": 2}).status_code == 200
    assert under_lock and not any(under_lock)


# ----------------------------------------------------------------- bodies


def chunked(data, size=1 << 16):
    for i in range(0, len(data), size):
        yield data[i:i + size]


@pytest.mark.parametrize("declared", [True, False])
def test_a_body_over_the_limit_gets_413_in_openai_shape(served, declared):
    url = served[0]
    big = json.dumps({"messages": [{"role": "user", "content": "x" * (8 * 2 ** 20)}]}).encode()
    content = big if declared else chunked(big)  # without a length up front, counted as it arrives
    r = httpx.post(url + URL, content=content, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 413
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == "request_too_large"
    assert "--max-body-mib" in err["message"]


def test_a_40000_turn_history_is_served_from_its_newest_turns(served):
    url, gen, _ = served
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"} for i in range(40001)]
    r = post(url, {"messages": messages, "max_tokens": 2})
    assert r.status_code == 200, r.text
    assert 39000 < int(r.headers["x-lima-trimmed-turns"]) < 40001
    assert r.json()["usage"]["prompt_tokens"] <= gen.context


def test_a_message_that_cannot_fit_is_refused_before_the_format_renders_it(served, monkeypatch):
    url, gen, _ = served
    rendered = []
    real = gen.fmt.encode_prompt
    monkeypatch.setattr(gen.fmt, "encode_prompt", lambda m: rendered.append(m) or real(m))
    r = post(url, {"messages": [{"role": "user", "content": "boil an egg " * 3000}]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert rendered == []  # the plain format would have kept its tokens for good


def test_max_body_mib_reaches_the_server(tiny_llama, monkeypatch):
    from lima_align import cli, serve

    seen = {}
    monkeypatch.setattr(serve, "serve", lambda *a, **kw: seen.update(kw))
    assert cli.main(["serve", "--model", str(tiny_llama), "--max-body-mib", "0.5"]) == 0
    assert seen["max_body_mib"] == 0.5


@pytest.mark.parametrize("size", ["0", "-1", "nan", "inf"])
def test_a_max_body_mib_that_is_no_size_is_refused_before_the_model_loads(tiny_llama, capsys, monkeypatch, size):
    import uvicorn

    from lima_align import cli

    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: None)  # were the size let through, no server starts
    assert cli.main(["serve", "--model", str(tiny_llama), "--max-body-mib", size]) == 2
    err = capsys.readouterr().err
    assert "serve --max-body-mib" in err and "fix: give a positive size" in err


# ----------------------------------------------------------------- bad text, bad numbers, failures


@pytest.mark.parametrize("raw, param", [
    (b'{"messages": [{"role": "user", "content": "hi \\ud800 there"}]}', "messages[0].content"),
    (b'{"messages": [{"role": "user", "content": [{"type": "text", "text": "\\udfff"}]}]}', "messages[0].content"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "stop": "\\ud83d"}', "stop[0]"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "seed": 9223372036854775808}', "seed"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "seed": -1}', "seed"),
    (b'{"messages": [{"role": "user", "content": "hi"}], "repetition_penalty": Infinity}', "repetition_penalty"),
])
def test_text_no_tokenizer_takes_and_out_of_range_numbers_are_400s(served, raw, param):
    r = httpx.post(served[0] + URL, content=raw, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param


def test_the_largest_seed_is_accepted(served):
    assert post(served[0], {"messages": ASK, "max_tokens": 2, "seed": 2 ** 63 - 1}).status_code == 200


def test_an_unexpected_failure_is_a_500_in_openai_shape(served, monkeypatch):
    url, gen, _ = served

    def broken(*args, **kwargs):
        raise RuntimeError("the accelerator caught fire")

    monkeypatch.setattr(gen.model, "generate", broken)
    r = post(url, {"messages": ASK, "max_tokens": 2})
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert err["type"] == "server_error" and "the accelerator caught fire" in err["message"]


# ----------------------------------------------------------------- clients that leave


def wait_until(condition, what, limit_s=10):
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_while_waiting_gives_up_its_place(served, monkeypatch, stream):
    url, gen, server = served
    started, release, calls = threading.Event(), threading.Event(), []
    real = gen.model.generate

    def held(*args, **kwargs):  # the first generation holds the model until told to finish
        calls.append(1)
        started.set()
        release.wait(20)
        return real(*args, **kwargs)

    monkeypatch.setattr(gen.model, "generate", held)
    first = threading.Thread(target=lambda: post(url, {"messages": ASK, "max_tokens": 2}), daemon=True)
    first.start()
    assert started.wait(20)
    health = lambda: httpx.get(url + "/health").json()  # noqa: E731
    with pytest.raises(httpx.ReadTimeout):  # the second client gives up while it waits its turn
        body = {"messages": ASK, "max_tokens": 2, "stream": stream}
        with httpx.stream("POST", url + URL, json=body, timeout=httpx.Timeout(30, read=1)) as r:
            for line in r.iter_lines():
                assert "content" not in line or '"content": ""' in line  # the role chunk at most
    wait_until(lambda: health()["waiting"] == 0, "the request of a client that left kept waiting")
    release.set()
    first.join(20)
    wait_until(lambda: not health()["busy"], "the model stayed busy")
    assert calls == [1]  # the second request never ran


def test_a_client_that_leaves_a_plain_request_stops_its_generation(served):
    url, gen, _ = served
    with slow_and_endless(gen) as calls:
        with pytest.raises(httpx.ReadTimeout):
            post(url, {"messages": ASK, "max_tokens": 400}, timeout=httpx.Timeout(30, read=0.5))
        wait_until(lambda: not httpx.get(url + "/health").json()["busy"], "generation went on after the client left")
    assert calls[0] < 150  # far from the 400 tokens asked for


# ----------------------------------------------------------------- per-request decoding


def answer(url, **kw):
    r = post(url, {"messages": ASK, "max_tokens": 24, **kw})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def test_the_requests_seed_reaches_the_sampler(served):
    url = served[0]
    one = answer(url, temperature=1.0, top_p=1.0, seed=1)
    assert answer(url, temperature=1.0, top_p=1.0, seed=1) == one
    assert answer(url, temperature=1.0, top_p=1.0, seed=2) != one


def test_the_requests_temperature_and_top_p_reach_the_sampler(served):
    url = served[0]
    greedy = answer(url, temperature=0.0, seed=5)
    assert answer(url, temperature=1.5, top_p=1.0, seed=5) != greedy
    assert answer(url, temperature=1.5, top_p=1e-6, seed=5) == greedy  # only the likeliest token is left
