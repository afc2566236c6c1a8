"""Crash-safe JSON Lines files: read with line numbers, append durably, resume after a kill.

Long jobs (generation, judging) append one record per finished item. If the process dies
mid-write the file can end in a half-written line; `repair_tail` cuts exactly that partial
line (never a complete one) so a rerun appends cleanly and never duplicates a record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import LimaError, Problem


def read_jsonl(path: str | Path, *, allow_partial_tail: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line_number, object) for each non-blank line. Bad JSON raises with file:line.

    allow_partial_tail: a last line without a trailing newline that fails to parse is taken
    to be an interrupted write and skipped (the writer will repair it), not an error.
    """
    path = Path(path)
    if not path.exists():
        raise LimaError(f"file not found: {path}", where=str(path), fix="check the path")
    with path.open("rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    ends_clean = data.endswith(b"\n") or not data
    for i, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            is_tail = i == len(lines) and not ends_clean
            if allow_partial_tail and is_tail:
                return
            raise LimaError(
                Problem(
                    f"{path}:{i}",
                    f"not valid JSON ({e.msg if hasattr(e, 'msg') else e} at column {getattr(e, 'colno', '?')})",
                    "each line must be one complete JSON object; fix or delete this line",
                )
            ) from None
        if not isinstance(obj, dict):
            raise LimaError(
                Problem(f"{path}:{i}", f"expected a JSON object, got {type(obj).__name__}", "wrap the record in {...}")
            )
        yield i, obj


def repair_tail(path: str | Path) -> int:
    """Cut a trailing partial line left by an interrupted append. Returns bytes removed."""
    path = Path(path)
    if not path.exists():
        return 0
    with path.open("rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        # Scan back for the last newline; everything after it is the partial line.
        block = 1 << 16
        pos = size
        cut = 0
        while pos > 0:
            start = max(0, pos - block)
            f.seek(start)
            chunk = f.read(pos - start)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                cut = start + idx + 1
                break
            pos = start
        f.seek(cut)
        tail = f.read()
        try:
            complete = isinstance(json.loads(tail), dict)
        except (json.JSONDecodeError, UnicodeDecodeError):
            complete = False
        if complete:  # a whole record that only lacks its newline: keep it
            f.seek(0, os.SEEK_END)
            f.write(b"\n")
            f.flush()
            os.fsync(f.fileno())
            return 0
        f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())
        return size - cut


class JsonlAppender:
    """Append records durably: each write is one full line, flushed and fsynced."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_tail(self.path)
        self._f = self.path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self.write_many([record])

    def write_many(self, records: Iterable[dict[str, Any]]) -> None:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        if not text:
            return
        self._f.write(text)
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_jsonl_atomic(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """Write a whole file via a temporary sibling and rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
