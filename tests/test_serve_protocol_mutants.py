"""The OpenAI protocol pieces of `lima-align serve` (serve_protocol.py) that mutation testing found
unchecked: what a request may carry, which settings it overrides, how stop strings cut the text,
OpenAI's error object and the body-size limit. Pure functions and a bare ASGI app: no model."""

from __future__ import annotations

import json

import anyio
import pytest
from fastapi import HTTPException

from lima_align.decoding import Decoding
from lima_align.errors import LimaError, Problem
from lima_align.records import Message
from lima_align.serve_protocol import (FINISH, BodyLimit, ChatRequest, cut_at_stops, error_response, lone_surrogate,
                                       request_decoding, request_messages, visible_so_far)

ASK = [{"role": "user", "content": "Hi"}]


def problems(**body):
    with pytest.raises(LimaError) as e:
        request_messages(ChatRequest(**body))
    return e.value.problems


# ----------------------------------------------------------------- request_messages


def test_every_unsupported_option_is_reported_at_once():
    assert problems(messages=ASK, n=2, tools=[{"type": "function"}], logprobs=True) == [
        Problem("n", "n=2 is not supported", "send n=1 (or omit it) and make several requests"),
        Problem("tools", "tool calling is not supported by this server", "omit tools"),
        Problem("logprobs", "logprobs are not supported by this server", "omit logprobs"),
    ]


def test_n_must_be_one_not_merely_at_most_one():
    assert problems(messages=ASK, n=0) == [
        Problem("n", "n=0 is not supported", "send n=1 (or omit it) and make several requests")]


def test_empty_content_is_an_empty_turn_not_missing_content():
    assert problems(messages=[{"role": "user", "content": ""}]) == [
        Problem("messages[0].content", "empty user turn", "write the turn or remove the record")]


def test_options_that_are_off_are_accepted():
    assert request_messages(ChatRequest(messages=ASK, n=1, tools=[], logprobs=False)) == [Message("user", "Hi")]


def test_text_parts_are_joined_and_developer_is_the_system_turn():
    req = ChatRequest(messages=[{"role": "developer", "content": "Be brief."},
                                {"role": "user", "content": [{"type": "text", "text": "Hi "},
                                                             {"type": "text", "text": "there"}]}])
    assert request_messages(req) == [Message("system", "Be brief."), Message("user", "Hi there")]


@pytest.mark.parametrize("part", [{"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": 5},
                                  {"type": "text"}])
def test_a_part_that_is_not_text_is_refused_once(part):
    content = [{"type": "text", "text": "Hi"}, part]
    assert problems(messages=[{"role": "user", "content": content}]) == [
        Problem("messages[0].content", "only text content parts are supported",
                'send a string, or parts like {"type": "text", "text": "..."}')]


@pytest.mark.parametrize("message", [{"role": "user"}, {"role": "user", "content": None}])
def test_a_message_without_content_is_refused(message):
    assert problems(messages=[{"role": "system", "content": "S"}, message]) == [
        Problem("messages[1].content", "missing content", "give every message a string 'content'")]


def test_text_with_half_a_surrogate_pair_is_refused_saying_where():
    assert problems(messages=[{"role": "user", "content": "ok"}, {"role": "assistant", "content": "ab\udc01"},
                              {"role": "user", "content": "fine"}], stop=["fine", "x\ud800"]) == [
        Problem("messages[1].content", "not valid Unicode text: a lone UTF-16 surrogate (U+DC01) at character 2",
                "send UTF-8 text (a character beyond U+FFFF is one surrogate pair in JSON, never half of one)"),
        Problem("stop[1]", "not valid Unicode text: a lone UTF-16 surrogate at character 1", "send UTF-8 text"),
    ]
    assert problems(messages=ASK, stop="\ud83d")[0].where == "stop[0]"
    # one stop string is one stop, not a list of its characters
    assert problems(messages=ASK, stop="ab\ud800") == [
        Problem("stop[0]", "not valid Unicode text: a lone UTF-16 surrogate at character 2", "send UTF-8 text")]


def test_every_bad_message_is_reported_not_only_the_first():
    assert problems(messages=[{"role": "user", "content": [{"type": "image_url"}]}, {"role": "assistant"},
                              {"role": "user", "content": "x\udc00"}, {"role": "assistant", "content": None},
                              {"role": "user", "content": [{"type": "text"}]}]) == [
        Problem("messages[0].content", "only text content parts are supported",
                'send a string, or parts like {"type": "text", "text": "..."}'),
        Problem("messages[1].content", "missing content", "give every message a string 'content'"),
        Problem("messages[2].content", "not valid Unicode text: a lone UTF-16 surrogate (U+DC00) at character 1",
                "send UTF-8 text (a character beyond U+FFFF is one surrogate pair in JSON, never half of one)"),
        Problem("messages[3].content", "missing content", "give every message a string 'content'"),
        Problem("messages[4].content", "only text content parts are supported",
                'send a string, or parts like {"type": "text", "text": "..."}'),
    ]


def test_the_turns_are_checked_only_when_everything_else_is_right():
    # check_messages would add "unknown role" here: it is left for the next attempt
    assert [p.where for p in problems(messages=[{"role": "robot", "content": "Hi"}], n=3)] == ["n"]
    assert problems(messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]) == [
        Problem("messages[1]", "a prompt must end with a user turn",
                "drop the trailing assistant turn (it is what the model will generate)")]


def test_lone_surrogate():
    assert lone_surrogate("ab\ud800c") == 2 and lone_surrogate("ok \U0001F600") is None and lone_surrogate("") is None


# ----------------------------------------------------------------- request_decoding


def test_a_request_overrides_only_what_it_sets():
    base = Decoding(100, 0.7, 0.9, 1.2, 0, "all")
    assert request_decoding(ChatRequest(messages=ASK), base) == base
    req = ChatRequest(messages=ASK, temperature=0, top_p=0.5, max_tokens=7, seed=0, repetition_penalty=1.0)
    assert request_decoding(req, Decoding(100, 0.7, 0.9, 1.2, 5, "all")) == Decoding(7, 0.0, 0.5, 1.0, 0, "all")
    assert request_decoding(ChatRequest(messages=ASK, max_tokens=7, max_completion_tokens=3), base).max_new_tokens == 3
    assert request_decoding(ChatRequest(messages=ASK, max_completion_tokens=3), base).max_new_tokens == 3
    assert FINISH == {"eot": "stop", "stop": "stop", "length": "length"}


# ----------------------------------------------------------------- stop strings


@pytest.mark.parametrize("text, stops, cut", [
    ("Boil it. END here", ["END"], ("Boil it. ", True)),
    ("a STOP b END", ["END", "STOP"], ("a ", True)),  # the earliest, whatever the order
    ("ENDING", ["END"], ("", True)),
    ("Boil it. END and END", ["END"], ("Boil it. ", True)),  # the first of a stop's occurrences
    ("Boil it.", ["END", ""], ("Boil it.", False)),  # an empty stop string stops nothing
    ("Boil it.", [], ("Boil it.", False)),
])
def test_cut_at_stops(text, stops, cut):
    assert cut_at_stops(text, stops) == cut


@pytest.mark.parametrize("raw, plain, stops, shown", [
    (" Boil it.\nUser: more", True, [], "Boil it."),
    ("\nUser: more", True, [], ""),  # the model ended its turn at once
    (" Boil it.\nUse", True, [], "Boil it."),  # may still become "\nUser:"
    (" Boil it.\n", True, [], "Boil it."),
    (" Boil it.\nUsers", True, [], "Boil it.\nUsers"),
    ("User: hi", True, [], ""),  # the answer began the user's turn: nothing to show
    ("Ask User: hi", True, [], "Ask User: hi"),  # "User:" is a stop only at the start of a line
    ("Boil it.\nUser: more", False, [], "Boil it.\nUser: more"),  # a template format has no "User:" turns
    ("Boil it.\nUs", False, [], "Boil it.\nUs"),
    ("  Boil it. E", False, ["END"], "Boil it. "),
    ("Boil it. EN", False, ["END", "X"], "Boil it. "),
    ("Boil it. END more", False, ["X", "END"], "Boil it. "),
    ("Boil E it. END", False, ["END"], "Boil E it. "),  # an earlier partial match that did not grow
    ("Boil it. Z", False, ["Z", "it"], "Boil "),  # the earliest stop found
    ("Boil it. E", False, ["E"], "Boil it. "),  # a one-character stop: found, not held back
    ("Boil it.", False, ["", "Q"], "Boil it."),
    ("Boil it.", False, ["it.!"], "Boil "),  # the whole end may begin the stop
    ("END of it", False, ["END"], ""),  # a stop right at the start
    ("Boil END it END", False, ["END"], "Boil "),  # the first occurrence of a stop
])
def test_visible_so_far(raw, plain, stops, shown):
    assert visible_so_far(raw, plain, stops) == shown


# ----------------------------------------------------------------- errors


def test_error_response_is_openais_error_object_in_ascii_json():
    r = error_response(418, "bad \ud800 text", param="stop[0]", code="teapot")
    assert r.status_code == 418 and r.media_type == "application/json"
    assert r.body == b'{"error": {"message": "bad \\ud800 text", "type": "invalid_request_error", ' \
                     b'"param": "stop[0]", "code": "teapot"}}'
    assert json.loads(error_response(500, "x", kind="server_error").body) == {
        "error": {"message": "x", "type": "server_error", "param": None, "code": None}}


# ----------------------------------------------------------------- BodyLimit


def through(limit, chunks, declared=None, kind="http"):
    """Run a request with `chunks` of body through BodyLimit(limit) in front of an app that reads the
    whole body; (what the app read or the HTTPException's status/detail, what was sent back)."""
    read, sent = [], []

    async def inner(scope, receive, send):
        if scope["type"] != "http":
            read.append(scope["type"])
            return
        while True:
            m = await receive()
            read.append(m["body"])
            if not m.get("more_body"):
                return

    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive():
        return messages.pop(0)

    async def send(m):
        sent.append(m)

    headers = [(b"content-type", b"application/json")]
    if declared is not None:
        headers.append((b"content-length", declared))
    scope = {"type": kind, "headers": headers} if kind == "http" else {"type": kind}  # lifespan has no headers
    try:
        anyio.run(BodyLimit(inner, limit), scope, receive, send)
    except HTTPException as e:
        return (e.status_code, e.detail), sent
    return read, sent


TOO_LARGE = ("the request body is over 1,000 bytes (serve --max-body-mib); fix: send a shorter conversation "
             "(the server keeps only the newest turns that fit the context anyway)")


def test_a_declared_length_over_the_limit_is_refused_before_reading():
    read, sent = through(1000, [b"x" * 1001], declared=b"1001")
    assert read == [] and sent[0]["status"] == 413
    assert json.loads(sent[1]["body"]) == {"error": {"message": TOO_LARGE, "type": "invalid_request_error",
                                                     "param": None, "code": "request_too_large"}}


def test_a_body_at_the_limit_gets_through():
    assert through(1000, [b"x" * 1000], declared=b"1000") == ([b"x" * 1000], [])
    assert through(1000, [b"x" * 600, b"x" * 400]) == ([b"x" * 600, b"x" * 400], [])


@pytest.mark.parametrize("declared", [None, b"10", b"many"])  # a length that lies, or is no number
def test_a_body_that_grows_over_the_limit_is_refused_as_it_arrives(declared):
    assert through(1000, [b"x" * 600, b"x" * 401], declared=declared) == ((413, TOO_LARGE), [])


def test_other_connections_pass_untouched():
    assert through(0, [b"x"], kind="lifespan") == (["lifespan"], [])


def test_the_lifespan_protocol_passes_through_both_ways():
    # the app's startup and shutdown run through the middleware: it must hand the app receive and send
    got, sent = [], []

    async def inner(scope, receive, send):
        got.append(await receive())
        await send({"type": "lifespan.startup.complete"})

    async def receive():
        return {"type": "lifespan.startup"}

    async def send(m):
        sent.append(m)

    anyio.run(BodyLimit(inner, 1000), {"type": "lifespan"}, receive, send)
    assert got == [{"type": "lifespan.startup"}] and sent == [{"type": "lifespan.startup.complete"}]


def test_a_client_that_leaves_mid_body_is_passed_on_to_the_app():
    seen = []

    async def inner(scope, receive, send):
        seen.append(await receive())
        seen.append(await receive())

    messages = [{"type": "http.request", "body": b"x" * 10, "more_body": True}, {"type": "http.disconnect"}]

    async def receive():
        return messages.pop(0)

    anyio.run(BodyLimit(inner, 1000), {"type": "http", "headers": []}, receive, None)
    assert seen == [{"type": "http.request", "body": b"x" * 10, "more_body": True}, {"type": "http.disconnect"}]
