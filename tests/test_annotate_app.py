"""The annotation app in-process (FastAPI TestClient): studies, assignment, forged requests, exports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_openai import fake_openai  # noqa: F401 - fixture
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from lima_align import stats
from lima_align.annotate import accounts, assignment, chats, db, export, studies
from lima_align.annotate.app import create_app
from lima_align.annotate.client import Annotator, write_generations
from lima_align.annotate.render import markdown
from lima_align.cli import main

PW = "correct horse battery"


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch):
    """argon2 at the library's cost takes ~0.1-1 s per hash; tests hash dozens. Verification reads the cost
    from the stored hash, so a server in a subprocess checks these cheap hashes cheaply too."""
    from argon2 import PasswordHasher

    monkeypatch.setattr(accounts, "_hasher", lambda: PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture
def site(tmp_path: Path):
    """A database with an admin, three annotators and a pairwise study (overlap 2) of 4 prompts."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    app = create_app(url)
    engine = app.state.engine
    accounts.create_user(engine, "root", PW, "admin")
    uids = {name: accounts.create_user(engine, name, PW, "annotator") for name in ("alice", "bob", "carol")}
    a = write_generations(tmp_path / "a.jsonl", "good", 4, "GOOD answer {i}")
    b = write_generations(tmp_path / "b.jsonl", "bad", 4, "bad answer {i}")
    sid = studies.create_study(engine, "duel", "pairwise", overlap=2, a=a, b=b)
    for uid in uids.values():
        studies.add_member(engine, sid, uid)
    return {"url": url, "app": app, "engine": engine, "sid": sid, "uids": uids, "tmp": tmp_path}


def person(site: dict, name: str) -> Annotator:
    ann = Annotator(TestClient(site["app"], follow_redirects=False))
    ann.login(name, PW)
    return ann


def n_votes(engine) -> int:
    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(db.votes)).scalar_one()


def prefer_good(ann: Annotator, sid: int) -> int:
    """Vote for whichever shown answer is the GOOD one until nothing is left; returns the number of votes."""
    n = 0
    while (item := ann.next_item(sid)) is not None:
        html = ann.http.get(f"/s/{sid}").text
        first = html.index('id="answer-a"')
        choice = "A" if html.index("GOOD answer", first) < html.index('id="answer-b"') else "B"
        assert ann.vote(sid, item, choice).status_code == 303
        n += 1
    return n


def test_pairwise_votes_export_in_original_terms_and_stats_read_them(site):
    sid, engine, tmp = site["sid"], site["engine"], site["tmp"]
    assert prefer_good(person(site, "alice"), sid) == 4
    assert prefer_good(person(site, "bob"), sid) == 4
    assert person(site, "carol").next_item(sid) is None  # every item already has its k = 2 annotators
    out = tmp / "human.jsonl"
    export.export_study(engine, "duel", out)
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 8
    assert {r["judge"] for r in recs} == {"human:alice", "human:bob"}
    # "good" is model_a: whatever order was shown, the stored verdict says "a"
    assert all(r["verdict"] == "a" and r["votes"][0]["verdict"] == "a" for r in recs)
    assert {(r["votes"][0]["order"], r["votes"][0]["raw"]) for r in recs} <= {("ab", "A"), ("ba", "B")}
    first = out.read_bytes()
    export.export_study(engine, "duel", out)
    assert out.read_bytes() == first  # repeatable
    summary = stats.summarize_files([out], n_boot=50)
    assert [p["counts"]["a"] for p in summary["pairwise"]] == [4, 4]
    assert summary["agreement"][0]["tie_discounted_accuracy"] == 1.0
    from lima_align.report import build_report

    page = build_report([out], tmp / "report", n_boot=50)
    assert "human:alice" in page.read_text() and "human:bob" in page.read_text()


def test_forged_requests_are_refused_and_store_nothing(site):
    sid, engine = site["sid"], site["engine"]
    alice, bob = person(site, "alice"), person(site, "bob")
    mine = alice.next_item(sid)
    theirs = bob.next_item(sid)
    assert mine != theirs  # the least-covered item goes first, so the two start on different items
    assert bob.vote(sid, theirs, "A").status_code == 303
    bobs_pending = bob.next_item(sid)
    with engine.connect() as c:
        all_items = [r[0] for r in c.execute(select(db.items.c.id))]
    unassigned = next(i for i in all_items if i not in (mine, bobs_pending))
    before = n_votes(engine)
    assert alice.vote(sid, bobs_pending, "A").status_code == 403     # another's item
    assert alice.vote(sid, unassigned, "A").status_code == 403       # never assigned
    no_token = alice.http.post(f"/s/{sid}/vote", data={"item": str(mine), "choice": "A"})
    assert no_token.status_code == 403                                # no CSRF token
    bad_token = alice.http.post(f"/s/{sid}/vote", data={"csrf": "x" * 43, "item": str(mine), "choice": "A"})
    assert bad_token.status_code == 403
    assert alice.vote(sid, mine, "C").status_code == 400              # not a button on the page
    assert n_votes(engine) == before
    assert alice.vote(sid, mine, "B").status_code == 303
    again = alice.vote(sid, mine, "A")
    assert again.status_code == 409 and "already voted" in again.text
    assert n_votes(engine) == before + 1
    # roles: annotators see no admin page; strangers see nothing
    assert alice.http.get("/admin").status_code == 403
    assert alice.http.get(f"/admin/s/{sid}/export").status_code == 403
    stranger = TestClient(site["app"], follow_redirects=False)
    assert stranger.get(f"/s/{sid}").headers["location"] == "/login"
    assert stranger.post(f"/s/{sid}/vote", data={"item": str(mine), "choice": "A"}).status_code == 403
    # a study the annotator was not invited to
    other = studies.create_study(engine, "other", "absolute", a=site["tmp"] / "a.jsonl")
    assert alice.http.get(f"/s/{other}").status_code == 403
    assert n_votes(engine) == before + 1


def test_security_headers_cookie_and_body_limit(site):
    client = TestClient(site["app"], follow_redirects=False)
    r = client.get("/login")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert "unsafe-inline" not in r.headers["content-security-policy"]
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
    big = client.post("/login", content=b"x" * (2 << 20), headers={"content-type": "application/x-www-form-urlencoded"})
    assert big.status_code == 413
    secure = TestClient(create_app(site["url"], secure_cookies=True), follow_redirects=False)
    assert "secure" in secure.get("/login").headers["set-cookie"].lower()
    assert client.get("/no/such/page").status_code == 404
    assert "Sorry" in client.get("/no/such/page").text


def test_markdown_is_sanitised():
    from html.parser import HTMLParser

    class Tags(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags, self.attrs = [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            self.attrs += attrs

    html = str(markdown('<script>window.__pwned=1</script> <img src=x onerror="alert(1)"> '
                        '[click](javascript:alert(1)) <a href="javascript:alert(2)">x</a> **bold** [ok](https://e.org)'))
    parsed = Tags()
    parsed.feed(html)
    assert "script" not in parsed.tags and "img" not in parsed.tags
    assert not [k for k, _ in parsed.attrs if k.startswith("on")]
    assert [v for k, v in parsed.attrs if k == "href"] == ["https://e.org"]
    assert "&lt;script&gt;" in html and "<strong>bold</strong>" in html  # the payload is visible as text


def test_login_and_invitations(site):
    engine, sid = site["engine"], site["sid"]
    client = TestClient(site["app"], follow_redirects=False)
    ann = Annotator(client)
    with pytest.raises(RuntimeError):
        ann.login("alice", "wrong password")
    token = accounts.create_invite(engine, sid)
    page = client.get(f"/join/{token}")
    ann._csrf_from(page.text)
    r = client.post(f"/join/{token}", data={"csrf": ann.csrf, "username": "dave", "password": PW})
    assert r.status_code == 303 and r.headers["location"] == f"/s/{sid}"
    ann._csrf_from(client.get("/").text)
    assert ann.next_item(sid) is not None  # joined the study, and logged in
    assert TestClient(site["app"]).get(f"/join/{token}").status_code == 404  # one time only
    again = Annotator(TestClient(site["app"], follow_redirects=False))
    again._csrf_from(again.http.get("/login").text)
    r = again.http.post(f"/join/{token}", data={"csrf": again.csrf, "username": "eve", "password": PW})
    assert r.status_code == 400 and "already used" in r.text
    with engine.connect() as c:  # a spent token creates no account
        assert c.execute(select(db.users.c.id).where(db.users.c.username == "eve")).first() is None
    with engine.connect() as c:
        assert accounts.find_invite(c, token) is None


def test_absolute_review_exports(site):
    engine, tmp = site["engine"], site["tmp"]
    sid = studies.create_study(engine, "rate", "absolute", overlap=1, a=tmp / "a.jsonl", scale="helpfulness_6")
    studies.add_member(engine, sid, site["uids"]["alice"])
    alice = person(site, "alice")
    while (item := alice.next_item(sid)) is not None:
        assert alice.vote(sid, item, "5", {"comment": "fine"}).status_code == 303
    export.export_study(engine, "rate", tmp / "rate.jsonl")
    recs = [json.loads(x) for x in (tmp / "rate.jsonl").read_text().splitlines()]
    assert [r["score"] for r in recs] == [5] * 4 and recs[0]["scale"] == "helpfulness_6"
    assert stats.summarize_files([tmp / "rate.jsonl"], n_boot=50)["absolute"][0]["n"] == 4

    data = tmp / "cands.jsonl"
    data.write_text("".join(json.dumps({"id": f"r{i}", "source": "t", "messages": [
        {"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}], "meta": {}}) + "\n"
        for i in range(3)))
    rid = studies.create_study(engine, "review", "review", dataset=data)
    studies.add_member(engine, rid, site["uids"]["alice"])
    decisions = ["accept", "reject", "edit"]
    for d in decisions:
        item = alice.next_item(rid)
        extra = {"content_0": "q edited", "content_1": "a edited"} if d == "edit" else None
        assert alice.vote(rid, item, d, extra).status_code == 303
    export.export_study(engine, "review", tmp / "decisions.jsonl")
    rows = [json.loads(x) for x in (tmp / "decisions.jsonl").read_text().splitlines()]
    assert [r["decision"] for r in rows] == decisions
    assert rows[2]["edited"]["messages"][1]["content"] == "a edited" and rows[0]["edited"] is None
    with engine.connect() as c:  # the original stays as it was
        payload = json.loads(c.execute(select(db.items.c.payload).where(db.items.c.key == "r2")).scalar_one())
    assert payload["record"]["messages"][1]["content"] == "a2"


def test_dialogue_chat_rate_export(site, fake_openai):  # noqa: F811
    engine, tmp = site["engine"], site["tmp"]
    sid = studies.create_study(engine, "chat", "dialogue", chat_url=fake_openai.base_url, chat_model="m1")
    studies.add_member(engine, sid, site["uids"]["bob"])
    bob = person(site, "bob")
    bob.http.get(f"/s/{sid}")
    assert bob.http.post(f"/s/{sid}/new", data={"csrf": bob.csrf}).status_code == 303
    cid = chats.latest_conversation(engine, sid, site["uids"]["bob"])["id"]
    for text in ("hello", "again"):
        r = bob.http.post(f"/s/{sid}/say", data={"csrf": bob.csrf, "conversation": cid, "message": text})
        assert r.status_code == 303
    assert bob.http.post(f"/s/{sid}/rate", data={"csrf": bob.csrf, "conversation": cid, "turn": "2",
                                                 "score": "excellent"}).status_code == 303
    assert bob.http.post(f"/s/{sid}/rate", data={"csrf": bob.csrf, "conversation": cid, "turn": "2",
                                                 "score": "fail"}).status_code == 409
    from fake_openai import http_error

    fake_openai.queue(http_error(400, "context too long"))
    failed = bob.http.post(f"/s/{sid}/say", data={"csrf": bob.csrf, "conversation": cid, "message": "third"})
    assert failed.status_code == 502 and "did not answer" in failed.text
    assert len(chats.latest_conversation(engine, sid, site["uids"]["bob"])["messages"]) == 4  # nothing half-stored
    page = bob.http.get(f"/s/{sid}")
    assert page.status_code == 200 and "Rated: excellent" in page.text and page.text.count('value="fail"') == 1
    alice = person(site, "alice")
    assert alice.http.post(f"/s/{sid}/rate", data={"csrf": alice.csrf, "conversation": cid, "turn": "1",
                                                   "score": "fail"}).status_code == 403
    export.export_study(engine, "chat", tmp / "turns.jsonl")
    (rec,) = [json.loads(x) for x in (tmp / "turns.jsonl").read_text().splitlines()]
    assert rec["prompt_id"] == f"{cid}#t2" and rec["turn"] == 2 and rec["score"] == "excellent"
    assert rec["output"] == "echo: again" and [m["content"] for m in rec["prompt"]] == ["hello", "echo: hello", "again"]
    (conv,) = [json.loads(x) for x in (tmp / "turns.conversations.jsonl").read_text().splitlines()]
    assert conv["mode"] == "human" and conv["model"] == "m1" and len(conv["messages"]) == 4


def test_agreement_with_an_attached_llm_judge(site):
    sid, engine, tmp = site["sid"], site["engine"], site["tmp"]
    prefer_good(person(site, "alice"), sid)
    prefer_good(person(site, "bob"), sid)
    human = tmp / "human.jsonl"
    export.export_study(engine, "duel", human)
    # an LLM judge that agrees on two prompts, says tie on one, and the opposite on one (written b-vs-a)
    llm = []
    for r, v in zip([json.loads(x) for x in human.read_text().splitlines()][::2], ["a", "a", "tie", "b"], strict=True):
        llm.append({**r, "judge": "api:m", "id": "j" + r["prompt_id"], "model_a": r["model_b"], "model_b": r["model_a"],
                    "output_a": r["output_b"], "output_b": r["output_a"], "verdict": stats.FLIP[v],
                    "votes": [{"order": "ab", "raw": "", "verdict": stats.FLIP[v]}]})
    admin = person(site, "root")
    admin._csrf_from(admin.http.get(f"/admin/s/{sid}").text)
    body = "".join(json.dumps(r) + "\n" for r in llm).encode()
    r = admin.http.post(f"/admin/s/{sid}/judges", data={"csrf": admin.csrf}, files={"file": ("llm.jsonl", body)})
    assert r.status_code == 303
    link = admin.http.post(f"/admin/s/{sid}/invite", data={"csrf": admin.csrf})
    assert link.status_code == 200 and "/join/" in link.text
    with engine.connect() as c:
        study = studies.get_study(c, sid=sid)
    table = export.agreement_table(engine, study, export.attached_judgments(engine, sid))
    assert table["people"]["tie_discounted_accuracy"] == 1.0 and table["people"]["n"] == 4
    (j,) = table["judges"]
    assert j["judge"] == "api:m" and j["n"] == 8 and j["tie_discounted_accuracy"] == pytest.approx((4 + 1 + 0) / 8)
    page = admin.http.get(f"/admin/s/{sid}")
    assert page.status_code == 200 and "api:m" in page.text and "0.625" in page.text


def test_cli_round_trip(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    a = write_generations(tmp_path / "a.jsonl", "m1", 2)
    b = write_generations(tmp_path / "b.jsonl", "m2", 2)
    monkeypatch.setenv("ADMIN_PW", PW)
    assert main(["annotate", "create-admin", "--db", url, "--username", "root", "--password-env", "ADMIN_PW"]) == 0
    monkeypatch.setenv("NEW_PW", "another long password")
    assert main(["annotate", "set-password", "--db", url, "--username", "root", "--password-env", "NEW_PW"]) == 0
    assert accounts.authenticate(db.connect(url), "root", "another long password") is not None
    assert main(["annotate", "create-study", "--db", url, "--kind", "pairwise", "--a", str(a), "--b", str(b),
                 "--overlap", "3", "--name", "s1"]) == 0
    assert main(["annotate", "create-study", "--db", url, "--kind", "pairwise", "--a", str(a), "--b", str(a),
                 "--name", "s2"]) == 2  # same model twice: a user error, not a traceback
    assert main(["annotate", "invite", "--db", url, "--study", "s1", "--count", "2"]) == 0
    links = [x for x in capsys.readouterr().out.splitlines() if "/join/" in x]
    assert len(links) == 2 and links[0] != links[1]
    assert main(["annotate", "export", "--db", url, "--study", "s1", "--output", str(tmp_path / "o.jsonl")]) == 0
    assert (tmp_path / "o.jsonl").read_text() == ""
    assert main(["annotate", "progress", "--db", url]) == 0
    assert "s1 (pairwise, 2 items x 3): 0/6" in capsys.readouterr().out
    assert main(["annotate", "export", "--db", url, "--study", "nope", "--output", str(tmp_path / "x")]) == 2


def test_absolute_agreement_and_overlap_limit(site):
    engine, tmp, uids = site["engine"], site["tmp"], site["uids"]
    sid = studies.create_study(engine, "rate2", "absolute", overlap=2, a=tmp / "a.jsonl")
    with db.read(engine) as c:
        study = studies.get_study(c, sid=sid)
    labels = {"alice": ["pass", "pass", "fail", "excellent"], "bob": ["pass", "fail", "fail", "excellent"],
              "carol": []}
    for name in ("alice", "bob", "carol"):
        for label in labels[name]:
            item = assignment.next_item(engine, study, uids[name])
            assignment.record_vote(engine, study, uids[name], item["id"], label)
    assert assignment.next_item(engine, study, uids["carol"]) is None  # 4 items x k = 2, all taken
    judge = [{"type": "absolute", "scale": "fail_pass_excellent", "judge": "api:j", "prompt_id": f"p{i}",
              "model": m, "score": "pass"} for i in range(4) for m in ("good", "someone-else")]
    table = export.agreement_table(engine, study, judge)
    assert table["exact"] == {"n": 4, "exact": 0.75, "kappa": pytest.approx(0.4375 / 0.6875)} and table["people"] is None
    (j,) = table["judges"]  # matched on prompt id and the study's model: 8 votes, 3 of them "pass"
    assert (j["n"], j["exact"], j["kappa"]) == (8, 3 / 8, 0.0)


def test_an_abandoned_item_is_handed_out_again(site):
    engine, tmp, uids = site["engine"], site["tmp"], site["uids"]
    sid = studies.create_study(engine, "one-each", "absolute", overlap=1, a=tmp / "a.jsonl")
    with db.read(engine) as c:
        study = studies.get_study(c, sid=sid)
    left = assignment.next_item(engine, study, uids["alice"])  # alice opens an item and closes the tab
    for _ in range(3):
        item = assignment.next_item(engine, study, uids["bob"])
        assignment.record_vote(engine, study, uids["bob"], item["id"], "pass")
    assert assignment.next_item(engine, study, uids["carol"]) is None  # alice's slot is still fresh
    with engine.begin() as c:
        c.execute(db.assignments.update().where(db.assignments.c.user_id == uids["alice"])
                  .values(created=0.0))
    again = assignment.next_item(engine, study, uids["carol"])
    assert again is not None and again["id"] == left["id"]
    assignment.record_vote(engine, study, uids["carol"], again["id"], "fail")
    assignment.record_vote(engine, study, uids["alice"], left["id"], "pass")  # alice came back after all: kept
    assert assignment.next_item(engine, study, uids["carol"]) is None


def test_admin_creates_a_study_from_the_page(site):
    tmp = site["tmp"]
    admin = person(site, "root")
    admin._csrf_from(admin.http.get("/admin").text)
    files = {"a": ("a.jsonl", (tmp / "a.jsonl").read_bytes()), "b": ("b.jsonl", (tmp / "b.jsonl").read_bytes())}
    r = admin.http.post("/admin/studies", data={"csrf": admin.csrf, "name": "from-page", "kind": "pairwise",
                                                "overlap": "2"}, files=files)
    assert r.status_code == 303
    with db.read(site["engine"]) as c:
        study = studies.get_study(c, name="from-page")
    assert study["overlap"] == 2 and study["config"]["model_a"] == "good"
    bad = admin.http.post("/admin/studies", data={"csrf": admin.csrf, "name": "broken", "kind": "pairwise"},
                          files={"a": files["a"]})
    assert bad.status_code == 400 and "two generation files" in bad.text
    alice = person(site, "alice")
    assert alice.http.post("/admin/studies", data={"csrf": alice.csrf, "name": "x", "kind": "pairwise"},
                           files=files).status_code == 403


def test_sqlite_writers_queue_on_the_write_lock(tmp_path: Path):
    """db.write: a second writer (another thread, or another engine as `serve --workers` has) waits for the
    first to commit instead of sleeping in SQLite's busy handler, and then sees its commit."""
    import threading
    import time

    url = f"sqlite:///{tmp_path / 'w.db'}"
    first, second = db.connect(url), db.connect(url)
    entered, order = threading.Event(), []

    def other() -> None:
        with db.write(second) as c:
            order.append(("second", c.execute(select(func.count()).select_from(db.settings)).scalar()))

    with db.write(first) as c:
        c.execute(db.settings.insert().values(key="k", value="v"))
        t = threading.Thread(target=lambda: (entered.set(), other()))
        t.start()
        entered.wait()
        time.sleep(0.2)
        order.append(("first", None))
    t.join(10)
    assert order == [("first", None), ("second", 1)]
    assert (tmp_path / "w.db-writelock").exists()
