"""The judges' answer cache: every raw answer a judge gave, by the sha256 of what it was asked, in SQLite (WAL,
so parallel runs can share one file); a rerun asks no judge a question it has already answered."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from .errors import LimaError


def default_cache_path() -> Path:
    from .models import cache_root

    return cache_root() / "judge_cache.sqlite"


def digest(parts: list[Any]) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False, separators=(",", ":")).encode("utf-8")).hexdigest()


class JudgeCache:
    """Judges' raw answers and token counts by key, in SQLite (WAL: readers never block the writer)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a crash loses at most the last answers
            self.db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, judge TEXT NOT NULL, "
                            "raw TEXT NOT NULL, prompt_tokens INTEGER, completion_tokens INTEGER, created REAL)")
        except sqlite3.DatabaseError as e:
            raise LimaError(f"cannot open the judge cache: {e}", where=str(self.path),
                            fix="pass another cache path, or delete this file (cached answers are then asked again)"
                            ) from None

    def get(self, key: str) -> tuple[str, int, int] | None:
        row = self.db.execute("SELECT raw, prompt_tokens, completion_tokens FROM answers WHERE key = ?",
                              (key,)).fetchone()
        return None if row is None else (row[0], row[1] or 0, row[2] or 0)

    def put(self, key: str, judge: str, raw: str, prompt_tokens: int, completion_tokens: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?)",
                        (key, judge, raw, prompt_tokens, completion_tokens, time.time()))

    def close(self) -> None:
        self.db.close()
