"""Crash-safe JSON Lines files: read with line numbers, append durably, resume after a kill.

Long jobs (generation, judging) append one record per finished item. If the process dies
mid-write the file can end in a half-written line; `repair_tail` cuts exactly that partial
line (never a complete one) so a rerun appends cleanly and never duplicates a record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import LimaError, Problem


MAX_LISTED_LINES = 20  # broken lines listed one by one; the rest are counted
NOT_JSONL_SUFFIXES = {".csv": "CSV", ".tsv": "TSV", ".txt": "plain text", ".parquet": "Parquet",
                      ".xlsx": "Excel", ".yaml": "YAML", ".yml": "YAML"}


def read_bytes(path: str | Path) -> bytes:
    """A whole input file, or LimaError saying why not (missing, a folder, unreadable)."""
    path = Path(path)
    if not path.exists():
        raise LimaError(Problem(str(path), "file not found", "check the path"))
    if path.is_dir():
        raise LimaError(Problem(str(path), "is a folder, not a file", "give the path of a file inside it"))
    try:
        return path.read_bytes()
    except OSError as e:
        raise LimaError(Problem(str(path), f"cannot read it ({e.strerror})", "check its permissions")) from None


def read_text(path: str | Path) -> str:
    """read_bytes decoded as UTF-8; bytes that are not UTF-8 are reported with their line and column."""
    data = read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise LimaError(Problem(f"{path}:{line}", f"not UTF-8 text (byte 0x{data[e.start]:02x} at column {col})",
                                "save the file as UTF-8")) from None


def json_error(e: json.JSONDecodeError) -> str:
    """A JSON syntax error in words, e.g. "not valid JSON (Expecting value: column 7)"."""
    return f"not valid JSON ({e.msg}: column {e.colno})"


def read_jsonl(path: str | Path, *, allow_partial_tail: bool = False) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line_number, object) for each non-blank line. Every broken line is reported at once, with
    file:line, before any record is yielded.

    allow_partial_tail: the caller appends to this file (a resumable job reading what it already did).
    A last line without a trailing newline that fails to parse is an interrupted write: it is cut off
    the file (repair_tail) on this read, so the job's next stage never meets it, whether or not any work
    is left to append.
    """
    path = Path(path)
    data = read_bytes(path)
    lines = data.split(b"\n")
    ends_clean = data.endswith(b"\n") or not data
    records: list[tuple[int, dict[str, Any]]] = []
    problems: list[Problem] = []
    for i, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        is_tail = i == len(lines) and not ends_clean
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            if allow_partial_tail and is_tail:
                _cut_tail(path)
                break
            problems.append(_line_problem(path, i, raw, e, is_tail))
            continue
        if not isinstance(obj, dict):
            problems.append(Problem(f"{path}:{i}", f"expected a JSON object, got {type(obj).__name__}",
                                    "wrap the record in {...}"))
            continue
        records.append((i, obj))
    if problems:
        raise LimaError(_listed(path, problems, n_lines=sum(1 for x in lines if x.strip()), n_good=len(records)))
    yield from records


def done_keys(path: str | Path, key: Callable[[dict[str, Any]], Any], *, model: str | None = None,
              what: str = "answers") -> set[str]:
    """What a resumable job already appended to `path`: str(key(record)) of every record (a None key is not
    counted), so a rerun skips those items. No file yet: nothing done. A half-written last line is cut off
    (read_jsonl's allow_partial_tail), so the job appends cleanly after the last complete record.

    model: the label the job writes its records under. A record of another model is refused: appending
    would put two models' `what` in one file, and every item the other model did would be skipped as done.
    """
    path = Path(path)
    if not path.exists():
        return set()
    done: set[str] = set()
    for n, r in read_jsonl(path, allow_partial_tail=True):
        if model is not None and r.get("model") != model:
            raise LimaError(Problem(f"{path}:{n}", f"already holds {what} of model {r.get('model')!r}, not {model!r}",
                                    f"write each model's {what} to its own --output file, or delete {path} to "
                                    "start it over"))
        k = key(r)
        if k is not None:
            done.add(str(k))
    return done


def _line_problem(path: Path, i: int, raw: bytes, e: ValueError, is_tail: bool) -> Problem:
    if isinstance(e, UnicodeDecodeError):
        return Problem(f"{path}:{i}", f"not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1})",
                       "save the file as UTF-8")
    assert isinstance(e, json.JSONDecodeError)
    if is_tail:
        return Problem(f"{path}:{i}", json_error(e) + "; the last line is cut short, as an interrupted write "
                       "leaves it", "rerun the command that wrote the file (it repairs the last line), or delete it")
    return Problem(f"{path}:{i}", json_error(e), "each line must be one complete JSON object; fix or delete it")


def _listed(path: Path, problems: list[Problem], *, n_lines: int, n_good: int) -> list[Problem]:
    kind = NOT_JSONL_SUFFIXES.get(path.suffix.lower())
    if n_good == 0 and (kind or (n_lines > 1 and all(p.what.startswith("not valid JSON") for p in problems))):
        return [Problem(str(path), "not a JSON Lines file: no line is a JSON object"
                        + (f" (it looks like {kind})" if kind else ""),
                        "lima-align reads JSON Lines, one JSON object a line (datasets also as a .json list of "
                        "objects); convert the file, e.g. for CSV in Python: "
                        "pandas.read_csv(IN).to_json(OUT, orient='records', lines=True)")]
    if len(problems) > MAX_LISTED_LINES:
        rest = len(problems) - MAX_LISTED_LINES
        problems = problems[:MAX_LISTED_LINES] + [Problem(str(path), f"{rest} more broken lines not listed",
                                                          "fix these and run again")]
    return problems


def _cut_tail(path: Path) -> None:
    try:
        repair_tail(path)
    except OSError:  # a file we may not write: skipping the partial line is enough for this read
        pass


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


def output_error(path: str | Path, e: OSError) -> LimaError:
    """An output that cannot be written, said as a user problem (a folder, a missing or read-only place)."""
    path = Path(path)
    if path.is_dir():
        return LimaError(Problem(str(path), "is a folder; an output file is needed here",
                                 f"give a file path, e.g. {path / 'out.jsonl'}"))
    blocked = _file_above(path)
    if blocked is not None:
        return _under_a_file(path, blocked)
    return LimaError(Problem(str(path), f"cannot write it ({e.strerror})",
                             "choose a path in a folder you can write to"))


def check_output(path: str | Path) -> Path:
    """Refuse, before any work, an output file path that is a folder, lies under a file, or is something
    other than a regular file (an atomic rename would replace a device or pipe such as /dev/stdout)."""
    path = Path(path)
    if path.is_dir():
        raise output_error(path, IsADirectoryError(21, "Is a directory"))
    if path.exists() and not path.is_file():
        raise LimaError(Problem(str(path), "is not a regular file", "give the path of a file to write"))
    blocked = _file_above(path)
    if blocked is not None:
        raise _under_a_file(path, blocked)
    return path


def check_output_folder(path: str | Path) -> Path:
    """Refuse, before any work, an output folder path that is a file or lies under one."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise LimaError(Problem(str(path), "is a file; an output folder is needed here",
                                "give a folder path (it is created if missing)"))
    blocked = _file_above(path)
    if blocked is not None:
        raise _under_a_file(path, blocked)
    return path


def _file_above(path: Path) -> Path | None:
    above = next((a for a in path.absolute().parents if a.exists()), None)
    return above if above is not None and not above.is_dir() else None


def _under_a_file(path: Path, blocked: Path) -> LimaError:
    return LimaError(Problem(str(path), f"cannot write it: {blocked} is a file, not a folder",
                             "choose a path in a folder you can write to"))


class JsonlAppender:
    """Append records durably: each write is one full line, flushed and fsynced."""

    def __init__(self, path: str | Path):
        self.path = check_output(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            repair_tail(self.path)
            self._f = self.path.open("a", encoding="utf-8")
        except OSError as e:
            raise output_error(self.path, e) from None

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
    return _write_atomic(path, lambda f: f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def write_text_atomic(path: str | Path, text: str) -> Path:
    return _write_atomic(path, lambda f: f.write(text))


def _write_atomic(path: str | Path, fill: Any) -> Path:
    path = check_output(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("w", encoding="utf-8") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:  # records that fail half-way (a LimaError, ^C) leave no temporary file either
        if tmp.is_file():
            tmp.unlink()
        if isinstance(e, OSError):
            raise output_error(path, e) from None
        raise
    return path
