#!/usr/bin/env python
"""`lima-align serve` under load: latency of small chat requests from many concurrent clients, on a
quiet server and while one more client keeps sending huge conversations.

    python benchmarks/serve_load.py                              # 50 clients, 30 s a phase, 40,000-turn histories
    python benchmarks/serve_load.py --clients 8 --duration 5     # a quick check that it works
    python benchmarks/serve_load.py --json-out bench.json

The server is `lima-align serve` in a subprocess (its own process, like in production) on the tiny
random Llama of tests/conftest.py (512-token context), answering up to --max-tokens tokens. Each
client is an asyncio task that loops: send a one-turn question, wait for the whole answer. "Quiet"
phases run only those; "huge" phases add one client that loops sending a conversation of
--huge-turns short turns (1.8 MB of JSON for 40,000), which the server must parse, check and trim to
its newest turns before answering. The two kinds alternate (--rounds pairs) so that other load on the
machine weighs on both alike. A request's latency counts from sending to the last byte; requests still
in flight when a phase ends are awaited and counted. Target (issue 15): p95 of the
small requests under the huge client within 2x of the quiet p95.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from bench_measure import cpu_seconds, percentile

from lima_align.annotate.client import free_port, start_child

REPO = Path(__file__).resolve().parents[1]


def tiny_model(out: Path) -> Path:
    spec = importlib.util.spec_from_file_location("lima_align_tests_conftest", REPO / "tests" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.build_model(out, "llama")


def start_server(model: Path, port: int, max_tokens: int, log: Path) -> subprocess.Popen:
    return start_child(["serve", "--model", str(model), "--port", str(port), f"generate.max_new_tokens={max_tokens}"],
                       port, "/health", name="the server", log=log, timeout_s=120, poll_s=0.2)


def huge_body(turns: int, round_: int) -> bytes:
    # Different text every round, so nothing the server caches makes a later round cheaper.
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"t{i} r{round_}"}
                for i in range(turns + 1 - turns % 2)]
    return json.dumps({"model": "tiny", "messages": messages, "max_tokens": 4}).encode()


async def phase(url: str, clients: int, duration: float, huge_turns: int | None, small_ms: list[float],
                huge_ms: list[float], errors: list[str]) -> float:
    """Send for `duration` seconds, appending latencies (ms) and errors; returns the wall time."""
    end = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=clients + 2)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:

        async def small(c: int) -> None:
            i = 0
            while time.perf_counter() < end:
                ask = f"Question {c}.{i}: how do I boil an egg?"
                body = {"model": "tiny", "messages": [{"role": "user", "content": ask}], "seed": i}
                t0 = time.perf_counter()
                r = await http.post("/v1/chat/completions", json=body)
                if r.status_code != 200:
                    errors.append(f"small: {r.status_code} {r.text[:200]}")
                    return
                small_ms.append(1000 * (time.perf_counter() - t0))
                i += 1

        async def huge() -> None:
            round_ = 0
            while time.perf_counter() < end:
                body = await asyncio.to_thread(huge_body, huge_turns, round_)
                t0 = time.perf_counter()
                r = await http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
                if r.status_code != 200:
                    errors.append(f"huge: {r.status_code} {r.text[:200]}")
                    return
                huge_ms.append(1000 * (time.perf_counter() - t0))
                round_ += 1

        tasks = [small(c) for c in range(clients)] + ([huge()] if huge_turns else [])
        t0 = time.perf_counter()
        await asyncio.gather(*tasks)
        return time.perf_counter() - t0


def summary(small_ms: list[float], wall: float, errors: list[str]) -> dict:
    return {"requests": len(small_ms), "per_s": round(len(small_ms) / wall, 1),
            "p50_ms": round(percentile(small_ms, 0.5), 1), "p95_ms": round(percentile(small_ms, 0.95), 1),
            "max_ms": round(max(small_ms, default=float("nan")), 1), "errors": errors[:5]}


def run(clients: int, duration: float, rounds: int, huge_turns: int, max_tokens: int, workdir: Path) -> dict:
    model = tiny_model(workdir / "tiny-llama")
    port = free_port()
    load_before = os.getloadavg()
    proc = start_server(model, port, max_tokens, workdir / "server.log")
    url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(phase(url, clients, min(3.0, duration), None, [], [], []))  # warm-up: first calls are slower
        # Quiet and huge phases alternate, so a change in the machine's other load hits both alike.
        lat: dict[str, list[float]] = {"quiet": [], "huge": [], "huge_client": []}
        errors: dict[str, list[str]] = {"quiet": [], "huge": []}
        wall = {"quiet": 0.0, "huge": 0.0}
        cpu = {"quiet": 0.0, "huge": 0.0}
        for _ in range(rounds):
            for kind in ("quiet", "huge"):
                cpu0 = cpu_seconds(proc.pid)
                wall[kind] += asyncio.run(phase(url, clients, duration / rounds, huge_turns if kind == "huge" else None,
                                                lat[kind], lat["huge_client"], errors[kind]))
                cpu[kind] += cpu_seconds(proc.pid) - cpu0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    quiet = summary(lat["quiet"], wall["quiet"], errors["quiet"])
    huge = summary(lat["huge"], wall["huge"], errors["huge"])
    huge["huge_client"] = {"requests": len(lat["huge_client"]),
                           "body_mb": round(len(huge_body(huge_turns, 0)) / 1e6, 2),
                           "p50_ms": round(percentile(lat["huge_client"], 0.5), 1),
                           "max_ms": round(max(lat["huge_client"], default=float("nan")), 1)}
    return {"clients": clients, "duration_s": duration, "rounds": rounds, "max_tokens": max_tokens,
            "huge_turns": huge_turns, "quiet": quiet, "with_huge_client": huge,
            "p95_ratio": round(huge["p95_ms"] / quiet["p95_ms"], 2),
            "p50_ratio": round(huge["p50_ms"] / quiet["p50_ms"], 2),
            "server_cpu_s": {"quiet": round(cpu["quiet"], 1), "with_huge_client": round(cpu["huge"], 1)},
            "target_p95_ratio": 2.0, "load_average_before": [round(x, 2) for x in load_before],
            "machine": {"cores": os.cpu_count(), "python": sys.version.split()[0], "platform": platform.platform()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50, help="concurrent clients sending small requests")
    ap.add_argument("--duration", type=float, default=30, help="seconds each kind of phase sends new requests, in all")
    ap.add_argument("--rounds", type=int, default=3, help="quiet/huge phase pairs the duration is split into")
    ap.add_argument("--huge-turns", type=int, default=40000, help="turns in each huge conversation")
    ap.add_argument("--max-tokens", type=int, default=8, help="tokens each small answer may have")
    ap.add_argument("--json-out")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.clients, args.duration, args.rounds, args.huge_turns, args.max_tokens, Path(tmp))
    print(json.dumps(result, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return 1 if result["quiet"]["errors"] or result["with_huge_client"]["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
