"""What the annotation app sets up and its helpers do, as mutation testing (benchmarks/mutation.py app) found
unchecked: the session cookie, the upload limits per path, the static files, the header every page shows,
the worker factory's settings, a dialogue's turn numbers and model settings, and a review's edits."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest
from fake_openai import fake_openai, rate_limited  # noqa: F401 - fixture
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from test_annotate_app import PW, cheap_hashes, person  # noqa: F401 - cheap_hashes: autouse fixture

from lima_align.annotate import accounts, chats, db, sessions, studies
from lima_align.annotate.app import create_app, from_environment
from lima_align.annotate.client import write_generations


@pytest.fixture
def site(tmp_path: Path):
    """An admin, an annotator (alice) and a stranger (bob) to a pairwise study."""
    app = create_app(f"sqlite:///{tmp_path / 'study.db'}")
    engine = app.state.engine
    accounts.create_user(engine, "root", PW, "admin")
    uids = {name: accounts.create_user(engine, name, PW, "annotator") for name in ("alice", "bob")}
    a = write_generations(tmp_path / "a.jsonl", "m1", 2)
    b = write_generations(tmp_path / "b.jsonl", "m2", 2)
    sid = studies.create_study(engine, "duel", "pairwise", a=a, b=b)
    studies.add_member(engine, sid, uids["alice"])
    yield {"app": app, "engine": engine, "sid": sid, "uids": uids, "tmp": tmp_path}
    engine.dispose()


def message(page: str) -> str:
    """The message an error page shows, unescaped."""
    start = page.index('<p class="message">') + len('<p class="message">')
    return html.unescape(page[start:page.index("</p>", start)])


# ----------------------------------------------------------------- what create_app sets up


def test_the_session_cookie_is_named_signed_for_fourteen_days_httponly_and_lax(site):
    cookie = TestClient(site["app"]).get("/login").headers["set-cookie"]
    assert cookie.startswith("lima_session=")
    assert f"Max-Age={sessions.SESSION_S};" in cookie and sessions.SESSION_S == 14 * 86400
    assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()


def test_the_session_cookie_is_signed_with_the_key_kept_in_the_database(site):
    from itsdangerous import BadSignature, TimestampSigner

    cookie = TestClient(site["app"]).get("/login").cookies["lima_session"]
    TimestampSigner(db.secret_key(site["engine"])).unsign(cookie)  # raises BadSignature if signed otherwise
    with pytest.raises(BadSignature):
        TimestampSigner("None").unsign(cookie)


def test_there_are_no_api_docs_to_browse(site):
    client = TestClient(site["app"])
    for path in ("/openapi.json", "/docs", "/redoc"):
        r = client.get(path)
        assert r.status_code == 404 and message(r.text) == "There is no such page."


def test_the_keyboard_script_and_style_sheet_are_served(site):
    client = TestClient(site["app"])
    for name, kind in (("keys.js", "javascript"), ("style.css", "text/css")):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"] and r.content
    assert client.get("/static/no-such-file.js").status_code == 404


def test_uploads_may_be_larger_than_forms_but_not_unbounded(tmp_path):
    app = create_app(f"sqlite:///{tmp_path / 'limits.db'}", max_body=1000, max_upload=10_000)
    client = TestClient(app, follow_redirects=False)
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert client.post("/login", content=b"x" * 2000, headers=form).status_code == 413
    assert client.post("/s/1/vote", content=b"x" * 2000, headers=form).status_code == 413
    for path in ("/admin/studies", "/admin/s/1/judges"):  # over the form limit, under the upload limit
        r = client.post(path, content=b"x" * 2000, headers=form)
        assert r.status_code == 403 and "did not come from this site" in r.text  # read, then refused: no token
        assert client.post(path, content=b"x" * 20_000, headers=form).status_code == 413
    app.state.engine.dispose()


def test_every_page_shows_who_is_logged_in_with_a_logout_button(site):
    alice = person(site, "alice")
    for path in ("/", f"/s/{site['sid']}"):
        page = alice.http.get(path).text
        assert "alice (annotator)" in page and 'action="/logout"' in page and 'href="/admin"' not in page
    root = person(site, "root")
    for path in ("/admin", f"/admin/s/{site['sid']}"):
        page = root.http.get(path).text
        assert "root (admin)" in page and 'href="/admin">Dashboard' in page
    assert "(annotator)" not in TestClient(site["app"]).get("/login").text  # nobody logged in: no header


def test_a_study_the_annotator_was_not_invited_to_says_so(site):
    bob = person(site, "bob")
    r = bob.http.get(f"/s/{site['sid']}")
    assert r.status_code == 403 and message(r.text) == "You are not an annotator of this study."
    r = bob.vote(site["sid"], 1, "A")
    assert r.status_code == 403 and message(r.text) == "You are not an annotator of this study."


def test_the_workers_app_takes_every_setting_from_the_environment(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'workers.db'}"
    monkeypatch.setenv("LIMA_ALIGN_ANNOTATE_SERVE", json.dumps(
        {"db": url, "secure_cookies": True, "max_body": 1000, "sqlite_sync": "normal"}))
    app = from_environment()
    client = TestClient(app)
    assert "secure" in client.get("/login").headers["set-cookie"].lower()
    big = client.post("/login", content=b"x" * 2000, headers={"content-type": "application/x-www-form-urlencoded"})
    assert big.status_code == 413
    with app.state.engine.connect() as c:
        assert c.execute(text("PRAGMA synchronous")).scalar_one() == 1  # NORMAL (FULL is 2)
    app.state.engine.dispose()
    for sync, level in (("normal", 1), ("full", 2)):
        app = create_app(url, sqlite_sync=sync)
        with app.state.engine.connect() as c:
            assert c.execute(text("PRAGMA synchronous")).scalar_one() == level
        app.state.engine.dispose()


# ----------------------------------------------------------------- dialogue studies


def test_each_assistant_reply_is_rated_by_its_own_turn_number(site, fake_openai):  # noqa: F811
    engine, alice_id = site["engine"], site["uids"]["alice"]
    sid = studies.create_study(engine, "chat", "dialogue", chat_url=fake_openai.base_url, chat_model="m1",
                               max_tokens=33, temperature=0.25)
    studies.add_member(engine, sid, alice_id)
    alice = person(site, "alice")
    alice._csrf_from(alice.http.get(f"/s/{sid}").text)
    assert alice.http.post(f"/s/{sid}/new", data={"csrf": alice.csrf}).status_code == 303
    cid = chats.latest_conversation(engine, sid, alice_id)["id"]
    for words in ("hello", "again"):
        r = alice.http.post(f"/s/{sid}/say", data={"csrf": alice.csrf, "conversation": cid, "message": words})
        assert r.status_code == 303
    # the model got the whole conversation, with the study's model, length and temperature
    sent = fake_openai.log[-1]
    assert [(m["role"], m["content"]) for m in sent["messages"]] == [
        ("user", "hello"), ("assistant", "echo: hello"), ("user", "again")]
    assert (sent["model"], sent["max_tokens"], sent["temperature"]) == ("m1", 33, 0.25)
    page = alice.http.get(f"/s/{sid}").text
    assert page.count('name="turn" value="1"') == 1 and page.count('name="turn" value="2"') == 1
    assert page.index("echo: hello") < page.index('name="turn" value="1"') < page.index("echo: again") \
        < page.index('name="turn" value="2"')
    r = alice.http.post(f"/s/{sid}/rate", data={"csrf": alice.csrf, "conversation": cid, "turn": "1",
                                                "score": "pass"})
    assert r.status_code == 303
    page = alice.http.get(f"/s/{sid}").text
    assert "Rated: pass" in page and 'name="turn" value="1"' not in page and page.count('name="turn"') == 1
    assert page.index("echo: hello") < page.index("Rated: pass") < page.index("echo: again")


def test_a_model_that_keeps_failing_is_tried_three_times(site, fake_openai):  # noqa: F811
    engine, alice_id = site["engine"], site["uids"]["alice"]
    sid = studies.create_study(engine, "chat", "dialogue", chat_url=fake_openai.base_url, chat_model="m1")
    studies.add_member(engine, sid, alice_id)
    alice = person(site, "alice")
    cid = chats.new_conversation(engine, sid, alice_id)
    say = {"csrf": alice.csrf, "conversation": cid, "message": "hello"}
    fake_openai.queue(rate_limited("0"), rate_limited("0"))  # two retries are enough
    assert alice.http.post(f"/s/{sid}/say", data=say).status_code == 303
    assert fake_openai.requests == 3
    fake_openai.reset()
    fake_openai.queue(rate_limited("0"), rate_limited("0"), rate_limited("0"))
    r = alice.http.post(f"/s/{sid}/say", data=say)
    assert r.status_code == 502 and message(r.text).startswith("The model did not answer: ")
    assert fake_openai.requests == 3
    assert len(chats.latest_conversation(engine, sid, alice_id)["messages"]) == 2  # the failed turn is not kept


# ----------------------------------------------------------------- review studies


def test_an_edit_replaces_only_the_texts_sent_and_keeps_the_record_as_it_was(site):
    engine, tmp = site["engine"], site["tmp"]
    data = tmp / "cands.jsonl"
    data.write_text("".join(json.dumps({"id": f"r{i}", "source": "t", "meta": {"n": i}, "messages": [
        {"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}) + "\n"
        for i in range(2)))
    rid = studies.create_study(engine, "review", "review", dataset=data)
    studies.add_member(engine, rid, site["uids"]["alice"])
    alice = person(site, "alice")
    item = alice.next_item(rid)
    with db.read(engine) as c:
        shown = json.loads(c.execute(select(db.items.c.payload).where(db.items.c.id == item)).scalar_one())["record"]
    # the other study's item: an edit names it before the vote is checked against the assignments
    r = alice.vote(rid, alice.next_item(site["sid"]) or 0, "edit", {"content_0": "x"})
    assert r.status_code == 403 and message(r.text) == "This item is not assigned to you."
    alice.next_item(rid)
    r = alice.vote(rid, item, "edit", {"content_1": "line one\r\nline two"})  # the question left as it was
    assert r.status_code == 303
    with db.read(engine) as c:
        edited = json.loads(c.execute(select(db.votes.c.edited).where(db.votes.c.item_id == item)).scalar_one())
    assert edited == {**shown, "messages": [shown["messages"][0],
                                            {"role": "assistant", "content": "line one\nline two"}]}
