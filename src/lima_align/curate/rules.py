"""LIMA's per-record filters as named rules, and the counts of what each one dropped.

A record is checked against its source's rules in a fixed order and dropped by the first that
fails; that rule's counter goes up, so every drop is accounted for in the manifest. The text rules
here are shared by the sources (StackExchange, wikiHow, Reddit).

Rule names (manifest keys), in the order they are checked:
  StackExchange  se_title_not_self_contained, se_not_top_question, se_no_answer, se_answer_score,
                 se_answer_length, se_first_person, se_refers_to_other_answers, se_empty_prompt
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

from .config import TitleRules

CODE = re.compile(r"````.*?````|```.*?```|`[^`\n]*`", re.DOTALL)


@dataclass
class RuleCounts:
    """Per source: rows seen, records kept, and drops by rule name. Transforms count rewrites that
    change a record without dropping it (e.g. wh_this_article_rewritten)."""

    seen: Counter = field(default_factory=Counter)
    kept: Counter = field(default_factory=Counter)
    dropped: dict[str, Counter] = field(default_factory=dict)
    transforms: dict[str, Counter] = field(default_factory=dict)

    def drop(self, source: str, rule: str, n: int = 1) -> None:
        self.dropped.setdefault(source, Counter())[rule] += n

    def transform(self, source: str, name: str) -> None:
        self.transforms.setdefault(source, Counter())[name] += 1

    def to_manifest(self) -> dict[str, Any]:
        sources = sorted(set(self.seen) | set(self.kept) | set(self.dropped))
        return {s: {"seen": self.seen[s], "kept": self.kept[s],
                    "dropped": dict(sorted(self.dropped.get(s, Counter()).items())),
                    "transforms": dict(sorted(self.transforms.get(s, Counter()).items()))} for s in sources}


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


def find_words(text: str, words: list[str]) -> str | None:
    """The first of `words` used in the prose of `text` (code is ignored), or None."""
    pat = _words_pattern(tuple(words))
    if pat is None:
        return None
    m = pat.search(CODE.sub(" ", text).replace("\u2019", "'"))
    return m.group(0) if m else None


def find_phrase(text: str, phrases: list[str]) -> str | None:
    """The first of `phrases` found anywhere in `text`, any case, or None."""
    low = text.lower().replace("\u2019", "'")
    return next((p for p in phrases if p.lower() in low), None)


def title_problem(title: str, rules: TitleRules) -> str | None:
    """Why a title is not a self-contained prompt, or None when it is. Our rule: a question (ends with
    '?'), of reasonable length, without words that point outside the title ("this", "above"...)."""
    t = title.strip()
    if not rules.min_chars <= len(t) <= rules.max_chars:
        return f"length {len(t)} outside {rules.min_chars}..{rules.max_chars}"
    if rules.require_question_mark and not t.endswith("?"):
        return "does not end with '?'"
    word = find_words(t, rules.references)
    if word:
        return f"refers outside itself ({word!r})"
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
