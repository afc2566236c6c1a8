"""StackExchange data dumps -> candidate (question, top answer) records, with LIMA's rules.

Two passes over each site's Posts.xml keep memory flat however large the dump:
  1. numbers only: a bounded heap of the site's top-N self-contained questions by score (id,
     score, title) and, for those, the best answer's id and score. Dumps list posts in Id order,
     so a question is seen before its answers; when a file breaks that order (an answer whose
     question comes later), the answers are read once more after the questions are chosen.
  2. text only for the chosen: the bodies of those N questions and their best answers.
Then the answer rules run, in the order listed in rules.py, and each drop is counted.

Meta sites (meta.stackexchange.com, cooking.meta.stackexchange.com ...) hold questions about the
site itself, not about its subject: they are left out unless `include_meta` is set.

Licences: newer dumps give each post's licence in the row (ContentLicense); older ones do not, so it
follows from the post's creation date by the cut-over dates
Stack Exchange published (https://meta.stackexchange.com/q/347758): before 2011-04-08 CC BY-SA 2.5,
before 2018-05-02 CC BY-SA 3.0, from then on CC BY-SA 4.0.
"""

from __future__ import annotations

import contextlib
import heapq
import html
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config import setting
from ..errors import LimaError, Problem
from .html_md import STUB_ANCHORS, convert_post
from .inputs import BadRows, extracted_member, iter_xml_rows, iter_xml_rows_by_id
from .rules import RuleCounts, SourceRun, TitleRules, find_phrase, find_words, title_problem

SOURCE = "stackexchange"
LICENSE_CUTOVERS = (("2011-04-08", "CC BY-SA 2.5"), ("2018-05-02", "CC BY-SA 3.0"))
LATEST_LICENSE = "CC BY-SA 4.0"

# Sites counted as STEM when `stackexchange.stem_sites` is not set. Names are the site part of the
# dump's name ("physics" for physics.stackexchange.com, "stackoverflow" for stackoverflow.com).
DEFAULT_STEM_SITES = [
    "ai", "arduino", "askubuntu", "astronomy", "bioinformatics", "biology", "chemistry", "codereview",
    "computergraphics", "crypto", "cs", "cseducators", "cstheory", "datascience", "dba", "dsp", "earthscience",
    "electronics", "engineering", "gamedev", "gis", "hsm", "mathematica", "matheducators", "math", "mathoverflow",
    "mechanics", "networkengineering", "or", "physics", "quant", "quantumcomputing", "raspberrypi", "reverseengineering",
    "robotics", "scicomp", "security", "serverfault", "softwareengineering", "space", "stackoverflow", "stats",
    "superuser", "tex", "unix", "webmasters",
]
DEFAULT_FIRST_PERSON = ["I", "my", "I'm", "me", "I've", "I'd", "I'll", "mine", "myself"]
DEFAULT_REFERS_TO_OTHERS = [
    "as mentioned", "as others have", "as others said", "other answers", "another answer", "answer above",
    "answer below", "above answer", "previous answer", "accepted answer", "the other answer", "stack exchange",
    "stackexchange", "this site", "this question", "edit:", "update:", "upvote", "downvote", "in the comments",
    "see comment", "op's", "the op ", "mentioned in the comment", "mentions in the comment",
]
# A link to a post or a user on a Stack Exchange site (absolute, or relative to the site itself).
SE_LINK = re.compile(
    r'<a\s[^>]*?href="(?P<url>(?:(?:https?:)?//(?:[\w-]+\.)*(?:stackexchange\.com|stackoverflow\.com|serverfault\.com|'
    r'superuser\.com|askubuntu\.com|mathoverflow\.net|stackapps\.com))?/(?P<kind>questions|q|a|users|u)/\d[^"]*)"'
    r'[^>]*>(?P<text>.*?)</a>', re.IGNORECASE | re.DOTALL)
NAMES_A_POST = re.compile(r"\b(?:answers?|questions?|posts?|threads?|discussions?|comments?)\b|\?\s*$", re.IGNORECASE)


@dataclass
class StackExchangeConfig:
    paths: list[str] = setting([], "Posts.xml files, site .7z archives, or folders of them (one site per archive "
                               "or subfolder, e.g. cooking.stackexchange.com.7z)")
    stem_sites: list[str] = setting(DEFAULT_STEM_SITES, "sites tagged domain 'stem'; every other site is 'other'")
    top_questions_per_site: int = setting(1000, "keep the N highest-scoring self-contained questions of each site "
                                          "(bounds memory too)", above=0)
    title: TitleRules = field(default_factory=TitleRules, metadata={"help": "rule se_title_not_self_contained"})
    min_answer_score: int = setting(10, "the top answer must score at least this (LIMA: 10)")
    min_answer_chars: int = setting(1200, "shortest answer, in characters of cleaned Markdown (LIMA: 1,200)",
                                    at_least=0)
    max_answer_chars: int = setting(4096, "longest answer (LIMA: 4,096)", at_least=0)
    first_person_words: list[str] = setting(DEFAULT_FIRST_PERSON, "answers using any of these words are dropped "
                                            "(outside code); [] disables the rule")
    refers_to_others: list[str] = setting(DEFAULT_REFERS_TO_OTHERS, "answers containing any of these phrases "
                                          "(as whole words, any case, outside code) are dropped; [] disables the rule")
    post_links: bool = setting(True, "rule se_refers_to_other_answers also drops answers that lean on a link to "
                               "another post or a user of a Stack Exchange site (linked as 'here', by a question's "
                               "title or as 'this answer'); a link on an ordinary phrase stays")
    edit_notes: bool = setting(True, "rule se_refers_to_other_answers also drops edit and update notes written bold "
                               "or as headings ('**Edit**:', '**EDIT**', '## Update')")
    removed_image_rule: bool = setting(True, "rule se_refers_to_removed_image: drop records whose prompt or answer "
                                       "points at an image that was removed ('like this:', 'see the screenshot')")
    strikethrough: Literal["drop", "mark"] = setting("drop", "struck-out text (<s>, <del>, <strike>): dropped with "
                                                     "its text, or kept as ~~text~~")
    include_meta: bool = setting(False, "mine meta sites too (meta.stackexchange.com, <site>.meta.stackexchange.com); "
                                 "left out by default, they are about the site, not its subject")
    prompt_from: Literal["random", "title", "body"] = setting(
        "random", "prompt text: the title, the question body, or either at random (LIMA; stable per record)")
    license: str = setting("auto", "licence in each record: 'auto' = per post, the row's ContentLicense, else from "
                           "its date (CC BY-SA 2.5 before 2011-04-08, 3.0 before 2018-05-02, then 4.0); any other "
                           "value is written into every record")


@dataclass
class SiteDump:
    site: str  # "cooking"
    host: str  # "cooking.stackexchange.com", for URLs
    path: Path  # Posts.xml or the site's .7z

    @property
    def meta(self) -> bool:
        return self.host.startswith("meta.") or ".meta." in self.host


def post_license(attrs: dict[str, str]) -> str | None:
    """The licence of a post: the row's ContentLicense, else from its creation date; None when the row
    says neither. Not from LastEditDate: retags and the Community bot's link rewrites move it without
    changing the licence. In a 2024 dump that carries ContentLicense (datascience.meta, 624 rows) the
    creation date gives the row's licence for 622 rows, the last edit's date for 601."""
    if attrs.get("ContentLicense"):
        return attrs["ContentLicense"].strip()
    date = (attrs.get("CreationDate") or "")[:10]
    if len(date) != 10:
        return None
    return next((lic for cut, lic in LICENSE_CUTOVERS if date < cut), LATEST_LICENSE)


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


def mined_dumps(cfg: StackExchangeConfig, notices: list[str] | None = None) -> list[SiteDump]:
    """The dumps the recipe mines: every one found, less meta sites unless `include_meta`."""
    out = []
    for d in find_dumps(cfg.paths):
        if d.meta and not cfg.include_meta:
            if notices is not None:
                notices.append(f"stackexchange: left out {d.host} ({d.path}): a meta site, about the site itself; "
                               "set stackexchange.include_meta=true to mine it")
            continue
        out.append(d)
    if not out and cfg.paths:
        raise LimaError("every StackExchange dump given is a meta site, and meta sites are left out",
                        where="stackexchange.paths", fix="add the main sites' dumps, or set "
                        "stackexchange.include_meta=true to mine meta sites")
    return out


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


def _better(q: list[Any], pid: int, score: int) -> None:
    if q[3] is None or (score, -pid) > (q[2], -q[3]):
        q[2], q[3] = score, pid


def _post_numbers(attrs: dict[str, str], kind: str) -> tuple[int, int, int] | str:
    """(id, score, parent) of a question or answer row, or what is wrong with it."""
    try:
        pid, score = _int(attrs, "Id"), _int(attrs, "Score")
        parent = _int(attrs, "ParentId") if kind == "2" else 0
    except (KeyError, ValueError):
        return "row without an integer Id, Score or (for answers) ParentId"
    if "Body" not in attrs:
        return "row without a Body"
    return pid, score, parent


def _scan(xml: Path, shown: str, cfg: StackExchangeConfig, counts: RuleCounts, bad: BadRows,
          newest: list[str]) -> dict[int, list[Any]]:
    """Pass 1: qid -> [score, title, best answer score, best answer id] for the site's top questions;
    newest[0] becomes the date of the newest question (the dump is at least that recent)."""
    heap: list[tuple[int, int]] = []  # (score, -id): the root is the question to evict next
    chosen: dict[int, list[Any]] = {}
    rows = early = 0
    last_question = 0  # the highest question id so far: an answer to a later one came too early
    for line, attrs in iter_xml_rows(xml, bad, shown_as=shown, desc="scan"):
        rows += 1
        kind = attrs.get("PostTypeId")
        if kind not in ("1", "2"):
            continue  # tag wikis, moderator nominations ...: not questions or answers
        nums = _post_numbers(attrs, kind)
        if isinstance(nums, str):
            bad.skip(shown, f":{line}", nums, "fix or delete this row")
            continue
        pid, score, parent = nums
        if kind == "2":
            q = chosen.get(parent)
            if q is not None:
                _better(q, pid, score)
            elif parent > last_question:
                early += 1
            continue
        last_question = max(last_question, pid)
        newest[0] = max(newest[0], attrs.get("CreationDate", "")[:10])
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
    if rows == 0:
        raise LimaError(Problem(shown, "no <row .../> elements: the file holds no posts",
                                "re-download the dump; a site's Posts.xml holds one <row .../> per post"))
    if early:
        counts.notices.append(f"stackexchange: {shown}: {early} answer(s) came before their question (the dump is "
                              "not in Id order); the answers were read again once the questions were known")
        _rescan_answers(xml, chosen)
    return chosen


def _rescan_answers(xml: Path, chosen: dict[int, list[Any]]) -> None:
    """For dumps out of Id order: the best answer of each chosen question, from every answer row."""
    for q in chosen.values():
        q[2] = q[3] = None
    for _, attrs in iter_xml_rows(xml, BadRows(on_error="skip"), desc="answers"):  # bad rows: counted in pass 1
        if attrs.get("PostTypeId") != "2":
            continue
        nums = _post_numbers(attrs, "2")
        if not isinstance(nums, str) and nums[2] in chosen:
            _better(chosen[nums[2]], nums[0], nums[1])


def site_records(dump: SiteDump, cfg: StackExchangeConfig, seed: int, counts: RuleCounts,
                 bad: BadRows) -> Iterator[dict[str, Any]]:
    domain = "stem" if dump.site in {s.lower() for s in cfg.stem_sites} else "other"
    shown = str(dump.path)
    newest = [""]
    with _posts_xml(dump) as xml:
        chosen = _scan(xml, shown, cfg, counts, bad, newest)
        wanted = set(chosen) | {q[3] for q in chosen.values() if q[3] is not None}
        rows = {int(a["Id"]): a for a in iter_xml_rows_by_id(xml, wanted)}
    counts.sites.append({"source": SOURCE, "site": dump.site, "url": f"https://{dump.host}", "path": shown,
                         "meta_site": dump.meta, "newest_question": newest[0] or None})
    for qid in sorted(chosen, key=lambda q: (-chosen[q][0], q)):
        rule, rec = _record(dump, domain, cfg, seed, qid, chosen[qid], rows)
        if rule:
            counts.drop(SOURCE, rule)
            continue
        counts.kept[SOURCE] += 1
        yield rec


def leans_on_post_link(body: str, markdown: str) -> str | None:
    """The first link in an answer's HTML to another Stack Exchange post or user that the answer leans
    on: a user, a link whose text names a post or is a question's title, or one whose URL the Markdown
    kept because the sentence points at it ("here", "see this answer: URL"); None if there is none. A
    post linked on an ordinary phrase ("a very large training set") reads fine without it."""
    if "/questions/" not in body and "/q/" not in body and "/a/" not in body and "/u" not in body:
        return None
    for m in SE_LINK.finditer(body):
        url, text = html.unescape(m.group("url")), html.unescape(re.sub(r"<[^>]+>", "", m.group("text"))).strip()
        if (m.group("kind").lower() in ("users", "u") or NAMES_A_POST.search(text) or url in markdown
                or text.lower().strip(".:") in STUB_ANCHORS):
            return url
    return None


def _author(dump: SiteDump, row: dict[str, str]) -> str | None:
    """Who wrote a post, for CC BY-SA attribution: their profile's URL, or the name a deleted user's
    post keeps (OwnerDisplayName); None when the row says neither."""
    if row.get("OwnerUserId"):
        return f"https://{dump.host}/users/{row['OwnerUserId']}"
    return row.get("OwnerDisplayName") or None


def _license(cfg: StackExchangeConfig, question: dict[str, str], answer: dict[str, str]) -> dict[str, Any]:
    if cfg.license != "auto":
        return {"license": cfg.license}
    q, a = post_license(question), post_license(answer)
    if q == a:
        return {"license": a or "unknown (the rows carry no ContentLicense and no date)"}
    return {"license": f"question: {q or 'unknown'}; answer: {a or 'unknown'}",
            "license_question": q, "license_answer": a}


def _record(dump: SiteDump, domain: str, cfg: StackExchangeConfig, seed: int, qid: int, q: list[Any],
            rows: dict[int, dict[str, str]]) -> tuple[str | None, dict[str, Any]]:
    """(the rule that drops this question, None) or (None, its record)."""
    score, title, a_score, aid = q
    if aid is None:
        return "se_no_answer", {}
    if a_score < cfg.min_answer_score:
        return "se_answer_score", {}
    question, answer_row = rows.get(qid, {}), rows.get(aid, {})
    answer, answer_image = convert_post(answer_row.get("Body", ""), cfg.strikethrough)
    if not cfg.min_answer_chars <= len(answer) <= cfg.max_answer_chars:
        return "se_answer_length", {}
    if find_words(answer, cfg.first_person_words):
        return "se_first_person", {}
    if find_phrase(answer, cfg.refers_to_others, edit_notes=cfg.edit_notes) or (
            cfg.post_links and leans_on_post_link(answer_row.get("Body", ""), answer)):
        return "se_refers_to_other_answers", {}
    rid = f"se:{dump.site}:{qid}"
    use = cfg.prompt_from
    if use == "random":  # seeded by the record id, so the choice is stable whatever else is in the dump
        use = random.Random(f"{seed}:{rid}").choice(["title", "body"])
    prompt, prompt_image = title.strip(), False
    if use == "body":
        prompt, prompt_image = convert_post(question.get("Body", ""), cfg.strikethrough)
    if not prompt:
        return "se_empty_prompt", {}
    if cfg.removed_image_rule and (answer_image or prompt_image):
        return "se_refers_to_removed_image", {}
    return None, {
        "id": rid, "source": SOURCE,
        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
        "meta": {"source": SOURCE, "group": f"{SOURCE}:{domain}", "stratum": dump.site, "domain": domain,
                 "site": dump.site, "original_id": str(qid), "answer_id": str(aid),
                 "url": f"https://{dump.host}/questions/{qid}", "answer_url": f"https://{dump.host}/a/{aid}",
                 "authors": {"question": _author(dump, question), "answer": _author(dump, answer_row)},
                 **_license(cfg, question, answer_row),
                 "score": score, "answer_score": a_score, "prompt_from": use, "title": title.strip()}}


def stackexchange_records(cfg: StackExchangeConfig, seed: int, counts: RuleCounts,
                          bad: BadRows) -> Iterator[dict[str, Any]]:
    for dump in mined_dumps(cfg, counts.notices):
        yield from site_records(dump, cfg, seed, counts, bad)


def read(cfg: StackExchangeConfig, run: SourceRun) -> Iterator[dict[str, Any]]:
    """This source's candidate records (the signature every source shares, see sources.py)."""
    if cfg.paths:
        yield from stackexchange_records(cfg, run.seed, run.counts, run.bad)


def input_files(cfg: StackExchangeConfig) -> list[Path]:
    """The files read, for the manifest's hashes: each site's Posts.xml or archive."""
    return [d.path for d in mined_dumps(cfg)]
