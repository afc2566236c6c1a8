"""Reading raw dumps in constant memory: lines of plain or zstd files, rows of StackExchange XML,
.7z members, and a record of every bad row (never a silent drop).

Bad rows are skipped and counted with their location, or stop the run, per `on_error`. Even when
skipping, a file whose bad rows exceed both `max_bad_rows` and `max_bad_fraction` of its rows
stops the run: that many bad rows means the wrong file or a broken download, not a few typos.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.parsers import expat

from ..errors import LimaError, Problem

MAX_LOCATIONS = 200  # locations kept in the manifest; the counts are always complete


@dataclass
class BadRows:
    on_error: str = "skip"
    max_bad_fraction: float = 0.01
    max_bad_rows: int = 10
    count: int = 0
    by_file: dict[str, int] = field(default_factory=dict)
    locations: list[dict[str, str]] = field(default_factory=list)

    def skip(self, path: Path | str, where: str, what: str, fix: str) -> None:
        """Record one bad row at `path` + `where` (":line", " byte N", " row N"), or raise in fail mode."""
        loc = f"{path}{where}"
        if self.on_error == "fail":
            raise LimaError(Problem(loc, what, fix + " (or set on_error=skip to skip and count bad rows)"))
        self.count += 1
        self.by_file[str(path)] = self.by_file.get(str(path), 0) + 1
        if len(self.locations) < MAX_LOCATIONS:
            self.locations.append({"where": loc, "what": what})

    def check_file(self, path: Path | str, rows: int) -> None:
        """After a file: stop when its bad rows are too many to be chance."""
        bad = self.by_file.get(str(path), 0)
        if bad > self.max_bad_rows and bad > self.max_bad_fraction * max(rows, 1):
            first = [x for x in self.locations if x["where"].startswith(str(path))][:5]
            shown = "; ".join(f"{x['where']}: {x['what']}" for x in first)
            raise LimaError(Problem(str(path), f"{bad} of {rows} rows are bad (more than {self.max_bad_rows} and "
                                    f"{self.max_bad_fraction:.1%}); first: {shown}",
                                    "check that this is the right file and re-download it, or raise "
                                    "max_bad_fraction / max_bad_rows"))

    def to_manifest(self) -> dict[str, Any]:
        return {"count": self.count, "by_file": dict(sorted(self.by_file.items())), "locations": self.locations}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _progress(path: Path, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=f"{desc} {path.name}", leave=False,
                mininterval=1.0)


def iter_lines(path: Path, bad: BadRows, desc: str = "read") -> Iterator[tuple[int, bytes]]:
    """Yield (line number, raw line without newline) of a plain or .zst file, with a progress bar over
    the bytes on disk. A truncated zstd stream is recorded as a bad row at the byte where it stops."""
    bar = _progress(path, desc)
    try:
        with path.open("rb") as f:
            if path.suffix == ".zst":
                yield from _zst_lines(path, f, bar, bad)
                return
            for n, line in enumerate(f, start=1):
                bar.update(len(line))
                yield n, line.rstrip(b"\r\n")
    finally:
        bar.close()


def _zst_lines(path: Path, f: Any, bar: Any, bad: BadRows) -> Iterator[tuple[int, bytes]]:
    import zstandard

    # Pushshift files use long windows; decompressobj (not stream_reader) tells us whether the last
    # frame ended, which is how a truncated download shows.
    dctx = zstandard.ZstdDecompressor(max_window_size=2**31)
    dobj = dctx.decompressobj()
    rest, n, consumed = b"", 0, 0
    try:
        while chunk := f.read(1 << 20):
            consumed += len(chunk)
            bar.update(len(chunk))
            data = dobj.decompress(chunk)
            while dobj.eof and dobj.unused_data:  # a file of several frames
                more = dobj.unused_data
                dobj = dctx.decompressobj()
                data += dobj.decompress(more)
            lines = (rest + data).split(b"\n")
            rest = lines.pop()
            for line in lines:
                n += 1
                yield n, line.rstrip(b"\r")
    except zstandard.ZstdError as e:
        raise LimaError(Problem(f"{path} byte {consumed}", f"not a valid zstd stream ({e})",
                                "re-download the file, or decompress it and pass the .ndjson")) from None
    if not dobj.eof:
        bad.skip(path, f" byte {consumed}", "the zstd stream stops mid-frame: the file is truncated; the rows "
                 "before this point were read", "re-download the file to read the rest")
    if rest.strip():
        yield n + 1, rest


@contextlib.contextmanager
def extracted_member(archive: Path, member: str = "Posts.xml") -> Iterator[Path]:
    """Extract one member of a .7z archive to a temporary file (removed afterwards) to stream it."""
    import py7zr

    with tempfile.TemporaryDirectory(prefix="lima-curate-") as tmp:
        try:
            with py7zr.SevenZipFile(archive) as z:
                names = z.getnames()
                target = next((x for x in names if Path(x).name == member), None)
                if target is None:
                    raise LimaError(Problem(str(archive), f"no {member} inside (members: {', '.join(names[:8])})",
                                            "pass a StackExchange site archive, e.g. cooking.stackexchange.com.7z"))
                z.extract(path=tmp, targets=[target])
        except LimaError:
            raise
        except Exception as e:  # noqa: BLE001 - py7zr raises several types for damaged archives
            raise LimaError(Problem(str(archive), f"cannot read the .7z archive ({type(e).__name__}: {e})",
                                    "the archive is truncated or damaged: re-download it, or extract Posts.xml "
                                    "with 7z and pass that file")) from None
        out = Path(tmp) / target
        if not out.exists():
            raise LimaError(Problem(str(archive), f"{member} could not be extracted", "re-download the archive"))
        yield out


ROW_ID = re.compile(rb'\sId="(\d+)"')


BATCH_BYTES = 1 << 20  # lines are handed to expat about a megabyte at a time


def iter_xml_rows(path: Path, bad: BadRows, *, shown_as: str | None = None,
                  desc: str = "scan") -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line, attributes) of every <row .../> in a StackExchange XML file.

    Lines go to expat in batches of whole lines (dumps hold one row per line). When a row is
    malformed, or its bytes are not UTF-8, that line is recorded and a fresh parser continues from
    the next line, so a bad row costs only itself. Nothing is kept but the current batch, so memory
    does not grow with the file."""
    name = shown_as or str(path)
    rows: list[tuple[int, dict[str, str]]] = []
    state = {"base": 1}  # the file line that is line 1 of the current parser

    def new_parser(restart: bool) -> Any:
        p = expat.ParserCreate(encoding="utf-8" if restart else None)

        def start(tag: str, attrs: dict[str, str]) -> None:
            if tag == "row":
                rows.append((state["base"] + p.CurrentLineNumber - 1, attrs))

        p.StartElementHandler = start
        if restart:  # continue inside the document element of the original file (no newline: lines stay aligned)
            p.Parse(b"<posts>", False)
        return p

    parser = new_parser(False)

    def feed(batch: list[tuple[int, bytes]]) -> None:
        nonlocal parser
        i = 0
        while i < len(batch):
            try:
                parser.Parse(b"".join(line + b"\n" for _, line in batch[i:]), False)
                return
            except expat.ExpatError as e:
                at = state["base"] + e.lineno - 1
                k = at - batch[0][0]
                bad.skip(name, f":{at}", _xml_problem(batch[k][1] if 0 <= k < len(batch) else b"", e),
                         "fix or delete this row; a broken download should be fetched again")
                i = max(i, at - batch[0][0] + 1)  # go on after the bad line
                parser = new_parser(True)
                state["base"] = batch[i][0] if i < len(batch) else batch[-1][0] + 1

    batch: list[tuple[int, bytes]] = []
    size, n = 0, 0
    for n, line in iter_lines(path, bad, desc):
        batch.append((n, line))
        size += len(line)
        if size >= BATCH_BYTES:
            feed(batch)
            batch, size = [], 0
            yield from rows
            rows.clear()
    if batch:
        feed(batch)
    if n == 0 or (n == 1 and batch and not batch[0][1].strip()):
        raise LimaError(Problem(name, "the file is empty", "re-download the dump; a site's Posts.xml holds one "
                                "<row .../> per post"))
    try:
        parser.Parse(b"", True)
    except expat.ExpatError as e:
        bad.skip(name, f":{n}", f"the XML ends early ({expat.ErrorString(e.code)}): the file looks truncated; the "
                 "rows before this point were read", "re-download the dump to read the rest")
    yield from rows


def _xml_problem(line: bytes, e: expat.ExpatError) -> str:
    """What is wrong with a row expat refused: bytes that are not UTF-8 are named as such (expat calls
    them 'not well-formed'), with the byte's column."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as u:
        return f"invalid UTF-8 (byte 0x{line[u.start]:02x} at column {u.start + 1}); the row was skipped"
    return f"malformed XML ({expat.ErrorString(e.code)}, column {e.offset + 1})"


def iter_xml_rows_by_id(path: Path, wanted: set[int], desc: str = "collect") -> Iterator[dict[str, str]]:
    """Second pass: parse only the rows whose Id is wanted (found with a cheap regex first).
    Bad rows were already recorded by the first pass, so here they are passed over."""
    null = BadRows(on_error="skip")  # a truncated archive was counted in the first pass
    for _, line in iter_lines(path, null, desc):
        m = ROW_ID.search(line)
        if m is None or int(m.group(1)) not in wanted:
            continue
        rows: list[dict[str, str]] = []
        p = expat.ParserCreate()
        p.StartElementHandler = lambda tag, attrs, found=rows: found.append(attrs) if tag == "row" else None
        try:
            p.Parse(line, True)
        except expat.ExpatError:
            continue
        yield from rows
