"""wikiHow article dumps (CSV or JSONL) -> candidate (title, article) records.

Accepted columns/keys: title; headline, summary or overview (optional); text, body or article; and
optionally category, url, id. The title is the prompt; summary + body the response, with the
"This article..." opening rewritten (LIMA) and links, images and boilerplate sections pruned.

LIMA sampled a category first, then an article. Here the category goes into `meta.stratum`, and the
selection step's temperature sampling over strata does the category-first draw.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import setting
from ..errors import LimaError
from ..jsonl import json_error
from .html_md import strip_markdown_links
from .inputs import BadRows, iter_lines
from .rules import RuleCounts, SourceRun, rewrite_this_article

SOURCE = "wikihow"
TITLE_KEYS = ("title",)
SUMMARY_KEYS = ("headline", "summary", "overview")
BODY_KEYS = ("text", "body", "article")
DEFAULT_WIKIHOW_BOILERPLATE = ["Tips", "Warnings", "Things You'll Need", "References", "Related wikiHows",
                               "Sources and Citations", "Video", "Community Q&A", "Ingredients"]


@dataclass
class WikiHowConfig:
    paths: list[str] = setting([], "wikiHow dumps: CSV or JSONL with title, headline/summary and text/body "
                               "(category optional)")
    min_chars: int = setting(500, "shortest response kept (rule wh_too_short)", at_least=0)
    max_chars: int = setting(8000, "longest response kept (rule wh_too_long)", at_least=0)
    boilerplate_sections: list[str] = setting(DEFAULT_WIKIHOW_BOILERPLATE, "section headings pruned with their content")
    license: str = setting("CC BY-NC-SA 3.0", "licence written into every record")


def _first(row: dict[str, Any], keys: tuple[str, ...]) -> str:
    for k in keys:
        v = row.get(k)
        if isinstance(v, str) and v.strip():
            return v
    return ""


def _heading(line: str) -> str | None:
    """The name of a section heading line ('## Tips', '== Tips ==', 'Tips', 'Tips:'), else None."""
    s = line.strip()
    m = re.fullmatch(r"#{1,6}\s*(.+?)\s*#*", s) or re.fullmatch(r"=+\s*(.+?)\s*=+", s)
    if m:
        return m.group(1)
    return s.rstrip(":") if 0 < len(s) <= 40 and not s.endswith((".", "!", "?", ",")) else None


def prune_sections(text: str, names: list[str]) -> tuple[str, int]:
    """Remove boilerplate sections ('Tips', 'Warnings', ...) from their heading to the next heading."""
    wanted = {n.lower() for n in names}
    out, skipping, pruned = [], False, 0
    for line in text.split("\n"):
        head = _heading(line)
        if head is not None and (head.lower() in wanted or skipping):
            if head.lower() in wanted:
                skipping, pruned = True, pruned + 1
                continue
            if re.match(r"\s*(#|=)", line):  # a real heading ends the pruned section
                skipping = False
        if not skipping:
            out.append(line)
    return "\n".join(out), pruned


def _category(row: dict[str, Any]) -> str:
    c = row.get("category", row.get("categories", ""))
    if isinstance(c, list):
        c = c[0] if c else ""
    if isinstance(c, str) and "," in c and "category" not in row:
        c = c.split(",")[0]
    return str(c).strip() or "uncategorised"


def _rows(path: Path, bad: BadRows) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location, row) for every readable row; unreadable ones are recorded in `bad`."""
    n = 0
    if path.suffix in (".jsonl", ".json", ".ndjson") or path.name.endswith(".jsonl.zst"):
        for n, raw in iter_lines(path, bad, "wikiHow"):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                bad.skip(path, f":{n}", f"not UTF-8 (byte {e.start})", "re-save the file as UTF-8")
                continue
            except json.JSONDecodeError as e:
                bad.skip(path, f":{n}", json_error(e), "fix or delete this line")
                continue
            if not isinstance(obj, dict):
                bad.skip(path, f":{n}", f"expected a JSON object, got {type(obj).__name__}", "one article per line")
                continue
            yield f":{n}", obj
    elif path.suffix in (".csv", ".tsv"):
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # article bodies are long fields
        with path.open(encoding="utf-8", errors="surrogateescape", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ",")
            fields = reader.fieldnames or []
            if not any(k in fields for k in TITLE_KEYS) or not any(k in fields for k in BODY_KEYS):
                raise LimaError(f"CSV header has no title and text/body column (columns: {', '.join(fields)})",
                                where=f"{path}:1", fix="wikiHow CSVs need 'title' and 'text' (or 'body') columns")
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as e:
                    bad.skip(path, f":{reader.line_num}", f"malformed CSV ({e})", "fix the quoting of this row")
                    continue
                n += 1
                where = f":{reader.line_num} (row {n})"
                if None in row or any(v is None for v in row.values()):
                    bad.skip(path, where, f"expected {len(fields)} fields", "fix the quoting or the commas of this row")
                    continue
                try:
                    for v in row.values():
                        v.encode("utf-8")
                except UnicodeEncodeError:
                    bad.skip(path, where, "not UTF-8", "re-save the file as UTF-8")
                    continue
                yield where, row
    else:
        raise LimaError(f"unsupported wikiHow file type: {path.name}", where="wikihow.paths",
                        fix="use CSV (.csv/.tsv) or JSON Lines (.jsonl)")


def wikihow_records(cfg: WikiHowConfig, counts: RuleCounts, bad: BadRows) -> Iterator[dict[str, Any]]:
    for raw in cfg.paths:
        path = Path(raw)
        if not path.is_file():
            raise LimaError(f"wikiHow dump not found: {path}", where="wikihow.paths", fix="check the path")
        rows = 0
        for where, row in _rows(path, bad):
            rows += 1
            counts.seen[SOURCE] += 1
            title, summary, body = _first(row, TITLE_KEYS).strip(), _first(row, SUMMARY_KEYS), _first(row, BODY_KEYS)
            if not title or not body.strip():
                counts.drop(SOURCE, "wh_missing_fields")
                continue
            text = f"{summary.strip()}\n\n{body.strip()}" if summary.strip() else body.strip()
            text, pruned = prune_sections(text, cfg.boilerplate_sections)
            if pruned:
                counts.transform(SOURCE, "wh_sections_pruned")
            text = re.sub(r"\n{3,}", "\n\n", strip_markdown_links(text)).strip()
            text, rewritten = rewrite_this_article(text)
            if rewritten:
                counts.transform(SOURCE, "wh_this_article_rewritten")
            if len(text) < cfg.min_chars:
                counts.drop(SOURCE, "wh_too_short")
                continue
            if len(text) > cfg.max_chars:
                counts.drop(SOURCE, "wh_too_long")
                continue
            original = str(row.get("id") or row.get("url") or title)
            category = _category(row)
            counts.kept[SOURCE] += 1
            yield {"id": f"wikihow:{hashlib.sha1(original.encode()).hexdigest()[:12]}", "source": SOURCE,
                   "messages": [{"role": "user", "content": title}, {"role": "assistant", "content": text}],
                   "meta": {"source": SOURCE, "group": SOURCE, "stratum": category, "domain": "howto",
                            "category": category, "original_id": original, "url": str(row.get("url") or ""),
                            "license": cfg.license, "location": f"{path.name}{where}"}}
        bad.check_file(path, rows)


def read(cfg: WikiHowConfig, run: SourceRun) -> Iterator[dict[str, Any]]:
    """This source's candidate records (the signature every source shares, see sources.py)."""
    return wikihow_records(cfg, run.counts, run.bad)


def input_files(cfg: WikiHowConfig) -> list[Path]:
    """The files read, for the manifest's hashes; a missing one is an error now, before any reading."""
    for p in cfg.paths:
        if not Path(p).is_file():
            raise LimaError(f"wikihow dump not found: {p}", where="wikihow.paths", fix="check the path")
    return [Path(p) for p in cfg.paths]
