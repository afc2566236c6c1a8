"""StackExchange data dumps -> candidate (question, top answer) records, with LIMA's rules.

Two passes over each site's Posts.xml keep memory flat however large the dump:
  1. numbers only: a bounded heap of the site's top-N self-contained questions by score (id,
     score, title) and, for those, the best answer's id and score. Dumps list posts in Id order,
     so a question is always seen before its answers; an evicted question never comes back.
  2. text only for the chosen: the bodies of those N questions and their best answers.
Then the answer rules run, in the order listed in rules.py, and each drop is counted.
"""

from __future__ import annotations

import contextlib
import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LimaError
from .config import StackExchangeConfig
from .html_md import html_to_markdown
from .inputs import BadRows, extracted_member, iter_xml_rows, iter_xml_rows_by_id
from .rules import RuleCounts, find_phrase, find_words, title_problem

SOURCE = "stackexchange"


@dataclass
class SiteDump:
    site: str  # "cooking"
    host: str  # "cooking.stackexchange.com", for URLs
    path: Path  # Posts.xml or the site's .7z


def site_from_name(name: str) -> tuple[str, str]:
    """'cooking.stackexchange.com.7z' -> ('cooking', 'cooking.stackexchange.com');
    'stackoverflow.com-Posts.7z' -> ('stackoverflow', 'stackoverflow.com'); 'mathoverflow.net' -> ('mathoverflow', ...)."""
    host = name.removesuffix(".7z").removesuffix("-Posts").lower()
    site = host
    for suffix in (".stackexchange.com", ".com", ".net"):
        if site.endswith(suffix):
            site = site[: -len(suffix)]
            break
    if "." not in host:
        host = f"{host}.stackexchange.com"
    return site, host


def find_dumps(paths: list[str]) -> list[SiteDump]:
    """Resolve the recipe's paths to one Posts.xml or .7z per site."""
    out: list[SiteDump] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise LimaError(f"StackExchange dump not found: {p}", where="stackexchange.paths",
                            fix="give a Posts.xml, a site's .7z archive, or a folder of them")
        if p.is_file():
            name = p.name if p.suffix == ".7z" else p.resolve().parent.name
            out.append(SiteDump(*site_from_name(name), p))
            continue
        if (p / "Posts.xml").exists():
            out.append(SiteDump(*site_from_name(p.name), p / "Posts.xml"))
            continue
        found = []
        for child in sorted(p.iterdir()):
            if child.is_file() and child.suffix == ".7z":
                found.append(SiteDump(*site_from_name(child.name), child))
            elif child.is_dir() and (child / "Posts.xml").exists():
                found.append(SiteDump(*site_from_name(child.name), child / "Posts.xml"))
        if not found:
            raise LimaError(f"no StackExchange dumps in {p}", where="stackexchange.paths",
                            fix="the folder should hold site archives (*.7z) or site folders with Posts.xml")
        out += found
    sites = [d.site for d in out]
    dupes = sorted({s for s in sites if sites.count(s) > 1})
    if dupes:
        raise LimaError(f"site(s) given twice: {', '.join(dupes)}", where="stackexchange.paths",
                        fix="list each site's dump once")
    return out


@contextlib.contextmanager
def _posts_xml(dump: SiteDump) -> Iterator[Path]:
    if dump.path.suffix == ".7z":
        with extracted_member(dump.path) as p:
            yield p
    else:
        yield dump.path


def _int(attrs: dict[str, str], key: str) -> int:
    return int(attrs[key])


def _scan(xml: Path, shown: str, cfg: StackExchangeConfig, counts: RuleCounts, bad: BadRows) -> dict[int, list[Any]]:
    """Pass 1: qid -> [score, title, best answer score, best answer id] for the site's top questions."""
    heap: list[tuple[int, int]] = []  # (score, -id): the root is the question to evict next
    chosen: dict[int, list[Any]] = {}
    rows = 0
    for line, attrs in iter_xml_rows(xml, bad, shown_as=shown, desc="scan"):
        rows += 1
        kind = attrs.get("PostTypeId")
        if kind not in ("1", "2"):
            continue  # tag wikis, moderator nominations ...: not questions or answers
        try:
            pid, score = _int(attrs, "Id"), _int(attrs, "Score")
            parent = _int(attrs, "ParentId") if kind == "2" else 0
        except (KeyError, ValueError):
            bad.skip(shown, f":{line}", "row without an integer Id, Score or (for answers) ParentId",
                     "fix or delete this row")
            continue
        if kind == "2":
            q = chosen.get(parent)
            if q is not None and (q[3] is None or (score, -pid) > (q[2], -q[3])):
                q[2], q[3] = score, pid
            continue
        counts.seen[SOURCE] += 1
        title = attrs.get("Title", "")
        if title_problem(title, cfg.title):
            counts.drop(SOURCE, "se_title_not_self_contained")
            continue
        chosen[pid] = [score, title, None, None]
        heapq.heappush(heap, (score, -pid))
        if len(heap) > cfg.top_questions_per_site:
            _, neg = heapq.heappop(heap)
            del chosen[-neg]
            counts.drop(SOURCE, "se_not_top_question")
    bad.check_file(shown, rows)
    return chosen


def site_records(dump: SiteDump, cfg: StackExchangeConfig, seed: int, counts: RuleCounts,
                 bad: BadRows) -> Iterator[dict[str, Any]]:
    domain = "stem" if dump.site in {s.lower() for s in cfg.stem_sites} else "other"
    shown = str(dump.path)
    with _posts_xml(dump) as xml:
        chosen = _scan(xml, shown, cfg, counts, bad)
        wanted = set(chosen) | {q[3] for q in chosen.values() if q[3] is not None}
        bodies = {int(a["Id"]): a.get("Body", "") for a in iter_xml_rows_by_id(xml, wanted)}
    for qid in sorted(chosen, key=lambda q: (-chosen[q][0], q)):
        score, title, a_score, aid = chosen[qid]
        if aid is None:
            counts.drop(SOURCE, "se_no_answer")
            continue
        if a_score < cfg.min_answer_score:
            counts.drop(SOURCE, "se_answer_score")
            continue
        answer = html_to_markdown(bodies.get(aid, ""))
        if not cfg.min_answer_chars <= len(answer) <= cfg.max_answer_chars:
            counts.drop(SOURCE, "se_answer_length")
            continue
        if find_words(answer, cfg.first_person_words):
            counts.drop(SOURCE, "se_first_person")
            continue
        if find_phrase(answer, cfg.refers_to_others):
            counts.drop(SOURCE, "se_refers_to_other_answers")
            continue
        rid = f"se:{dump.site}:{qid}"
        use = cfg.prompt_from
        if use == "random":  # seeded by the record id, so the choice is stable whatever else is in the dump
            use = random.Random(f"{seed}:{rid}").choice(["title", "body"])
        prompt = title.strip() if use == "title" else html_to_markdown(bodies.get(qid, ""))
        if not prompt:
            counts.drop(SOURCE, "se_empty_prompt")
            continue
        counts.kept[SOURCE] += 1
        yield {"id": rid, "source": SOURCE,
               "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
               "meta": {"source": SOURCE, "group": f"{SOURCE}:{domain}", "stratum": dump.site, "domain": domain,
                        "site": dump.site, "original_id": str(qid), "answer_id": str(aid),
                        "url": f"https://{dump.host}/questions/{qid}", "license": cfg.license, "score": score,
                        "answer_score": a_score, "prompt_from": use, "title": title.strip()}}


def stackexchange_records(cfg: StackExchangeConfig, seed: int, counts: RuleCounts,
                          bad: BadRows) -> Iterator[dict[str, Any]]:
    for dump in find_dumps(cfg.paths):
        yield from site_records(dump, cfg, seed, counts, bad)
