"""Sessions the server can end (logout, password, role, removal, expiry), databases made before the sessions
table, and login throttling per name and per address, with the app's clock moved instead of sleeping.
The tests that take `site` run on PostgreSQL too when LIMA_ALIGN_TEST_POSTGRES_URL names a scratch database
(its tables are dropped first)."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from test_annotate_app import PW, cheap_hashes  # noqa: F401 - cheap_hashes: autouse fixture

from lima_align.annotate import accounts, db, sessions, studies, throttle
from lima_align.annotate.app import create_app
from lima_align.annotate.client import Annotator, write_generations
from lima_align.cli import main


class Clock:
    def __init__(self) -> None:
        self.t = 1_900_000_000.0

    def __call__(self) -> float:
        return self.t


POSTGRES = os.environ.get("LIMA_ALIGN_TEST_POSTGRES_URL")


@pytest.fixture(params=["sqlite", "postgresql"])
def site(request, tmp_path: Path):
    clock = Clock()
    url = f"sqlite:///{tmp_path / 'study.db'}"
    if request.param == "postgresql":
        if not POSTGRES:
            pytest.skip("set LIMA_ALIGN_TEST_POSTGRES_URL to a scratch PostgreSQL database")
        url = POSTGRES
        scratch = db.connect(url, create=False)
        db.metadata.drop_all(scratch)
        scratch.dispose()
    app = create_app(url, clock=clock)
    engine = app.state.engine
    accounts.create_user(engine, "root", PW, "admin")
    alice = accounts.create_user(engine, "alice", PW, "annotator")
    a = write_generations(tmp_path / "a.jsonl", "m1", 3)
    sid = studies.create_study(engine, "rate", "absolute", a=a)
    studies.add_member(engine, sid, alice)
    yield {"url": url, "app": app, "engine": engine, "sid": sid, "clock": clock}
    engine.dispose()


def browser(site: dict, address: str = "10.0.0.1", cookies: dict | None = None) -> Annotator:
    return Annotator(TestClient(site["app"], follow_redirects=False, client=(address, 50000), cookies=cookies))


def logged_in(site: dict, name: str, address: str = "10.0.0.1") -> tuple[Annotator, dict]:
    """A logged-in browser and a copy of its cookies, as someone who copied them would keep them."""
    ann = browser(site, address)
    ann.login(name, PW)
    return ann, dict(ann.http.cookies)


def opens(site: dict, cookies: dict, path: str) -> bool:
    r = browser(site, cookies=cookies).http.get(path)
    assert r.status_code in (200, 303), r.status_code
    return r.status_code == 200


def try_login(site: dict, name: str, password: str, address: str = "10.0.0.1"):
    ann = browser(site, address)
    ann._csrf_from(ann.http.get("/login").text)
    return ann.http.post("/login", data={"csrf": ann.csrf, "username": name, "password": password})


# ----------------------------------------------------------------- sessions


def test_logout_ends_the_session_even_for_a_copied_cookie_and_only_that_one(site):
    admin, saved = logged_in(site, "root")
    _, other_device = logged_in(site, "root", "10.0.0.2")
    assert opens(site, saved, "/admin")
    assert admin.http.post("/logout", data={"csrf": admin.csrf}).status_code == 303
    r = browser(site, cookies=saved).http.get("/admin")
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert opens(site, other_device, "/admin")  # the same account in another browser stays logged in
    again = browser(site, cookies=other_device)  # logging in anew in a browser ends its previous session
    again._csrf_from(again.http.get("/admin").text)
    r = again.http.post("/login", data={"csrf": again.csrf, "username": "root", "password": PW})
    assert r.status_code == 303
    assert not opens(site, other_device, "/admin") and opens(site, dict(r.cookies), "/admin")


@pytest.mark.parametrize("change", ["password", "role", "removal"])
def test_account_changes_end_every_session_of_the_account(site, change):
    sid = site["sid"]
    _, admin_cookie = logged_in(site, "root")
    _, alice1 = logged_in(site, "alice")
    _, alice2 = logged_in(site, "alice", "10.0.0.2")
    assert opens(site, alice1, f"/s/{sid}") and opens(site, alice2, f"/s/{sid}")
    if change == "password":
        accounts.set_password(site["engine"], "alice", "a new long password")
    elif change == "role":
        accounts.set_role(site["engine"], "alice", "admin")
    else:
        accounts.remove_user(site["engine"], "alice")
    assert not opens(site, alice1, f"/s/{sid}") and not opens(site, alice2, f"/s/{sid}")
    assert opens(site, admin_cookie, "/admin")  # other accounts keep their sessions
    if change == "removal":
        assert try_login(site, "alice", PW).status_code == 401
        with db.read(site["engine"]) as c:
            assert not studies.is_member(c, sid, accounts.user_id(c, "alice"))
    elif change == "role":
        _, fresh = logged_in(site, "alice")
        assert opens(site, fresh, "/admin")  # the new role holds from the next login


def test_cli_changes_end_sessions_and_name_the_account(site, monkeypatch, capsys):
    url, sid = site["url"], site["sid"]
    _, saved = logged_in(site, "alice")
    monkeypatch.setenv("NEW_PW", "another long password")
    assert main(["annotate", "set-password", "--db", url, "--username", "alice", "--password-env", "NEW_PW"]) == 0
    assert not opens(site, saved, f"/s/{sid}")
    assert main(["annotate", "set-role", "--db", url, "--username", "alice", "--role", "admin"]) == 0
    assert main(["annotate", "remove-user", "--db", url, "--username", "alice"]) == 0
    assert main(["annotate", "remove-user", "--db", url, "--username", "nobody"]) == 2
    assert "no user 'nobody'" in capsys.readouterr().err


def test_a_session_ends_after_two_idle_weeks_and_use_extends_it(site):
    clock = site["clock"]
    _, used = logged_in(site, "root")
    _, idle = logged_in(site, "root")
    clock.t += 8 * 86400
    assert opens(site, used, "/admin")  # less than half its time left: extended by 14 days from now
    clock.t += 8 * 86400
    assert opens(site, used, "/admin")
    assert not opens(site, idle, "/admin")
    clock.t += sessions.SESSION_S + 1
    assert not opens(site, used, "/admin")


# The schema of every table as the release before the sessions and login_throttle tables made it (SQLite).
PREVIOUS_SCHEMA = """
CREATE TABLE settings ("key" VARCHAR(64) NOT NULL, value TEXT NOT NULL, PRIMARY KEY ("key"));
CREATE TABLE users (id INTEGER NOT NULL, username VARCHAR(64) NOT NULL, role VARCHAR(16) NOT NULL,
  password_hash TEXT, created FLOAT NOT NULL, PRIMARY KEY (id), UNIQUE (username));
CREATE TABLE studies (id INTEGER NOT NULL, name VARCHAR(128) NOT NULL, kind VARCHAR(16) NOT NULL,
  overlap INTEGER NOT NULL, config TEXT NOT NULL, created FLOAT NOT NULL, PRIMARY KEY (id), UNIQUE (name));
CREATE TABLE members (study_id INTEGER NOT NULL, user_id INTEGER NOT NULL, PRIMARY KEY (study_id, user_id),
  FOREIGN KEY(study_id) REFERENCES studies (id), FOREIGN KEY(user_id) REFERENCES users (id));
CREATE TABLE invites (token_sha256 VARCHAR(64) NOT NULL, study_id INTEGER, role VARCHAR(16) NOT NULL,
  created FLOAT NOT NULL, used_by INTEGER, used_at FLOAT, PRIMARY KEY (token_sha256),
  FOREIGN KEY(study_id) REFERENCES studies (id), FOREIGN KEY(used_by) REFERENCES users (id));
CREATE TABLE items (id INTEGER NOT NULL, study_id INTEGER NOT NULL, idx INTEGER NOT NULL,
  "key" VARCHAR(512) NOT NULL, payload TEXT NOT NULL, n_assigned INTEGER NOT NULL, PRIMARY KEY (id),
  CONSTRAINT uq_item_key UNIQUE (study_id, "key"), FOREIGN KEY(study_id) REFERENCES studies (id));
CREATE INDEX ix_items_study_id ON items (study_id);
CREATE INDEX ix_items_next ON items (study_id, n_assigned, idx);
CREATE TABLE conversations (id VARCHAR(64) NOT NULL, study_id INTEGER NOT NULL, user_id INTEGER NOT NULL,
  messages TEXT NOT NULL, created FLOAT NOT NULL, updated FLOAT NOT NULL, PRIMARY KEY (id),
  FOREIGN KEY(study_id) REFERENCES studies (id), FOREIGN KEY(user_id) REFERENCES users (id));
CREATE TABLE judge_files (id INTEGER NOT NULL, study_id INTEGER NOT NULL, name VARCHAR(256) NOT NULL,
  records TEXT NOT NULL, created FLOAT NOT NULL, PRIMARY KEY (id), FOREIGN KEY(study_id) REFERENCES studies (id));
CREATE TABLE assignments (id INTEGER NOT NULL, study_id INTEGER NOT NULL, item_id INTEGER NOT NULL,
  user_id INTEGER NOT NULL, shown_order VARCHAR(2) NOT NULL, created FLOAT NOT NULL, PRIMARY KEY (id),
  CONSTRAINT uq_assignment UNIQUE (study_id, item_id, user_id), FOREIGN KEY(study_id) REFERENCES studies (id),
  FOREIGN KEY(item_id) REFERENCES items (id), FOREIGN KEY(user_id) REFERENCES users (id));
CREATE INDEX ix_assignments_item_id ON assignments (item_id);
CREATE INDEX ix_assignments_user_id ON assignments (user_id);
CREATE TABLE votes (id INTEGER NOT NULL, study_id INTEGER NOT NULL, item_id INTEGER NOT NULL,
  user_id INTEGER NOT NULL, shown_order VARCHAR(2) NOT NULL, raw VARCHAR(32) NOT NULL, value VARCHAR(32) NOT NULL,
  comment TEXT NOT NULL, edited TEXT, created FLOAT NOT NULL, PRIMARY KEY (id),
  CONSTRAINT uq_vote UNIQUE (study_id, item_id, user_id), FOREIGN KEY(study_id) REFERENCES studies (id),
  FOREIGN KEY(item_id) REFERENCES items (id), FOREIGN KEY(user_id) REFERENCES users (id));
CREATE INDEX ix_votes_user_id ON votes (user_id);
CREATE TABLE turn_ratings (conversation_id VARCHAR(64) NOT NULL, turn INTEGER NOT NULL, user_id INTEGER NOT NULL,
  score VARCHAR(16) NOT NULL, created FLOAT NOT NULL, PRIMARY KEY (conversation_id, turn),
  FOREIGN KEY(conversation_id) REFERENCES conversations (id), FOREIGN KEY(user_id) REFERENCES users (id));
"""


def test_a_database_of_the_previous_schema_opens_and_gains_the_new_tables(tmp_path):
    from itsdangerous import TimestampSigner

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as con:
        con.executescript(PREVIOUS_SCHEMA)
        con.execute("INSERT INTO settings VALUES ('session_secret', 'an old signing key')")
        con.execute("INSERT INTO users VALUES (1, 'root', 'admin', ?, 0)", (accounts.hash_password(PW),))
        old_tables = dict(con.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall())
    app = create_app(f"sqlite:///{path}")
    with sqlite3.connect(path) as con:
        tables = dict(con.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall())
    assert {k: v for k, v in tables.items() if k in old_tables} == old_tables  # nothing old was altered
    assert set(tables) - set(old_tables) == {"sessions", "login_throttle"}
    # a cookie of the previous release (the account id, signed with the stored key) no longer logs anyone in
    data = base64.b64encode(json.dumps({"uid": 1, "csrf": "x"}).encode())
    old_cookie = TimestampSigner("an old signing key").sign(data).decode()
    site = {"app": app}
    assert not opens(site, {"lima_session": old_cookie}, "/admin")
    admin, saved = logged_in(site, "root")  # the same signing key and account, logged in anew
    assert opens(site, saved, "/admin")
    admin.http.post("/logout", data={"csrf": admin.csrf})
    assert not opens(site, saved, "/admin")


# ----------------------------------------------------------------- throttling


def test_ten_failures_lock_the_name_from_any_address_with_a_growing_delay(site):
    clock = site["clock"]
    for i in range(10):  # each from its own address: only the name's count reaches ten
        assert try_login(site, "alice", "wrong password", f"10.0.1.{i}").status_code == 401
    r = try_login(site, "alice", PW, "10.0.2.1")  # the right password, but locked: not even checked
    assert r.status_code == 429 and r.headers["retry-after"] == "60" and "Try again in 1 minute" in r.text
    clock.t += 60
    assert try_login(site, "alice", "wrong again", "10.0.2.2").status_code == 401
    r = try_login(site, "alice", PW, "10.0.2.3")
    assert r.status_code == 429 and r.headers["retry-after"] == "120"
    clock.t += 120
    assert try_login(site, "alice", "and again", "10.0.2.4").status_code == 401
    assert try_login(site, "alice", PW, "10.0.2.5").headers["retry-after"] == "240"
    assert try_login(site, "root", PW, "10.0.2.6").status_code == 303  # other names are not affected
    clock.t += 240
    assert try_login(site, "alice", PW, "10.0.2.7").status_code == 303


def test_ten_failures_from_one_address_lock_that_address_for_every_name(site):
    for i in range(10):  # names that exist and names that do not count alike
        assert try_login(site, ["alice", "root", f"ghost{i}"][i % 3], "wrong password", "10.9.9.9").status_code == 401
    with db.read(site["engine"]) as c:  # a name is kept as a hash only: people sometimes type a password there
        assert not [k for k in c.execute(select(db.login_throttle.c.key)).scalars() if "ghost" in k]
    assert try_login(site, "root", PW, "10.9.9.9").status_code == 429
    assert try_login(site, "root", PW, "10.9.9.8").status_code == 303


def test_only_ten_failures_within_fifteen_minutes_lock_and_a_good_login_resets_the_name(site):
    clock = site["clock"]
    for i in range(9):
        assert try_login(site, "alice", "wrong password", f"10.0.3.{i}").status_code == 401
    clock.t += throttle.WINDOW_S
    for i in range(9):  # 18 failures, but never ten within fifteen minutes
        assert try_login(site, "alice", "wrong password", f"10.0.4.{i}").status_code == 401
    assert try_login(site, "alice", PW, "10.0.5.1").status_code == 303  # resets alice's count
    for i in range(9):
        assert try_login(site, "alice", "wrong password", f"10.0.6.{i}").status_code == 401
    assert try_login(site, "alice", PW, "10.0.5.1").status_code == 303


def test_an_admin_unlocks_a_name_on_the_dashboard_or_an_address_from_the_command_line(site, capsys):
    for i in range(10):
        try_login(site, "alice", "wrong password", "10.7.7.7")
    assert try_login(site, "alice", PW, "10.0.0.5").status_code == 429
    admin, _ = logged_in(site, "root", "10.0.0.9")
    page = admin.http.get("/admin").text
    assert f'name="key" value="{throttle.name_key("alice")}"' in page and 'value="addr:10.7.7.7"' in page
    assert "name alice" in page and "address 10.7.7.7" in page
    admin._csrf_from(page)
    assert admin.http.post("/admin/logins/unlock", data={"csrf": admin.csrf}).status_code == 400  # says nothing
    r = admin.http.post("/admin/logins/unlock", data={"csrf": admin.csrf, "key": throttle.name_key("alice")})
    assert r.status_code == 303
    assert try_login(site, "alice", PW, "10.0.0.5").status_code == 303
    assert try_login(site, "root", PW, "10.7.7.7").status_code == 429  # the address is still locked
    assert main(["annotate", "unlock", "--db", site["url"], "--address", "10.7.7.7"]) == 0
    assert "1 locked or counted login cleared" in capsys.readouterr().out
    assert try_login(site, "root", PW, "10.7.7.7").status_code == 303
    assert main(["annotate", "unlock", "--db", site["url"]]) == 2  # nothing named
