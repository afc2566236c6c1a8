#!/usr/bin/env python
"""Judging throughput against a local OpenAI-compatible server that answers after a fixed latency.

Judges N prompts x 2 orders with `judge.judge_pairwise` through `api.ChatClient` and an `ApiJudge`,
at several concurrency levels, each with a fresh cache, then runs the last level again into a new
output file with the same cache (target: 0 calls). For each level it prints wall time, requests/s
and the ratio of the wall time to the ideal requests x latency / concurrency (target <= 1.5).

    python benchmarks/judge_throughput.py                         # 300 prompts, 1 s latency, ~2.5 min
    python benchmarks/judge_throughput.py --concurrency 8 32 --c1-prompts 0

Concurrency 1 would take requests x latency (600 s for 300 prompts), so it runs on --c1-prompts
prompts (default 20) and its full-size time is extrapolated (requests x measured seconds/request).

The server is tests/fake_openai.py's FakeOpenAI when it is importable, else a small threaded
server defined here; both answer on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from lima_align.api import ChatClient  # noqa: E402
from lima_align.judge import judge_pairwise  # noqa: E402
from lima_align.judges import ApiJudge  # noqa: E402


def verdict_for(request: dict[str, Any]) -> str:
    """What the fake judge says: prefer the longer response it was shown (cheap, deterministic)."""
    text = request["messages"][0]["content"]
    a = text.split("<response_a>", 1)[-1].split("</response_a>", 1)[0]
    b = text.split("<response_b>", 1)[-1].split("</response_b>", 1)[0]
    return f"Both address the request.\nVerdict: {'A' if len(a) > len(b) else 'B' if len(b) > len(a) else 'tie'}"


class _TinyServer:
    """Fallback when tests/fake_openai.py is absent: answers every chat request after `latency_s`."""

    def __init__(self, latency_s: float):
        self.latency_s, self.requests, self._lock = latency_s, 0, threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real endpoint

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with server._lock:
                    server.requests += 1
                time.sleep(server.latency_s)
                text = verdict_for(request)
                body = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                                "finish_reason": "stop"}],
                                   "usage": {"prompt_tokens": 100, "completion_tokens": 8}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

        self._httpd = Server(("127.0.0.1", 0), Handler)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> _TinyServer:
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def make_server(latency_s: float) -> tuple[Any, str]:
    try:
        from fake_openai import FakeOpenAI
    except ImportError:
        return _TinyServer(latency_s), "in-script threaded server"
    return FakeOpenAI(verdict_for, latency_s=latency_s), "tests/fake_openai.py FakeOpenAI"


def generations(model: str, n: int, offset: int) -> list[dict[str, Any]]:
    return [{"id": f"{model}:q{i}", "prompt_id": f"q{i}", "model": model,
             "messages": [{"role": "user", "content": f"Question {i}: explain something in a few sentences."}],
             "output": f"Answer {i} from {model}. " + "More detail. " * ((i * 7 + offset) % 13),
             "finish_reason": "eot", "tokens": None} for i in range(n)]


def run(server: Any, n: int, concurrency: int, work: Path, tag: str, cache: Path) -> dict[str, Any]:
    before = server.requests
    client = ChatClient(server.base_url, "fake-judge", max_concurrency=concurrency, max_retries=2, timeout_s=60)
    t0 = time.perf_counter()
    summary = judge_pairwise(generations("model-a", n, 0), generations("model-b", n, 5), [ApiJudge(client)],
                             work / f"{tag}.jsonl", cache_path=cache, max_concurrency=concurrency,
                             progress=False, log=lambda *_: None)
    wall = time.perf_counter() - t0
    return {"prompts": n, "concurrency": concurrency, "wall_s": round(wall, 2), "calls": summary["calls"],
            "cached": summary["cached"], "server_requests": server.requests - before,
            "requests_per_s": round((server.requests - before) / wall, 2) if wall > 0 else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=300)
    ap.add_argument("--latency", type=float, default=1.0, help="seconds the server takes per answer")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--c1-prompts", type=int, default=20,
                    help="prompts for concurrency 1 (extrapolated to --prompts); 0 skips it")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()

    server, kind = make_server(args.latency)
    rows = []
    with server, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print(f"server: {kind}, latency {args.latency:g} s; {args.prompts} prompts x 2 orders = "
              f"{2 * args.prompts} requests; python {platform.python_version()}, {platform.machine()}")
        for c in args.concurrency:
            n = args.prompts
            if c == 1:
                if args.c1_prompts <= 0:
                    continue
                n = min(args.c1_prompts, args.prompts)
            row = run(server, n, c, work, f"c{c}", work / f"cache-c{c}.sqlite")
            requests = 2 * args.prompts
            per_request = row["wall_s"] / row["server_requests"]
            row["wall_s_full"] = round(per_request * requests, 1) if n != args.prompts else row["wall_s"]
            row["extrapolated"] = n != args.prompts
            row["ideal_s"] = round(requests * args.latency / c, 2)
            row["ratio_to_ideal"] = round(row["wall_s_full"] / row["ideal_s"], 3) if row["ideal_s"] else None
            rows.append(row)
        last = args.concurrency[-1]
        again = run(server, args.prompts, last, work, "again", work / f"cache-c{last}.sqlite")
        again["note"] = f"second run of concurrency {last} into a new output file, same cache"
        rows.append(again)

    print(f"\n{'concurrency':>11} {'prompts':>7} {'requests':>8} {'wall s':>8} {'req/s':>7} {'full-size s':>11} "
          f"{'ideal s':>8} {'ratio':>6}")
    for r in rows[:-1]:
        full = f"{r['wall_s_full']:.1f}" + ("*" if r["extrapolated"] else "")
        print(f"{r['concurrency']:>11} {r['prompts']:>7} {r['server_requests']:>8} {r['wall_s']:>8.2f} "
              f"{r['requests_per_s']:>7.2f} {full:>11} {r['ideal_s']:>8.2f} {r['ratio_to_ideal'] or '-':>6}")
    if any(r.get("extrapolated") for r in rows[:-1]):
        print("* extrapolated: measured seconds per request x full-size requests")
    a = rows[-1]
    print(f"\nsecond run (concurrency {a['concurrency']}, same cache, new output file): {a['calls']} calls made, "
          f"{a['server_requests']} requests reached the server, {a['cached']} answers from the cache, "
          f"{a['wall_s']:.2f} s (target: 0 calls)")
    ratios = [r["ratio_to_ideal"] for r in rows[:-1] if r["ratio_to_ideal"] is not None]
    worst = max(ratios) if ratios else None
    ok = a["calls"] == 0 and (worst is None or worst <= 1.5)
    print(f"worst ratio to ideal: {worst} (target <= 1.5) -> {'OK' if ok else 'MISSED'}")
    if args.json_out:
        args.json_out.write_text(json.dumps({"latency_s": args.latency, "server": kind, "rows": rows}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
