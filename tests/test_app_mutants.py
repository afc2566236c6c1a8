"""What the annotation app sets up and its helpers do, as mutation testing (benchmarks/mutation.py app) found
unchecked: the session cookie, the upload limits per path, the static files, the header every page shows,
the worker factory's settings, a dialogue's turn numbers and model settings, and a review's edits."""

from __future__ import annotations

import html
import json
import re
import time
from pathlib import Path

import pytest
from fake_openai import fake_openai, rate_limited  # noqa: F401 - fixture
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from test_annotate_app import PW, cheap_hashes, person  # noqa: F401 - cheap_hashes: autouse fixture
from test_annotate_turns import MODELS as TURN_MODELS
from test_annotate_turns import write_conversations

from lima_align.annotate import accounts, chats, db, export, sessions, studies, throttle
from lima_align.annotate.app import create_app, from_environment
from lima_align.annotate.client import Annotator, write_generations


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


# ----------------------------------------------------------------- plain pages and error pages


def test_the_health_check_answers_ok_in_plain_text(site):
    r = TestClient(site["app"]).get("/healthz")
    assert r.status_code == 200 and r.text == "ok" and r.headers["content-type"].startswith("text/plain")


def test_a_request_with_a_malformed_field_gets_the_400_page(site):
    # no route of the app takes typed query or body fields today; a probe route shows what one that did would answer
    def probe(n: int) -> str:
        return str(n)

    site["app"].add_api_route("/probe", probe, methods=["GET"])
    client = TestClient(site["app"])
    assert client.get("/probe?n=3").status_code == 200
    for url in ("/probe?n=three", "/probe"):
        r = client.get(url)
        assert r.status_code == 400
        assert message(r.text) == "The request was missing a field or had a malformed one."


def test_a_crash_shows_the_500_page_and_reads_nothing_from_the_database(site, monkeypatch):
    alice = Annotator(TestClient(site["app"], follow_redirects=False, raise_server_exceptions=False))
    alice.login("alice", PW)

    def broken(*args):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(studies, "studies_of", broken)
    r = alice.http.get("/")
    assert r.status_code == 500
    assert message(r.text) == ("Something went wrong on the server; your last vote may not be saved. "
                               "Go back and try again.")
    assert "disk on fire" not in r.text and 'action="/logout"' not in r.text  # (no user looked up)


def test_logging_out_goes_to_the_login_page_and_ends_the_session(site):
    alice = person(site, "alice")
    r = alice.http.post("/logout", data={"csrf": alice.csrf})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    r = alice.http.get("/")
    assert r.status_code == 303 and r.headers["location"] == "/login"


# ----------------------------------------------------------------- invitations


def invite_link(site) -> str:
    """An invitation to the study, made on the admin's page; the link it shows."""
    root = person(site, "root")
    r = root.http.post(f"/admin/s/{site['sid']}/invite", data={"csrf": root.csrf})
    assert r.status_code == 200
    return html.unescape(re.search(r'<code id="invite-link">([^<]*)</code>', r.text).group(1))


def test_an_invitation_link_opens_the_join_form_once(site):
    link = invite_link(site)
    assert re.fullmatch(r"http://testserver/join/[\w-]{32}", link)
    path = link.removeprefix("http://testserver")
    client = TestClient(site["app"], follow_redirects=False)
    page = client.get(path)
    assert page.status_code == 200 and f'action="{path}"' in page.text
    ann = Annotator(client)
    ann._csrf_from(page.text)
    r = client.post(path, data={"csrf": ann.csrf, "username": "dave", "password": PW})
    assert r.status_code == 303 and r.headers["location"] == f"/s/{site['sid']}"  # the invitation is to the study
    r = TestClient(site["app"]).get(path)
    assert r.status_code == 404
    assert message(r.text) == "This invitation link is unknown or was already used. Ask for a new one."


def join_form(site, token: str) -> tuple[TestClient, str]:
    client = TestClient(site["app"], follow_redirects=False)
    ann = Annotator(client)
    ann._csrf_from(client.get(f"/join/{token}").text)
    return client, ann.csrf


def test_a_refused_joining_says_what_and_how_to_fix_it_on_the_same_form(site):
    token = accounts.create_invite(site["engine"], site["sid"])
    client, csrf = join_form(site, token)
    for data, shown in (
            ({"password": PW}, "username '' is not allowed; use 2-64 letters, digits, '.', '_' or '-' "
                               "(it appears in exports as human:<name>)"),
            ({"username": "dave"}, "the password is shorter than 8 characters; choose a longer password"),
            ({"username": "alice", "password": PW}, "the name 'alice' is taken; choose another name")):
        r = client.post(f"/join/{token}", data={"csrf": csrf, **data})
        assert r.status_code == 400 and message(r.text) == shown
        assert f'action="/join/{token}"' in r.text  # the form is shown again, for the same invitation
    with db.read(site["engine"]) as c:
        names = set(c.execute(select(db.users.c.username)).scalars())
    assert names == {"root", "alice", "bob"}  # nothing was created, not even a user named "None"


def test_a_new_person_joins_under_the_name_they_chose_and_lands_on_the_study(site):
    token = accounts.create_invite(site["engine"], site["sid"])
    client, csrf = join_form(site, token)
    r = client.post(f"/join/{token}", data={"csrf": csrf, "username": "dave", "password": PW})
    assert r.status_code == 303 and r.headers["location"] == f"/s/{site['sid']}"
    assert "dave (annotator)" in client.get(f"/s/{site['sid']}").text
    fresh = Annotator(TestClient(site["app"], follow_redirects=False))
    fresh.login("dave", PW)  # the account has the chosen name and password


def test_a_logged_in_annotator_joins_with_their_own_account(site):
    engine, sid = site["engine"], site["sid"]
    bob = person(site, "bob")
    token = accounts.create_invite(engine, sid)
    page = bob.http.get(f"/join/{token}").text
    assert "You are logged in as bob" in page and 'name="username"' not in page
    r = bob.http.post(f"/join/{token}", data={"csrf": bob.csrf})
    assert r.status_code == 303 and r.headers["location"] == f"/s/{sid}"
    with db.read(engine) as c:
        assert studies.is_member(c, sid, site["uids"]["bob"])
        assert c.execute(select(func.count()).select_from(db.users)).scalar_one() == 3  # no new account
    assert bob.next_item(sid) is not None


def test_an_invitation_to_no_study_lands_on_the_home_page(site):
    token = accounts.create_invite(site["engine"], None)
    client, csrf = join_form(site, token)
    r = client.post(f"/join/{token}", data={"csrf": csrf, "username": "dave", "password": PW})
    assert r.status_code == 303 and r.headers["location"] == "/"


# ----------------------------------------------------------------- studies and conversations


def test_a_conversation_is_started_only_in_a_dialogue_study(site):
    alice = person(site, "alice")
    r = alice.http.post(f"/s/{site['sid']}/new", data={"csrf": alice.csrf})
    assert r.status_code == 400 and message(r.text) == "Only dialogue studies have conversations."


# ----------------------------------------------------------------- the admin's dashboard


def admin_posts(site, path: str, data: dict, files=None):
    root = person(site, "root")
    return root.http.post(path, data={"csrf": root.csrf, **data}, files=files)


def created(site, name: str) -> dict:
    with db.read(site["engine"]) as c:
        return studies.get_study(c, name=name)


def jsonl(path: Path) -> tuple[str, bytes]:
    return (path.name, path.read_bytes())


def test_a_study_form_with_an_unknown_kind_or_overlap_is_refused_with_the_reason(site):
    for data, shown in (({}, "Unknown kind of study ''."), ({"kind": "poll"}, "Unknown kind of study 'poll'."),
                        ({"kind": "pairwise", "overlap": "two"}, "Annotators per item must be a whole number.")):
        r = admin_posts(site, "/admin/studies", {"name": "x", **data},
                        files={"a": jsonl(site["tmp"] / "a.jsonl"), "b": jsonl(site["tmp"] / "b.jsonl")})
        assert r.status_code == 400 and message(r.text) == shown
    with db.read(site["engine"]) as c:
        assert c.execute(select(func.count()).select_from(db.studies)).scalar_one() == 1  # only the fixture's


def test_a_study_made_on_the_page_without_a_name_is_called_study_and_opens_its_page(site):
    tmp = site["tmp"]
    r = admin_posts(site, "/admin/studies", {"kind": "pairwise"},
                    files={"a": jsonl(tmp / "a.jsonl"), "b": jsonl(tmp / "b.jsonl")})
    study = created(site, "study")
    assert r.status_code == 303 and r.headers["location"] == f"/admin/s/{study['id']}"
    assert (study["kind"], study["overlap"]) == ("pairwise", 1)
    r = admin_posts(site, "/admin/studies", {"kind": "pairwise", "name": "  spaced  ", "overlap": "3"},
                    files={"a": jsonl(tmp / "a.jsonl"), "b": jsonl(tmp / "b.jsonl")})
    assert r.status_code == 303 and created(site, "spaced")["overlap"] == 3


def test_a_pairwise_study_compares_a_with_every_b_file_sent(site):
    tmp = site["tmp"]
    c = write_generations(tmp / "c.jsonl", "m3", 2)
    r = admin_posts(site, "/admin/studies", {"kind": "pairwise", "name": "three"},
                    files=[("a", jsonl(tmp / "a.jsonl")), ("b", jsonl(tmp / "b.jsonl")), ("b", jsonl(c))])
    assert r.status_code == 303
    config = created(site, "three")["config"]
    assert (config["model_a"], config["models_b"]) == ("m1", ["m2", "m3"])


def test_an_absolute_study_rates_every_a_file_on_the_scale_chosen(site):
    tmp = site["tmp"]
    r = admin_posts(site, "/admin/studies", {"kind": "absolute", "name": "rated", "scale": "helpfulness_6"},
                    files=[("a", jsonl(tmp / "a.jsonl")), ("a", jsonl(tmp / "b.jsonl"))])
    assert r.status_code == 303
    config = created(site, "rated")["config"]
    assert (config["models"], config["scale"]) == (["m1", "m2"], "helpfulness_6")
    r = admin_posts(site, "/admin/studies", {"kind": "absolute", "name": "plain"}, files={"a": jsonl(tmp / "a.jsonl")})
    assert r.status_code == 303 and created(site, "plain")["config"]["scale"] == "fail_pass_excellent"


def test_a_turns_study_takes_the_conversations_sent_and_skips_file_inputs_left_empty(site):
    tmp = site["tmp"]
    files = [write_conversations(tmp / f"conv{i}.jsonl", model, "Good") for i, model in enumerate(TURN_MODELS)]
    # a browser sends a file input that nobody filled as a part with an empty file name
    r = admin_posts(site, "/admin/studies", {"kind": "turns", "name": "turns"},
                    files=[("a", jsonl(files[0])), ("a", jsonl(files[1])), ("b", ("", b"")), ("dataset", ("", b""))])
    assert r.status_code == 303
    study = created(site, "turns")
    assert study["config"]["models"] == sorted(TURN_MODELS)
    with db.read(site["engine"]) as c:
        assert c.execute(select(func.count()).select_from(db.items)
                         .where(db.items.c.study_id == study["id"])).scalar_one() == 10  # 5 turns per model


def test_a_review_study_reads_its_dataset_file(site):
    tmp = site["tmp"]
    data = tmp / "cands.jsonl"
    data.write_text("".join(json.dumps({"id": f"r{i}", "source": "t", "messages": [
        {"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}) + "\n" for i in range(3)))
    r = admin_posts(site, "/admin/studies", {"kind": "review", "name": "review"}, files={"dataset": jsonl(data)})
    assert r.status_code == 303
    with db.read(site["engine"]) as c:
        sid = studies.get_study(c, name="review")["id"]
        assert c.execute(select(func.count()).select_from(db.items).where(db.items.c.study_id == sid)
                         ).scalar_one() == 3


def test_a_dialogue_study_keeps_the_model_endpoint_and_needs_both_fields(site):
    url, model = "http://127.0.0.1:9/v1", "tiny-chat"
    r = admin_posts(site, "/admin/studies", {"kind": "dialogue", "name": "chat", "chat_url": url, "chat_model": model},
                    files={"a": ("", b"")})
    assert r.status_code == 303
    config = created(site, "chat")["config"]
    assert (config["chat_url"], config["model"]) == (url, model)
    for data in ({"chat_url": url}, {"chat_model": model}, {"chat_url": "", "chat_model": model}):
        r = admin_posts(site, "/admin/studies", {"kind": "dialogue", "name": "half", **data}, files={"a": ("", b"")})
        assert r.status_code == 400
        assert message(r.text) == ("a dialogue study needs the model's endpoint\n"
                                   "    fix: pass --chat-url http://host:port/v1 --chat-model NAME")


def lock_alice(site) -> list[str]:
    """Ten failed logins as alice from one address: her name and the address are locked."""
    keys = throttle.keys("alice", "10.7.7.7")
    for _ in range(throttle.LIMIT):
        throttle.failed(site["engine"], keys, time.time())
    assert {x["key"] for x in throttle.locked(site["engine"], time.time())} == set(keys)
    return keys


def test_unlocking_one_login_leaves_the_others_locked(site):
    name, address = lock_alice(site)
    for data in ({}, {"key": ""}, {"all": "0"}):
        r = admin_posts(site, "/admin/logins/unlock", data)
        assert r.status_code == 400 and message(r.text) == "Say which login to unlock."
    r = admin_posts(site, "/admin/logins/unlock", {"key": name})
    assert r.status_code == 303 and r.headers["location"] == "/admin"
    assert [x["key"] for x in throttle.locked(site["engine"], time.time())] == [address]


def test_unlock_all_clears_every_locked_login(site):
    lock_alice(site)
    r = admin_posts(site, "/admin/logins/unlock", {"all": "1"})
    assert r.status_code == 303 and r.headers["location"] == "/admin"
    assert throttle.locked(site["engine"], time.time()) == []


def test_the_invitation_page_shows_a_link_that_opens_the_join_form(site):
    link = invite_link(site)
    assert link.startswith("http://testserver/join/")
    assert TestClient(site["app"]).get(link.removeprefix("http://testserver")).status_code == 200


def test_the_export_download_is_the_exported_file_named_after_the_study(site):
    engine, sid, tmp = site["engine"], site["sid"], site["tmp"]
    alice = person(site, "alice")
    while (item := alice.next_item(sid)) is not None:
        assert alice.vote(sid, item, "A").status_code == 303
    export.export_study(engine, "duel", tmp / "expected.jsonl")
    expected = (tmp / "expected.jsonl").read_bytes()
    assert expected.count(b"\n") == 2
    r = person(site, "root").http.get(f"/admin/s/{sid}/export")
    assert r.status_code == 200 and r.content == expected
    assert r.headers["content-type"].split(";")[0] == "application/x-ndjson"
    assert r.headers["content-disposition"] == f'attachment; filename="study-{sid}.jsonl"'


def test_a_page_asked_for_with_the_wrong_method_says_why(site):
    r = TestClient(site["app"]).get("/logout")
    assert r.status_code == 405 and message(r.text) == "Method Not Allowed"


def test_the_dashboard_lists_each_study_with_a_link_to_its_page(site):
    page = person(site, "root").http.get("/admin").text
    assert f'<a href="/admin/s/{site["sid"]}">duel</a>' in page and "No study yet" not in page


# ----------------------------------------------------------------- votes


def stored_votes(engine) -> list[tuple[str, str]]:
    with db.read(engine) as c:
        return [tuple(r) for r in c.execute(select(db.votes.c.raw, db.votes.c.comment).order_by(db.votes.c.id))]


def test_a_vote_without_an_item_or_a_choice_is_refused_with_the_reason(site):
    sid = site["sid"]
    alice = person(site, "alice")
    item = alice.next_item(sid)
    for extra, status, shown in (({"item": "first"}, 404, "There is no such item."),
                                 ({"item": ""}, 404, "There is no such item."),
                                 ({"item": str(item)}, 400, "Unknown choice ''.")):
        r = alice.http.post(f"/s/{sid}/vote", data={"csrf": alice.csrf, **extra})
        assert r.status_code == status and message(r.text) == shown
    assert stored_votes(site["engine"]) == []


def test_a_vote_keeps_its_comment_up_to_5000_characters_and_leads_back_to_the_study(site):
    sid = site["sid"]
    alice = person(site, "alice")
    r = alice.vote(sid, alice.next_item(sid), "A")
    assert r.status_code == 303 and r.headers["location"] == f"/s/{sid}"
    r = alice.vote(sid, alice.next_item(sid), "B", {"comment": "y" * 4999 + "zz"})
    assert r.status_code == 303
    assert stored_votes(site["engine"]) == [("A", ""), ("B", "y" * 4999 + "z")]


# ----------------------------------------------------------------- dialogue studies: the routes' answers


@pytest.fixture
def chat(site, fake_openai):  # noqa: F811
    """A dialogue study alice belongs to, and one conversation of hers in it."""
    engine, alice_id = site["engine"], site["uids"]["alice"]
    sid = studies.create_study(engine, "chat", "dialogue", chat_url=fake_openai.base_url, chat_model="m1")
    studies.add_member(engine, sid, alice_id)
    alice = person(site, "alice")
    r = alice.http.post(f"/s/{sid}/new", data={"csrf": alice.csrf})
    assert r.status_code == 303 and r.headers["location"] == f"/s/{sid}"
    cid = chats.latest_conversation(engine, sid, alice_id)["id"]
    return {"sid": sid, "cid": cid, "alice": alice, "server": fake_openai, "engine": engine, "uid": alice_id}


def test_an_empty_message_is_refused_before_the_model_is_asked(site, chat):
    sid, cid, alice = chat["sid"], chat["cid"], chat["alice"]
    for data in ({}, {"message": "  \n "}):
        r = alice.http.post(f"/s/{sid}/say", data={"csrf": alice.csrf, "conversation": cid, **data})
        assert r.status_code == 400 and message(r.text) == "Write a message first."
    # a message to a study that is not a dialogue: the same refusal, not a search for the conversation
    r = alice.http.post(f"/s/{site['sid']}/say", data={"csrf": alice.csrf, "conversation": cid, "message": "hi"})
    assert r.status_code == 400 and message(r.text) == "Write a message first."
    assert chat["server"].requests == 0
    r = alice.http.post(f"/s/{sid}/say", data={"csrf": alice.csrf, "conversation": cid, "message": "hi"})
    assert r.status_code == 303 and r.headers["location"] == f"/s/{sid}"
    assert chat["server"].requests == 1


def test_a_turn_rating_names_its_turn_and_a_score_on_the_scale(chat):
    sid, cid, alice = chat["sid"], chat["cid"], chat["alice"]
    assert alice.http.post(f"/s/{sid}/say", data={"csrf": alice.csrf, "conversation": cid,
                                                  "message": "hi"}).status_code == 303
    rate = {"csrf": alice.csrf, "conversation": cid}
    for data, shown in (({"score": "pass"}, "The rating names no turn."),
                        ({"turn": "first", "score": "pass"}, "The rating names no turn."),
                        ({"turn": "1"}, "Unknown rating ''.")):
        r = alice.http.post(f"/s/{sid}/rate", data={**rate, **data})
        assert r.status_code == 400 and message(r.text) == shown
    r = alice.http.post(f"/s/{sid}/rate", data={**rate, "turn": "1", "score": "excellent"})
    assert r.status_code == 303 and r.headers["location"] == f"/s/{sid}"
    assert chats.turn_scores(chat["engine"], cid) == {1: "excellent"}


def test_the_model_is_given_two_minutes_and_two_retries_per_reply(chat, monkeypatch):
    from lima_align import api

    made = []

    class Recorded(api.ChatClient):
        def __init__(self, *args, **kwargs):
            made.append((args, kwargs))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(api, "ChatClient", Recorded)
    sid, cid, alice = chat["sid"], chat["cid"], chat["alice"]
    r = alice.http.post(f"/s/{sid}/say", data={"csrf": alice.csrf, "conversation": cid, "message": "hi"})
    assert r.status_code == 303
    assert made == [((chat["server"].base_url, "m1"), {"max_retries": 2, "timeout_s": 120.0})]


# ----------------------------------------------------------------- attached judgments


def llm_judgments(site) -> bytes:
    """An LLM judge's verdicts on the study's prompts (alice's votes, relabelled)."""
    sid, tmp = site["sid"], site["tmp"]
    alice = person(site, "alice")
    while (item := alice.next_item(sid)) is not None:
        assert alice.vote(sid, item, "A").status_code == 303
    export.export_study(site["engine"], "duel", tmp / "human.jsonl")
    recs = [json.loads(x) for x in (tmp / "human.jsonl").read_text().splitlines()]
    return "".join(json.dumps({**r, "judge": "api:m", "id": "j" + r["prompt_id"]}) + "\n" for r in recs).encode()


def attached_names(site) -> list[str]:
    with db.read(site["engine"]) as c:
        return list(c.execute(select(db.judge_files.c.name).order_by(db.judge_files.c.id)).scalars())


def test_an_attached_judgments_file_keeps_its_own_name(site):
    body, sid = llm_judgments(site), site["sid"]
    for filename in ("gpt-judge.jsonl", "/"):  # a name that is only a folder: the usual name
        r = admin_posts(site, f"/admin/s/{sid}/judges", {}, files={"file": (filename, body)})
        assert r.status_code == 303 and r.headers["location"] == f"/admin/s/{sid}"
    assert attached_names(site) == ["gpt-judge.jsonl", "judgments.jsonl"]


def test_attaching_without_a_file_says_to_choose_one(site):
    for files in (None, {"file": ("", b"")}):
        r = admin_posts(site, f"/admin/s/{site['sid']}/judges", {}, files=files)
        assert r.status_code == 400 and message(r.text) == "Choose a judgments file to upload."
    assert attached_names(site) == []


# ----------------------------------------------------------------- what the study pages show


def test_the_pairwise_page_labels_its_three_buttons(site):
    alice = person(site, "alice")
    assert alice.next_item(site["sid"]) is not None
    page = html.unescape(alice.http.get(f"/s/{site['sid']}").text)
    for label in ("A is significantly better", "B is significantly better", "Neither is significantly better"):
        assert label in page


def test_the_done_page_names_the_study_and_who_is_logged_in(site):
    sid = site["sid"]
    alice = person(site, "alice")
    while (item := alice.next_item(sid)) is not None:
        assert alice.vote(sid, item, "A").status_code == 303
    page = alice.http.get(f"/s/{sid}").text
    assert "Nothing left for you in this study" in page and "<h1>duel</h1>" in page and "alice (annotator)" in page


def test_the_dialogue_page_shows_who_is_logged_in(chat):
    page = chat["alice"].http.get(f"/s/{chat['sid']}").text
    assert "alice (annotator)" in page and 'action="/logout"' in page


# ----------------------------------------------------------------- logging in


def post_login(client: TestClient, data: dict):
    ann = Annotator(client)
    ann._csrf_from(client.get("/login").text)
    return client.post("/login", data={"csrf": ann.csrf, **data})


def test_a_login_goes_to_the_dashboard_or_the_home_page_by_role(site):
    client = TestClient(site["app"], follow_redirects=False)
    for name, target in (("root", "/admin"), ("alice", "/")):
        r = post_login(client, {"username": name, "password": PW})
        assert r.status_code == 303 and r.headers["location"] == target


def test_a_wrong_or_missing_name_or_password_is_refused_the_same_way(site):
    for name in ("None", "XXXX"):  # accounts whose names are what a missing field must never turn into
        accounts.create_user(site["engine"], name, PW, "annotator")
    client = TestClient(site["app"], follow_redirects=False)
    for data in ({"password": PW}, {"username": "alice", "password": "wrong password"}, {"username": "alice"}):
        r = post_login(client, data)
        assert r.status_code == 401 and message(r.text) == "Wrong name or password."


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_a_locked_login_says_how_many_minutes_are_left_rounded_up(tmp_path):
    clock = Clock(1000.0)
    app = create_app(f"sqlite:///{tmp_path / 'lock.db'}", clock=clock)
    accounts.create_user(app.state.engine, "alice", PW, "annotator")
    for _ in range(throttle.LIMIT):  # locked for throttle.FIRST_LOCK_S = 60 s from t = 1000
        throttle.failed(app.state.engine, [throttle.name_key("alice")], 1000.0)
    client = TestClient(app, follow_redirects=False)
    for t, wait, minutes in ((999.0, 61, "2 minutes"), (1000.0, 60, "1 minute"), (1059.5, 1, "1 minute")):
        clock.t = t
        r = post_login(client, {"username": "alice", "password": PW})
        assert r.status_code == 429 and r.headers["retry-after"] == str(wait)
        assert message(r.text) == (f"Too many failed logins. Try again in {minutes}, "
                                   "or ask an administrator to unlock it.")
    clock.t = 1060.0
    assert post_login(client, {"username": "alice", "password": PW}).status_code == 303
    app.state.engine.dispose()


def test_logins_through_a_server_that_gives_no_client_address_are_counted_under_unknown(site):
    client = TestClient(site["app"], follow_redirects=False, client=None)
    for _ in range(throttle.LIMIT):
        assert post_login(client, {"username": "alice", "password": "wrong password"}).status_code == 401
    locked = {x["key"]: x["label"] for x in throttle.locked(site["engine"], time.time())}
    assert locked == {throttle.name_key("alice"): "name alice", "addr:unknown": "address unknown"}


def test_the_home_page_lists_the_studies_the_annotator_belongs_to(site):
    page = person(site, "alice").http.get("/").text
    assert f'<a href="/s/{site["sid"]}">duel</a>' in page
    page = person(site, "bob").http.get("/").text
    assert "duel" not in page and "You are not part of any study yet" in page
