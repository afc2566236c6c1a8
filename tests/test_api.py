"""Chat client against a scripted local server: every fault is retried or explained, generation resumes exactly."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from fake_openai import (  # noqa: F401  (fake_openai is a fixture)
    FakeOpenAI, Reply, dropped, fake_openai, http_error, malformed, ok, rate_limited, server_error, slow,
)

from lima_align.api import ApiError, ChatClient, generate_from_api, parse_retry_after, run_all
from lima_align.errors import LimaError
from lima_align.records import Conversation, Message

USER = [{"role": "user", "content": "How do I boil an egg?"}]


def client_for(server: FakeOpenAI, **kw) -> ChatClient:
    # Short backoff keeps the tests fast; the retry logic is the same as with real settings.
    opts = dict(max_retries=3, timeout_s=5.0, backoff_s=0.01, max_backoff_s=0.05)
    return ChatClient(server.base_url, "fake-model", **{**opts, **kw})


def chat(client: ChatClient, messages=USER, **kw):
    async def go():
        async with client:
            return await client.chat(messages, max_tokens=32, temperature=0.0, **kw)
    return asyncio.run(go())


def test_answer_usage_and_request_body(fake_openai, monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "sk-test")
    c = client_for(fake_openai, api_key_env="FAKE_KEY")
    r = chat(c, seed=7)
    assert r.text == "echo: How do I boil an egg?" and r.finish_reason == "stop"
    assert (r.prompt_tokens, r.completion_tokens) == (6, 7)  # the fake counts words
    assert c.usage == {"requests": 1, "prompt_tokens": 6, "completion_tokens": 7, "retries": 0, "errors": 0}
    sent = fake_openai.log[0]
    assert sent["model"] == "fake-model" and sent["seed"] == 7 and sent["max_tokens"] == 32
    assert fake_openai.headers[0]["authorization"] == "Bearer sk-test"


def test_missing_key_sends_empty_for_local_servers(fake_openai, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    chat(client_for(fake_openai, api_key_env="NO_SUCH_KEY"))
    assert fake_openai.headers[0]["authorization"] == "Bearer EMPTY"
    assert "seed" not in fake_openai.log[0]


def test_429_waits_for_retry_after(fake_openai):
    fake_openai.queue(rate_limited("1"))
    c = client_for(fake_openai)
    t0 = time.monotonic()
    r = chat(c)
    assert time.monotonic() - t0 >= 1.0
    assert r.text.startswith("echo:") and fake_openai.requests == 2 and c.usage["retries"] == 1


@pytest.mark.parametrize("fault", [server_error(500), server_error(503), malformed(), dropped()],
                         ids=["500", "503", "malformed-json", "dropped-connection"])
def test_transient_faults_are_retried(fake_openai, fault):
    fake_openai.queue(fault, fault)
    c = client_for(fake_openai)
    assert chat(c).text == "echo: How do I boil an egg?"
    assert fake_openai.requests == 3 and c.usage["retries"] == 2 and c.usage["errors"] == 0


def test_timeout_is_retried(fake_openai):
    fake_openai.queue(slow(3.0))
    c = client_for(fake_openai, timeout_s=0.3)
    t0 = time.monotonic()
    assert chat(c).text.startswith("echo:")
    assert time.monotonic() - t0 < 2.0 and fake_openai.requests == 2


def test_401_fails_at_once_naming_the_env_var(fake_openai, monkeypatch):
    monkeypatch.delenv("MY_JUDGE_KEY", raising=False)
    fake_openai.queue(http_error(401, "Incorrect API key provided"))
    c = client_for(fake_openai, api_key_env="MY_JUDGE_KEY")
    with pytest.raises(ApiError) as e:
        chat(c)
    msg = str(e.value)
    assert "MY_JUDGE_KEY" in msg and "Incorrect API key provided" in msg and "401" in msg
    assert fake_openai.base_url in msg
    assert e.value.status == 401 and e.value.affects_all
    assert fake_openai.requests == 1 and c.usage["errors"] == 1


def test_400_is_not_retried_and_keeps_the_server_message(fake_openai):
    fake_openai.queue(http_error(400, "max_tokens is too large: this model's maximum context length is 8192"))
    with pytest.raises(ApiError, match="maximum context length") as e:
        chat(client_for(fake_openai))
    assert not e.value.affects_all and fake_openai.requests == 1


def test_retries_exhausted_names_endpoint_and_last_error(fake_openai):
    fake_openai.respond = lambda req: server_error(502)
    c = client_for(fake_openai, max_retries=2)
    with pytest.raises(ApiError, match="3 attempts") as e:
        chat(c)
    assert "HTTP 502" in str(e.value) and e.value.status == 502 and fake_openai.requests == 3


def test_connection_refused_is_an_api_error():
    with FakeOpenAI() as server:
        url = server.base_url  # the port is free again once the server is closed
    c = ChatClient(url, "m", max_retries=1, backoff_s=0.01)
    with pytest.raises(ApiError, match="connection failed"):
        chat(c)


def test_a_port_nobody_listens_on_fails_after_a_few_attempts_not_a_minute():
    """Six retries with backoff up to 32 s spent about a minute on a wrong port before failing."""
    with FakeOpenAI() as server:
        url = server.base_url
    c = ChatClient(url, "m", backoff_s=0.01)  # max_retries 6, as the judge runs
    with pytest.raises(ApiError) as e:
        chat(c)
    assert c.usage["requests"] == 3 and e.value.affects_all  # the other prompts would fail the same way
    msg = str(e.value)
    assert msg.startswith(f"{url}/chat/completions: cannot connect") and "lima-align serve" in msg and "--api-base" in msg


def test_an_endpoint_that_answered_before_gets_every_retry():
    """A refused connection after the server has answered is a restart, not a wrong address."""
    with FakeOpenAI() as server:
        c = ChatClient(server.base_url, "m", max_retries=4, backoff_s=0.01, max_backoff_s=0.05)
        chat(c)
    with pytest.raises(ApiError) as e:
        chat(c)
    assert c.usage["requests"] == 1 + 5 and not e.value.affects_all and "5 attempts" in str(e.value)


def test_concurrency_limit_is_respected(fake_openai):
    fake_openai.latency_s = 0.2
    c = client_for(fake_openai, max_concurrency=3)

    async def go():
        async with c:
            return await run_all([c.chat([{"role": "user", "content": f"q{i}"}], max_tokens=8, temperature=0)
                                  for i in range(12)], "test")
    results = asyncio.run(go())
    assert [r.text for r in results] == [f"echo: q{i}" for i in range(12)]  # input order
    assert fake_openai.max_in_flight == 3 and fake_openai.requests == 12


def test_run_all_returns_failures_in_place(fake_openai):
    fake_openai.respond = lambda req: http_error(400, "bad") if "bad" in req["messages"][0]["content"] else "fine"
    c = client_for(fake_openai)

    async def go():
        async with c:
            return await run_all([c.chat([{"role": "user", "content": t}], max_tokens=8, temperature=0)
                                  for t in ("good", "bad", "good")], "test")
    results = asyncio.run(go())
    assert isinstance(results[1], ApiError) and [results[0].text, results[2].text] == ["fine", "fine"]


def test_parse_retry_after_seconds_and_http_date():
    assert parse_retry_after(httpx.Headers({"Retry-After": "7"})) == 7.0
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "250"})) == 0.25
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < parse_retry_after(httpx.Headers({"Retry-After": date})) <= 30
    assert parse_retry_after(httpx.Headers({})) is None
    assert parse_retry_after(httpx.Headers({"Retry-After": "soon"})) is None


def test_retry_after_is_capped(fake_openai):
    fake_openai.queue(rate_limited("3600"))
    c = client_for(fake_openai, max_retry_after_s=0.2)
    t0 = time.monotonic()
    chat(c)
    assert time.monotonic() - t0 < 2.0 and fake_openai.requests == 2


# ----------------------------------------------------------------- generate_from_api


def prompts(n: int, fail: str = "") -> list[Conversation]:
    return [Conversation(f"p{i}", [Message("user", f"question {i}{fail if i == 2 else ''}")]) for i in range(n)]


def decoding():
    from lima_align.generate import Decoding

    return Decoding(max_new_tokens=16, temperature=0.7, top_p=0.9, repetition_penalty=1.2, seed=1)


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_generate_writes_each_prompt_once_and_rerun_makes_no_requests(fake_openai, tmp_path):
    out = tmp_path / "gen.jsonl"
    fake_openai.respond = lambda req: ok("  cut short  ", "length") if "3" in req["messages"][-1]["content"] else "done"
    generate_from_api(client_for(fake_openai), prompts(6), out, decoding(), "fake-model", log=lambda s: None)
    recs = read(out)
    assert sorted(r["prompt_id"] for r in recs) == [f"p{i}" for i in range(6)]
    by = {r["prompt_id"]: r for r in recs}
    assert by["p0"]["output"] == "done" and by["p0"]["finish_reason"] == "eot"
    assert by["p3"]["output"] == "cut short" and by["p3"]["finish_reason"] == "length"
    assert by["p0"]["tokens"] == {"prompt": 2, "output": 1} and by["p0"]["model"] == "fake-model"
    assert by["p0"]["messages"] == [{"role": "user", "content": "question 0"}]
    assert by["p0"]["decoding"]["repetition_penalty"] is None and by["p0"]["decoding"]["top_p"] == 0.9
    assert fake_openai.log[0]["top_p"] == 0.9 and fake_openai.log[0]["seed"] == 1
    assert fake_openai.requests == 6

    client = client_for(fake_openai)
    generate_from_api(client, prompts(6), out, decoding(), "fake-model", log=lambda s: None)
    assert fake_openai.requests == 6 and client.usage["requests"] == 0 and len(read(out)) == 6


def test_permanently_failing_prompt_is_reported_not_written(fake_openai, tmp_path):
    out = tmp_path / "gen.jsonl"
    fake_openai.respond = lambda req: server_error(500) if "FAIL" in req["messages"][-1]["content"] else "fine"
    with pytest.raises(LimaError) as e:
        generate_from_api(client_for(fake_openai, max_retries=2), prompts(5, fail="FAIL"), out, decoding(), "m",
                          log=lambda s: None)
    assert "1 of 5 prompts failed" in str(e.value) and "'p2'" in str(e.value) and "HTTP 500" in str(e.value)
    recs = read(out)
    assert sorted(r["prompt_id"] for r in recs) == ["p0", "p1", "p3", "p4"]
    assert all(r["output"] == "fine" for r in recs)

    fake_openai.reset()
    fake_openai.respond = lambda req: "fixed"
    generate_from_api(client_for(fake_openai), prompts(5, fail="FAIL"), out, decoding(), "m", log=lambda s: None)
    assert fake_openai.requests == 1 and {r["prompt_id"]: r["output"] for r in read(out)}["p2"] == "fixed"


def test_bad_key_stops_the_whole_run(fake_openai, tmp_path):
    fake_openai.respond = lambda req: http_error(401, "invalid key")
    fake_openai.latency_s = 0.05
    with pytest.raises(ApiError, match="OPENAI_API_KEY"):
        generate_from_api(client_for(fake_openai, max_concurrency=2), prompts(40), tmp_path / "g.jsonl", decoding(),
                          "m", log=lambda s: None)
    assert fake_openai.requests < 40  # cancelled, not 40 identical failures


def test_half_written_tail_is_repaired_and_resumed(fake_openai, tmp_path):
    out = tmp_path / "gen.jsonl"
    generate_from_api(client_for(fake_openai), prompts(2), out, decoding(), "m", log=lambda s: None)
    with out.open("a") as f:
        f.write('{"id": "m:p2", "prompt_id": "p2", "model": "m", "outp')  # killed mid-write
    fake_openai.reset()
    generate_from_api(client_for(fake_openai), prompts(5), out, decoding(), "m", log=lambda s: None)
    recs = read(out)  # every line parses
    assert {r["prompt_id"] for r in recs[:2]} == {"p0", "p1"}  # the complete lines are kept
    assert sorted(r["prompt_id"] for r in recs) == [f"p{i}" for i in range(5)]
    assert fake_openai.requests == 3


def test_output_of_another_model_is_refused(fake_openai, tmp_path):
    out = tmp_path / "gen.jsonl"
    generate_from_api(client_for(fake_openai), prompts(1), out, decoding(), "model-a", log=lambda s: None)
    with pytest.raises(LimaError, match="model-a"):
        generate_from_api(client_for(fake_openai), prompts(1), out, decoding(), "model-b", log=lambda s: None)


def test_another_models_file_is_refused_before_any_request(fake_openai, tmp_path):
    out = tmp_path / "gen.jsonl"
    generate_from_api(client_for(fake_openai), prompts(2), out, decoding(), "model-a", log=lambda s: None)
    before = out.read_bytes()
    fake_openai.reset()
    with pytest.raises(LimaError) as e:  # even with a prompt model-a never answered
        generate_from_api(client_for(fake_openai), prompts(3), out, decoding(), "model-b", log=lambda s: None)
    p = e.value.problems[0]
    assert p.where == f"{out}:1" and "'model-a'" in p.what and "--output" in p.fix
    assert fake_openai.requests == 0 and out.read_bytes() == before


def test_api_records_take_the_same_id_rule_as_local_ones(fake_openai, tmp_path):
    out = tmp_path / "gen.jsonl"
    generate_from_api(client_for(fake_openai), prompts(1), out, decoding(), "org/model-a", log=lambda s: None)
    (rec,) = read(out)
    assert rec["id"] == "model-a:p0" and rec["model"] == "org/model-a" and rec["meta"]["api_model"]
