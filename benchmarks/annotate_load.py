#!/usr/bin/env python
"""Annotation server under load: votes per second with N concurrent annotators, and the latency of
showing the next item (the GET that assigns and renders it), through the real HTTP pages.

    python benchmarks/annotate_load.py                          # 20 annotators x 100 votes, SQLite
    python benchmarks/annotate_load.py --clients 4 --votes 10   # a quick check that it works
    python benchmarks/annotate_load.py --sqlite-sync normal     # no fsync per vote (see annotate/db.py)
    python benchmarks/annotate_load.py --workers 4              # four server processes
    python benchmarks/annotate_load.py --db postgresql+psycopg://user:pw@127.0.0.1/bench   # an empty database
    python benchmarks/annotate_load.py --json-out bench.json

The server runs as `lima-align annotate serve` in a subprocess (its own cores, like in production);
each client is a thread with its own session that logs in, then loops: open the study page (timed as
"next item"), press a button (timed as "vote"). Votes/s is stored votes over the wall time of the
voting phase (after every client has logged in). Accounts use cheap argon2 parameters so logins do not
weigh on the numbers. Targets (issue 6): >= 200 votes/s and p95 "next item" <= 50 ms on SQLite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_measure import cpu_seconds, percentile

from lima_align.annotate import accounts, db, studies
from lima_align.annotate.client import Annotator, free_port, start_server, write_generations

PW = "benchmark password"


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and its live children (uvicorn --workers: the worker processes)."""
    total = cpu_seconds(pid, reaped_children=True)
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        kids = []
    return total + sum(_tree_cpu_s(int(k)) for k in kids)


def run(db_url: str, clients: int, votes: int, overlap: int, workdir: Path, sqlite_sync: str, workers: int) -> dict:
    from argon2 import PasswordHasher

    accounts._hasher = lambda: PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # logins are not measured
    engine = db.connect(db_url)
    n_items = clients * votes // overlap + clients  # slack so nobody runs out near the end
    a = write_generations(workdir / "a.jsonl", "m1", n_items, "An answer of moderate length, number {i}. " * 8)
    b = write_generations(workdir / "b.jsonl", "m2", n_items, "Another answer, somewhat different, {i}. " * 8)
    name = f"bench-{int(time.time())}"
    sid = studies.create_study(engine, name, "pairwise", overlap=overlap, a=a, b=b)
    names = [f"{name}-u{i}" for i in range(clients)]
    for n in names:
        studies.add_member(engine, sid, accounts.create_user(engine, n, PW, "annotator"))
    engine.dispose()

    port = free_port()
    extra = ["--sqlite-sync", sqlite_sync] if db_url.startswith("sqlite") else []
    extra += ["--workers", str(workers)]
    proc = start_server(db_url, port, log=workdir / "server.log", extra_args=extra)
    next_ms: list[float] = []
    vote_ms: list[float] = []
    errors: list[str] = []
    ready = threading.Barrier(clients + 1)
    lock = threading.Lock()

    def client(user: str) -> None:
        ann = Annotator.connect(f"http://127.0.0.1:{port}", timeout_s=120)
        mine_next, mine_vote = [], []
        try:
            ann.login(user, PW)
            ready.wait()
            for i in range(votes):
                t0 = time.perf_counter()
                item = ann.next_item(sid)
                t1 = time.perf_counter()
                if item is None:
                    errors.append(f"{user}: ran out of items")
                    break
                r = ann.vote(sid, item, ("A", "B", "neither")[i % 3])
                t2 = time.perf_counter()
                if r.status_code != 303:
                    errors.append(f"{user}: vote answered {r.status_code}")
                    break
                mine_next.append(1000 * (t1 - t0))
                mine_vote.append(1000 * (t2 - t1))
        except Exception as e:  # noqa: BLE001 - counted and reported
            errors.append(f"{user}: {e!r}")
            ready.abort()
        finally:
            ann.close()
            with lock:
                next_ms.extend(mine_next)
                vote_ms.extend(mine_vote)

    threads = [threading.Thread(target=client, args=(u,)) for u in names]
    try:
        for t in threads:
            t.start()
        ready.wait()
        start, server0, client0 = time.perf_counter(), _tree_cpu_s(proc.pid), time.process_time()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        server_cpu, client_cpu = _tree_cpu_s(proc.pid) - server0, time.process_time() - client0
    finally:
        proc.terminate()  # SIGTERM: uvicorn stops its worker processes too
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {"db": db_url.split("://")[0], "sqlite_sync": sqlite_sync if db_url.startswith("sqlite") else None, "workers": workers, "clients": clients, "votes_per_client": votes, "overlap": overlap,
            "votes": len(vote_ms), "errors": errors[:5], "wall_s": round(wall, 2),
            "votes_per_s": round(len(vote_ms) / wall, 1),
            "next_item_ms": {"p50": round(percentile(next_ms, 0.5), 1), "p95": round(percentile(next_ms, 0.95), 1)},
            "vote_ms": {"p50": round(percentile(vote_ms, 0.5), 1), "p95": round(percentile(vote_ms, 0.95), 1)},
            # Where the CPU went during the voting phase (server and the client threads share this machine):
            "cpu_s": {"server": round(server_cpu, 2), "clients": round(client_cpu, 2),
                      "server_ms_per_vote": round(1000 * server_cpu / max(1, len(vote_ms)), 2),
                      "cores": os.cpu_count()},
            "targets": {"votes_per_s": 200, "next_item_p95_ms": 50},
            "machine": {"python": sys.version.split()[0], "platform": platform.platform()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--votes", type=int, default=100, help="votes per client")
    ap.add_argument("--overlap", type=int, default=3)
    ap.add_argument("--db", help="database URL (default: a fresh SQLite file in a temporary folder)")
    ap.add_argument("--sqlite-sync", default="full", choices=("full", "normal"),
                    help="the server's SQLite durability mode (see annotate/db.py)")
    ap.add_argument("--workers", type=int, default=1, help="server processes")
    ap.add_argument("--json-out")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{Path(tmp) / 'bench.db'}"
        result = run(url, args.clients, args.votes, args.overlap, Path(tmp), args.sqlite_sync, args.workers)
    print(json.dumps(result, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
