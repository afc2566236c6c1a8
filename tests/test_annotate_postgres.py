"""The annotation app on PostgreSQL, when LIMA_ALIGN_TEST_POSTGRES_URL names a scratch database.

The tables of that database are dropped and recreated: point it at an empty database made for the test,
e.g. postgresql+psycopg://lima:lima@127.0.0.1/lima_test.
"""

from __future__ import annotations

import json
import os
import threading

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from lima_align import stats
from lima_align.annotate import accounts, assignment, db, export, studies
from lima_align.annotate.app import create_app
from lima_align.annotate.client import Annotator, write_generations

URL = os.environ.get("LIMA_ALIGN_TEST_POSTGRES_URL")
PW = "correct horse battery"
pytestmark = pytest.mark.skipif(not URL, reason="set LIMA_ALIGN_TEST_POSTGRES_URL to a scratch PostgreSQL database")


@pytest.fixture
def engine(monkeypatch):
    from argon2 import PasswordHasher

    monkeypatch.setattr(accounts, "_hasher", lambda: PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    eng = db.connect(URL, create=False)
    db.metadata.drop_all(eng)
    db.metadata.create_all(eng)
    yield eng
    eng.dispose()


def test_postgres_votes_races_and_export(engine, tmp_path):
    a = write_generations(tmp_path / "a.jsonl", "m1", 30)
    b = write_generations(tmp_path / "b.jsonl", "m2", 30)
    sid = studies.create_study(engine, "pg", "pairwise", overlap=2, a=a, b=b)
    with db.read(engine) as c:
        study = studies.get_study(c, sid=sid)
    uids = [accounts.create_user(engine, f"p{i}", PW, "annotator") for i in range(8)]
    for uid in uids:
        studies.add_member(engine, sid, uid)
    errors: list[str] = []

    def work(uid: int) -> None:
        try:
            while (item := assignment.next_item(engine, study, uid)) is not None:
                assignment.record_vote(engine, study, uid, item["id"], "A")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(u,)) for u in uids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    with db.read(engine) as c:
        per_item = c.execute(select(db.votes.c.item_id, func.count()).group_by(db.votes.c.item_id)).all()
    assert len(per_item) == 30 and all(n == 2 for _, n in per_item)  # exactly k per item, none over-filled

    app = create_app(URL)
    ann = Annotator(TestClient(app, follow_redirects=False))
    ann.login("p0", PW)
    assert ann.next_item(sid) is None  # every item is full now: p0 sees the done page
    with db.read(engine) as c:
        mine = c.execute(select(db.votes.c.item_id).where(db.votes.c.user_id == uids[0])).scalars().first()
    assert ann.vote(sid, mine, "B").status_code == 409
    out = tmp_path / "pg.jsonl"
    export.export_study(engine, "pg", out)
    first = out.read_bytes()
    export.export_study(engine, "pg", out)
    assert out.read_bytes() == first and len(first.splitlines()) == 60
    assert json.loads(first.splitlines()[0])["judge"].startswith("human:p")
    assert stats.summarize_files([out], n_boot=20)["n_records"] == 60
