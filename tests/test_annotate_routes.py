"""Checks that every route of the annotation app must pass, parametrised from the app's own route table, so a
route added later is checked without anyone remembering to: POSTs need the session's CSRF token, /admin
pages need an administrator, and malformed or absent ids in a path are 404s (never 500s)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from lima_align.annotate import accounts, db, studies
from lima_align.annotate.app import create_app
from lima_align.annotate.client import Annotator, write_generations

PW = "correct horse battery"
PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")
NOT_IDS = {"token"}  # path parameters that are not database ids (an invitation token is a random string)


def _route_table() -> list[tuple[str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(f"sqlite:///{Path(tmp) / 'routes.db'}")
        table = sorted((method, r.path) for r in app.routes if isinstance(r, APIRoute) for method in r.methods)
        app.state.engine.dispose()
    return table


ROUTES = _route_table()
POSTS = [path for method, path in ROUTES if method == "POST"]
ADMIN = [(method, path) for method, path in ROUTES if path == "/admin" or path.startswith("/admin/")]
WITH_IDS = [(method, path) for method, path in ROUTES if set(PARAM.findall(path)) - NOT_IDS]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """An admin who is also an annotator of a pairwise and a dialogue study, an annotator of both, and an
    unused invitation: everything a request needs to get past every check but the one under test."""
    from argon2 import PasswordHasher

    tmp = tmp_path_factory.mktemp("routes")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(accounts, "_hasher", lambda: PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
        app = create_app(f"sqlite:///{tmp / 'study.db'}")
        engine = app.state.engine
        uids = [accounts.create_user(engine, "root", PW, "admin"),
                accounts.create_user(engine, "alice", PW, "annotator")]
        a = write_generations(tmp / "a.jsonl", "m1", 3)
        b = write_generations(tmp / "b.jsonl", "m2", 3)
        sid = studies.create_study(engine, "duel", "pairwise", a=a, b=b)
        chat = studies.create_study(engine, "chat", "dialogue", chat_url="http://127.0.0.1:9/v1", chat_model="m")
        for s in (sid, chat):
            for uid in uids:
                studies.add_member(engine, s, uid)
        people = {}
        for name in ("root", "alice"):
            people[name] = Annotator(TestClient(app, follow_redirects=False))
            people[name].login(name, PW)
        yield {"app": app, "engine": engine, "people": people, "sid": sid, "chat": chat,
               "token": accounts.create_invite(engine, sid)}


def fill(path: str, values: dict[str, str]) -> str:
    return PARAM.sub(lambda m: values[m.group(1)], path)


def real_values(site: dict, path: str) -> dict[str, str]:
    """Path parameters naming things that exist (the dialogue study for its own routes)."""
    sid = site["chat"] if path.endswith(("/new", "/say", "/rate")) else site["sid"]
    return {"sid": str(sid), "token": site["token"]}


def fingerprint(engine) -> dict[str, int]:
    """Rows per table (and spent invitations): a refused request must change none of them."""
    with engine.connect() as c:
        counts = {t.name: c.execute(select(func.count()).select_from(t)).scalar_one()
                  for t in db.metadata.sorted_tables}
        counts["spent invites"] = c.execute(select(func.count()).select_from(db.invites)
                                            .where(db.invites.c.used_by.is_not(None))).scalar_one()
    return counts


def test_the_route_table_is_what_the_checks_below_cover():
    assert len(POSTS) >= 10 and len(ADMIN) >= 7 and len(WITH_IDS) >= 9
    assert "/s/{sid:id}/rate" in POSTS and ("POST", "/admin/s/{sid:id}/judges") in ADMIN


@pytest.mark.parametrize("path", POSTS)
@pytest.mark.parametrize("token", ["none", "wrong"])
def test_every_post_needs_the_sessions_csrf_token(site, path, token):
    root = site["people"]["root"]
    before = fingerprint(site["engine"])
    data = {} if token == "none" else {"csrf": "x" * 43}
    r = root.http.post(fill(path, real_values(site, path)), data=data)
    assert r.status_code == 403 and "did not come from this site" in r.text
    assert fingerprint(site["engine"]) == before


@pytest.mark.parametrize("method,path", ADMIN)
def test_every_admin_route_refuses_annotators_and_strangers(site, method, path):
    alice = site["people"]["alice"]
    alice._csrf_from(alice.http.get("/").text)
    url = fill(path, real_values(site, path))
    before = fingerprint(site["engine"])
    r = alice.http.request(method, url, data={"csrf": alice.csrf} if method == "POST" else None)
    assert r.status_code == 403 and "for the study&#39;s administrators" in r.text
    stranger = Annotator(TestClient(site["app"], follow_redirects=False))
    stranger._csrf_from(stranger.http.get("/login").text)
    r = stranger.http.request(method, url, data={"csrf": stranger.csrf} if method == "POST" else None)
    assert (r.status_code, r.headers.get("location")) == ((303, "/login") if method == "GET" else (401, None))
    assert fingerprint(site["engine"]) == before


@pytest.mark.parametrize("method,path", WITH_IDS)
@pytest.mark.parametrize("bad", ["abc", "9" * 30, "-1", "1.5", "0x1", "%201", "999999"])
def test_malformed_or_absent_ids_in_a_path_are_404(site, method, path, bad):
    root = site["people"]["root"]
    root._csrf_from(root.http.get("/").text)
    values = {name: bad for name in PARAM.findall(path) if name not in NOT_IDS}
    url = fill(path, {**real_values(site, path), **values})
    before = fingerprint(site["engine"])
    r = root.http.request(method, url, data={"csrf": root.csrf} if method == "POST" else None)
    assert r.status_code == 404, (url, r.status_code)
    assert fingerprint(site["engine"]) == before


@pytest.mark.parametrize("bad", ["", "abc", "9" * 30, "-1", "999999"])
def test_a_vote_for_a_malformed_or_absent_item_is_refused_without_an_error(site, bad):
    root, sid = site["people"]["root"], site["sid"]
    assert root.next_item(sid) is not None
    before = fingerprint(site["engine"])
    r = root.vote(sid, bad, "A")  # type: ignore[arg-type]
    assert r.status_code == (403 if bad == "999999" else 404)  # a well-formed id is refused as not assigned
    assert fingerprint(site["engine"]) == before
