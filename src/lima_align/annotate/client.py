"""A scripted annotator speaking HTTP to the app, and the app in a subprocess: for tests and the load benchmark.

The annotator goes through the same pages a person does (log in, open the study, press a button), parsing
the CSRF token and the item id out of the HTML, so what it measures is what a browser would get.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
import httpx

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
ITEM = re.compile(r'name="item" value="(\d+)"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_child(args: list[str], port: int, health_path: str, *, name: str, log: Path | None = None,
                timeout_s: float = 60.0, poll_s: float = 0.1) -> subprocess.Popen:
    """`lima-align ARGS` in a child process, returned once http://127.0.0.1:PORT/HEALTH_PATH answers 200.
    The annotation app's tests and both load benchmarks (serve, annotate) start their servers this way."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen([sys.executable, "-m", "lima_align", *args], stdout=out, stderr=subprocess.STDOUT)
    see = f"; see {log}" if log else ""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}{see}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{health_path}", timeout=1.0).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(poll_s)
    proc.kill()
    raise RuntimeError(f"{name} did not answer within {timeout_s:.0f} s{see}")


def start_server(db_url: str, port: int, *, log: Path | None = None, timeout_s: float = 60.0,
                 extra_args: list[str] | None = None) -> subprocess.Popen:
    """`lima-align annotate serve` in a child process, returned once /healthz answers."""
    return start_child(["annotate", "serve", "--db", db_url, "--port", str(port), *(extra_args or [])], port,
                       "/healthz", name="the annotation server", log=log, timeout_s=timeout_s)


def write_generations(path: Path, model: str, n: int, answer: str = "answer {i} from {model}") -> Path:
    """A small generations file in EVAL_SPEC's format (prompt ids p0..p{n-1})."""
    import json

    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            rec = {"id": f"{model}-{i}", "prompt_id": f"p{i}", "model": model,
                   "messages": [{"role": "user", "content": f"Question number {i}?"}],
                   "output": answer.format(i=i, model=model), "finish_reason": "eot",
                   "tokens": {"prompt": None, "output": None}, "decoding": {}, "created": 0.0}
            f.write(json.dumps(rec) + "\n")
    return path


class Annotator:
    """One person's browser session, minus the browser."""

    def __init__(self, http: httpx.Client):
        self.http = http  # follow_redirects must be off: a stored vote is the 303
        self.csrf = ""

    @classmethod
    def connect(cls, base_url: str, *, timeout_s: float = 30.0) -> Annotator:
        return cls(httpx.Client(base_url=base_url, timeout=timeout_s, follow_redirects=False))

    def close(self) -> None:
        self.http.close()

    def _csrf_from(self, html: str) -> None:
        m = CSRF.search(html)
        if m:
            self.csrf = m.group(1)

    def login(self, username: str, password: str) -> None:
        self._csrf_from(self.http.get("/login").text)
        r = self.http.post("/login", data={"csrf": self.csrf, "username": username, "password": password})
        if r.status_code != 303:
            raise RuntimeError(f"login of {username} failed with {r.status_code}")
        self._csrf_from(self.http.get("/").text)  # a new token comes with the new session

    def next_item(self, sid: int) -> int | None:
        """Open the study page; the id of the item shown, None when nothing is left."""
        r = self.http.get(f"/s/{sid}")
        r.raise_for_status()
        self._csrf_from(r.text)
        m = ITEM.search(r.text)
        return int(m.group(1)) if m else None

    def vote(self, sid: int, item: int, choice: str, extra: dict[str, str] | None = None) -> httpx.Response:
        """POST a vote; returns the response (303 when it was stored)."""
        data = {"csrf": self.csrf, "item": str(item), "choice": choice, **(extra or {})}
        return self.http.post(f"/s/{sid}/vote", data=data)


def rate_all(ann: Annotator, sid: int, rule: Any) -> list[str]:
    """Vote on every item the study shows this annotator, `rule(page_html)` choosing; returns the pages seen."""
    pages = []
    while (item := ann.next_item(sid)) is not None:
        html = ann.http.get(f"/s/{sid}").text
        pages.append(html)
        assert ann.vote(sid, item, rule(html)).status_code == 303
    return pages
