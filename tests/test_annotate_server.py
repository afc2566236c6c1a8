"""The annotation server as a real process: many annotators at once, and a kill -9 in the middle of a study."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from lima_align.annotate import accounts, db, studies
from lima_align.annotate.client import Annotator, free_port, start_server, write_generations

PW = "correct horse battery"


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch):
    """Cheap argon2 parameters for the test accounts (the server reads the cost from each stored hash)."""
    from argon2 import PasswordHasher

    monkeypatch.setattr(accounts, "_hasher", lambda: PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


def make_study(tmp: Path, url: str, n_items: int, overlap: int, people: int) -> tuple[int, list[str]]:
    engine = db.connect(url)
    a = write_generations(tmp / "a.jsonl", "m1", n_items)
    b = write_generations(tmp / "b.jsonl", "m2", n_items)
    sid = studies.create_study(engine, "load", "pairwise", overlap=overlap, a=a, b=b)
    names = [f"ann{i:02d}" for i in range(people)]
    for name in names:
        studies.add_member(engine, sid, accounts.create_user(engine, name, PW, "annotator"))
    engine.dispose()
    return sid, names


def stored_votes(url: str) -> list[tuple[str, int]]:
    engine = db.connect(url)
    with engine.connect() as c:
        rows = c.execute(select(db.users.c.username, db.votes.c.item_id)
                         .join(db.users, db.users.c.id == db.votes.c.user_id)).all()
    engine.dispose()
    return [(u, i) for u, i in rows]


def test_twenty_annotators_fifty_votes_each_nothing_lost_nothing_doubled(tmp_path):
    url = f"sqlite:///{tmp_path / 'load.db'}"
    sid, names = make_study(tmp_path, url, n_items=220, overlap=5, people=20)
    port = free_port()
    proc = start_server(url, port, log=tmp_path / "server.log")
    acked: dict[str, list[int]] = {n: [] for n in names}
    refused_twice: list[int] = []
    errors: list[str] = []
    start = threading.Barrier(len(names))

    def work(name: str) -> None:
        ann = Annotator.connect(f"http://127.0.0.1:{port}", timeout_s=60)
        try:
            ann.login(name, PW)
            start.wait()
            for n in range(50):
                item = ann.next_item(sid)
                if item is None:
                    errors.append(f"{name}: nothing left after {n} votes")
                    return
                r = ann.vote(sid, item, ("A", "B", "neither")[n % 3])
                if r.status_code != 303:
                    errors.append(f"{name}: vote answered {r.status_code}")
                    return
                acked[name].append(item)
                if n % 10 == 0:  # a double submission (a double click, a replayed request)
                    refused_twice.append(ann.vote(sid, item, "A").status_code)
        except Exception as e:  # noqa: BLE001 - reported below with the annotator's name
            errors.append(f"{name}: {e!r}")
        finally:
            ann.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    finally:
        proc.kill()
        proc.wait()
    assert errors == []
    assert refused_twice == [409] * 100
    stored = stored_votes(url)
    assert len(stored) == 1000 and len(set(stored)) == 1000
    assert sorted(stored) == sorted((n, i) for n, items in acked.items() for i in items)
    per_item: dict[int, int] = {}
    for _, item in stored:
        per_item[item] = per_item.get(item, 0) + 1
    assert max(per_item.values()) <= 5  # never more annotators on an item than the overlap asks


def test_kill_9_mid_study_loses_no_acknowledged_vote(tmp_path):
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    sid, names = make_study(tmp_path, url, n_items=400, overlap=1, people=4)
    port = free_port()
    log = tmp_path / "server.log"
    proc = start_server(url, port, log=log)
    acked: list[tuple[str, int]] = []
    people = {}
    for name in names:
        people[name] = Annotator.connect(f"http://127.0.0.1:{port}", timeout_s=10)
        people[name].login(name, PW)
    stop = threading.Event()

    def work(name: str) -> None:
        ann = people[name]
        while not stop.is_set():
            try:
                item = ann.next_item(sid)
                if item is not None and ann.vote(sid, item, "A").status_code == 303:
                    acked.append((name, item))
            except httpx.HTTPError:
                return  # the server is gone: whatever was not acknowledged may or may not be stored

    threads = [threading.Thread(target=work, args=(n,)) for n in names]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acked) < 25 and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, 9)
    proc.wait()
    for t in threads:
        t.join(timeout=30)
    stop.set()
    assert len(acked) >= 25
    proc = start_server(url, port, log=log)
    try:
        stored = set(stored_votes(url))
        assert set(acked) <= stored
        # the same cookies still work after the restart (the signing key is in the database)
        ann = people[names[0]]
        item = ann.next_item(sid)
        assert item is not None and ann.vote(sid, item, "B").status_code == 303
        assert (names[0], item) in set(stored_votes(url))
    finally:
        proc.kill()
        proc.wait()
        for ann in people.values():
            ann.close()


def test_a_child_server_that_exits_is_reported_with_its_status_and_log(tmp_path):
    from lima_align.annotate.client import start_child

    log = tmp_path / "child.log"
    with pytest.raises(RuntimeError) as err:
        start_child(["no-such-stage"], free_port(), "/health", name="the test server", log=log, timeout_s=60)
    assert str(err.value) == f"the test server exited with 2; see {log}"
    assert "no-such-stage" in log.read_text()  # argparse's complaint went to the log, not to the terminal
