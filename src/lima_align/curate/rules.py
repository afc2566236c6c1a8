"""LIMA's per-record filters as named rules, and the counts of what each one dropped.

A record is checked against its source's rules in a fixed order and dropped by the first that
fails; that rule's counter goes up, so every drop is accounted for in the manifest. The text rules
here are shared by the sources (StackExchange, wikiHow, Reddit).

Rule names (manifest keys), in the order they are checked:
  StackExchange  se_title_not_self_contained, se_not_top_question, se_no_answer, se_answer_score,
                 se_answer_length, se_first_person, se_refers_to_other_answers, se_empty_prompt,
                 se_refers_to_removed_image
  wikiHow        wh_missing_fields, wh_too_short, wh_too_long
  Reddit         rd_meta_post, rd_not_top_submission, rd_no_comment, rd_comment_score, rd_comment_length,
                 rd_eval_title_not_self_contained
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ..config import setting
from .inputs import BadRows
# A title that points at something outside itself ("Why does this fail?") is not a self-contained prompt.
DEFAULT_TITLE_REFERENCES = ["this", "these", "those", "above", "below", "following", "attached", "pictured",
                            "shown", "here"]


@dataclass
class TitleRules:
    require_question_mark: bool = setting(True, "the title must end with '?'")
    min_chars: int = setting(15, "shortest accepted title", at_least=0)
    max_chars: int = setting(150, "longest accepted title", at_least=0)
    references: list[str] = setting(DEFAULT_TITLE_REFERENCES, "words (matched as whole words, any case) that make a "
                                    "title point outside itself, so it is not self-contained")


@dataclass
class RuleCounts:
    """Per source: rows seen, records kept, and drops by rule name. Transforms count rewrites that
    change a record without dropping it (e.g. wh_this_article_rewritten). Notices are what the run
    prints at its end (meta sites left out, a dump out of order); sites, where each site's records
    came from (URL, dump date) for the manifest."""

    seen: Counter = field(default_factory=Counter)
    kept: Counter = field(default_factory=Counter)
    dropped: dict[str, Counter] = field(default_factory=dict)
    transforms: dict[str, Counter] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    sites: list[dict[str, Any]] = field(default_factory=list)

    def drop(self, source: str, rule: str, n: int = 1) -> None:
        self.dropped.setdefault(source, Counter())[rule] += n

    def transform(self, source: str, name: str) -> None:
        self.transforms.setdefault(source, Counter())[name] += 1

    def to_manifest(self) -> dict[str, Any]:
        sources = sorted(set(self.seen) | set(self.kept) | set(self.dropped))
        return {s: {"seen": self.seen[s], "kept": self.kept[s],
                    "dropped": dict(sorted(self.dropped.get(s, Counter()).items())),
                    "transforms": dict(sorted(self.transforms.get(s, Counter()).items()))} for s in sources}


# Prose only: fenced blocks (any fence length), inline code spans, and bare URLs are not words.
CODE = re.compile(r"(`{3,}).*?\1|`[^`\n]*`", re.DOTALL)
URL = re.compile(r"\bhttps?://\S+|\bwww\.\S+")

# Words that name a numbered thing, so the "I" after them is a Roman numeral ("Type I error",
# "World War I", "Henry I", "Phase I") and not the writer.
ROMAN_AFTER = frozenset((
    "type", "war", "part", "chapter", "phase", "class", "stage", "level", "tier", "grade", "schedule", "title",
    "article", "section", "volume", "vol", "book", "act", "appendix", "figure", "table", "category", "division",
    "league", "mark", "mk", "series", "model", "version", "henry", "louis", "charles", "elizabeth", "james",
    "george", "edward", "william", "richard", "john", "peter", "napoleon", "francis", "mary", "alexander",
    "frederick", "philip", "paul", "pius", "leo", "gregory", "benedict", "catherine", "nicholas", "ferdinand",
    "otto", "wilhelm", "victor", "step", "lemma", "theorem", "case", "option", "method", "problem", "exercise",
    "episode", "season", "round", "unit", "wave", "gen", "generation",
))
# Courses numbered by a Roman numeral ("after Algebra I.", "Calculus I students"): only where the "I"
# ends the phrase or a course word follows, since "In Physics I learned..." is the writer.
COURSES = frozenset((
    "algebra", "calculus", "calc", "precalculus", "geometry", "trigonometry", "analysis", "statistics", "probability",
    "physics", "chemistry", "biology", "mechanics", "economics", "topology", "programming", "english", "spanish",
    "french", "german", "latin", "chinese", "japanese", "math", "maths", "mathematics",
))
COURSE_FOLLOWS = re.compile(r"\s*(?:[.,;:!?)]|$|(?:course|class|student|exam|test|textbook|book|curriculum|sequence|"
                            r"level|material|task|problem|topic|teacher|instructor|section|syllabus|lecture|final|"
                            r"midterm|homework|content|grade|credit|requirement|prerequisite)s?\b)")
NUMERAL_LIST = re.compile(r"\s*(?:,|and|or|&|/|-|–|to)\s*(?:II|III|IV|V|VI)\b")


@lru_cache(maxsize=64)
def _words_pattern(words: tuple[str, ...]) -> re.Pattern[str] | None:
    """Whole-word matcher, any case, except a lone "I" which must be a capital (so a loop variable
    `i` or the letter in "i.e." does not count as first person)."""
    if not words:
        return None
    parts = []
    for w in words:
        body = re.escape(w.replace("\u2019", "'"))
        parts.append(f"(?-i:{body})" if w.lower() == "i" else body)
    return re.compile(r"(?<![\w'])(?:" + "|".join(parts) + r")(?![\w'])", re.IGNORECASE)


@lru_cache(maxsize=8)  # the rules of one record read the same answer in turn
def prose_of(text: str) -> str:
    """`text` with code (blocks and spans) and URLs blanked out and curly apostrophes made straight."""
    if "`" in text:
        text = CODE.sub(" ", text)
    if "://" in text or "www." in text:
        text = URL.sub(" ", text)
    return text.replace("\u2019", "'")


def technical_i(text: str, start: int, end: int) -> bool:
    """Whether the "I" at text[start:end] is not the writer: I/O, I-beam, a Roman numeral after a
    numbered thing's name ("Type I", "World War I") or in a list of numerals ("I and II")."""
    before, after = text[max(0, start - 30):start], text[end:end + 12]
    if re.match(r"/(?:[OoQ]\b|II?\b)", after) or after[:1] in ("-", "\u2013") or before[-1:] in ("-", "\u2013"):
        return True  # I/O, I/Q, I/II; I-beam, I-95 ("I/we" stays first person)
    if before[-1:] == "(" and after[:1] == ")":  # an enumerator "(I)"
        return True
    if after[:1] == "." and (re.search(r"\b[A-Z]\.\s*$", before) or re.match(r"\.\s*[A-Z]\.", after)):
        return True  # an initial among initials: "Brown, S. I., & Walter", "I. M. Pei"
    prev = re.search(r"([A-Za-z]+)\.?\s+$", before)
    if prev and prev.group(1)[0].isupper() and prev.group(1).lower() in ROMAN_AFTER:
        return True
    if prev and prev.group(1)[0].isupper() and prev.group(1).lower() in COURSES and COURSE_FOLLOWS.match(after):
        return True
    return bool(NUMERAL_LIST.match(after))


def find_words(text: str, words: list[str]) -> str | None:
    """The first of `words` used in the prose of `text` (code, URLs and technical uses of "I" are
    ignored), or None."""
    pat = _words_pattern(tuple(words))
    if pat is None:
        return None
    prose = prose_of(text)
    for m in pat.finditer(prose):
        if m.group(0) == "I" and technical_i(prose, m.start(), m.end()):
            continue
        return m.group(0)
    return None


@lru_cache(maxsize=1024)
def _phrase_pattern(phrase: str) -> re.Pattern[str]:
    """A phrase as whole words: a phrase starting (ending) with a letter must not continue a word there,
    so "op's" does not match inside "Hadoop's"; a trailing space in a phrase ("the op ") means the same."""
    body = r"\s+".join(re.escape(w) for w in phrase.split())
    lead = r"(?<![\w'])" if phrase[0].isalnum() else ""
    tail = r"(?![\w])" if phrase[-1].isalnum() or phrase[-1] == "'" else ""
    return re.compile(f"{lead}{body}{tail}{PHRASE_EXCEPTIONS.get(phrase, '')}", re.IGNORECASE)


# Phrases that are also the start of a technical term: "the op amp" is an amplifier, not the asker.
PHRASE_EXCEPTIONS = {"the op": r"(?![\s-]*amps?\b)", "op's": r"(?![\s-]*amps?\b)"}


# Edit and update notes in their usual dress: "**Edit**:", "**EDIT**", "## Update", "Edit 2 -",
# "*Updated:*" at the start of a line, or a bold/italic "Edit"/"Update" note anywhere.
_NOTE_WORD = r"(?:edit(?:ed)?|update(?:d)?)(?:\s*\d+|\s*#\d+)?"
EDIT_NOTE = re.compile(
    r"(?im)^[ \t>]*(?:#{1,6}[ \t]*)?(?:[*_]{1,3}[ \t]*)?" + _NOTE_WORD + r"[ \t]*[*_]{0,3}[ \t]*(?:[:\-\u2013\u2014]|$)"
    r"|^[ \t>]*[*_]{1,3}[ \t]*(?-i:EDIT|UPDATE|Edit)[ \t]*\d*[ \t]*[*_]{1,3}(?![\w*_])"
    r"|[*_]{1,3}[ \t]*" + _NOTE_WORD + r"[ \t]*:[ \t]*[*_]{1,3}")


def find_phrase(text: str, phrases: list[str], *, edit_notes: bool = False) -> str | None:
    """The first of `phrases` used as whole words in the prose of `text` (code and URLs ignored), any
    case, or None. With `edit_notes`, bold/heading edit and update notes count too."""
    prose = prose_of(text)
    low = " ".join(prose.lower().split())
    found = []
    for p in phrases:  # a plain substring test first: the regex runs only for phrases that may be there
        p = " ".join(p.replace("\u2019", "'").lower().split())
        if p and p in low and (m := _phrase_pattern(p).search(prose)):
            found.append(m)
    if edit_notes and ("edit" in low or "update" in low) and (m := EDIT_NOTE.search(prose)):
        found.append(m)
    if not found:
        return None
    return " ".join(min(found, key=lambda m: m.start()).group(0).lower().split())


def title_problem(title: str, rules: TitleRules) -> str | None:
    """Why a title is not a self-contained prompt, or None when it is. Our rule: a question (ends with
    '?'), of reasonable length, without words that point outside the title ("this", "above"...)."""
    t = title.strip()
    if not rules.min_chars <= len(t) <= rules.max_chars:
        return f"length {len(t)} outside {rules.min_chars}..{rules.max_chars}"
    if rules.require_question_mark and not t.endswith("?"):
        return "does not end with '?'"
    word = _title_reference(t, rules.references)
    if word:
        return f"refers outside itself ({word!r})"
    return None


# "above"/"below" as a preposition or a direction point nowhere: "below a specific ABV", "above 5 %",
# "overflow when hit from above" (real titles that were dropped); "the code below" does point.
SPATIAL = re.compile(r"\s*(?:(?:a|an|the|zero|freezing|average|normal|room)\b|[\d$%\u00b0-])", re.IGNORECASE)


def _title_reference(title: str, words: list[str]) -> str | None:
    pat = _words_pattern(tuple(words))
    if pat is None:
        return None
    for m in pat.finditer(title):
        if m.group(0).lower() in ("above", "below") and (
                SPATIAL.match(title, m.end()) or title[:m.start()].rstrip().lower().endswith("from")):
            continue
        return m.group(0)
    return None


THIS_ARTICLE = re.compile(r"^\s*This (?:article|wikiHow(?: article)?)\b", re.IGNORECASE)


def rewrite_this_article(text: str) -> tuple[str, bool]:
    """LIMA: wikiHow's typical 'This article...' opening becomes 'The following answer...'."""
    new, n = THIS_ARTICLE.subn("The following answer", text, count=1)
    return new, n > 0


TAG = re.compile(r"^\s*[\[(]\s*([A-Za-z]{1,6})\s*[\])]\s*:?\s*")


def split_tag(title: str) -> tuple[str | None, str]:
    """'[WP] A dragon ...' -> ('WP', 'A dragon ...'); a title without a tag -> (None, title)."""
    m = TAG.match(title)
    if not m:
        return None, title.strip()
    return m.group(1).upper(), title[m.end():].strip()


@dataclass
class SourceRun:
    """What every source reads with (the shared signature, see sources.py): the recipe's seed, the rule counts
    and bad rows it adds to, and `eval_prompts`, for a source that also finds evaluation prompts (Reddit)."""

    seed: int
    counts: RuleCounts
    bad: BadRows
    eval_prompts: list[dict[str, Any]] = field(default_factory=list)
