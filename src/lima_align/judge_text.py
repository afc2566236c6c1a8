"""The text side of judging: the instruction files a judge is given, the conversation as it reads it, the
two presentation orders, and reading a verdict or score back out of its answer.

Instruction files (data/judge/*.md) are templates: `{prompt}`, `{response_a}`, `{response_b}`
(pairwise) or `{prompt}`, `{response}` (absolute) are replaced in one pass, so braces in the
inserted conversation or answers are never touched. A leading `<!-- ... -->` comment documents
the file and is not sent. The verdict is the LAST line `Verdict: A|B|tie` (`Rating:
excellent|pass|fail`, `Score: 1..6`), case-insensitive, markdown emphasis tolerated. An answer
without one is asked again once with a reminder appended; if it still has none the vote is kept
with verdict null, its raw text kept, and counted as unparseable.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import LimaError
from .verdicts import SCALES

INSTRUCTIONS_DIR = Path(__file__).parent / "data" / "judge"
# Instruction file and placeholders for each kind of judgment.
DEFAULT_INSTRUCTIONS = {"pairwise": "pairwise.md", "fail_pass_excellent": "absolute_fpe.md",
                        "helpfulness_6": "absolute_helpfulness6.md"}
PAIRWISE_FIELDS = ("prompt", "response_a", "response_b")
ABSOLUTE_FIELDS = ("prompt", "response")
# Marks where a judge's second answer (after the reminder) starts in the kept raw text. Both
# answers are kept; the first had no verdict line, so parsing the whole text gives the second's.
RETRY_MARK = "\n\n[lima-align: no final verdict line found; a reminder was sent and this is the second answer]\n\n"


# ----------------------------------------------------------------- parsing verdicts


def _final_value(raw: str, key: str, value: str) -> str | None:
    """The value of the LAST line `key: value` in raw, lower-cased, or None.

    Tolerates markdown emphasis and code marks, headings, bullets, quotes and brackets around
    the value, a leading "Final", and a trailing remark after punctuation ("Verdict: A (clearer)").
    A value must be followed by the end of the line or punctuation, so "Verdict: a tie" is not "A".
    """
    line_re = re.compile(
        rf"^[\s#>\-+]*(?:final\s+)?{key}\s*[:=\-\u2013\u2014]\s*[\[(\"']*\s*(?:response\s+)?({value})\s*[\])\"']*"
        r"\s*(?:[.!;,:(\-\u2013\u2014/].*)?$", re.IGNORECASE)
    for line in reversed(raw.splitlines()):
        m = line_re.match(re.sub(r"[*_`]", "", line))
        if m:
            return m.group(1).lower()
    return None


def parse_verdict(raw: str) -> str | None:
    """'A' (the response shown first), 'B' (shown second), 'tie', or None when there is no verdict line."""
    v = _final_value(raw, "verdict", r"a|b|tie|neither")
    return None if v is None else {"a": "A", "b": "B", "tie": "tie", "neither": "tie"}[v]


def parse_score(raw: str, scale: str) -> str | int | None:
    """'fail' / 'pass' / 'excellent' for fail_pass_excellent, 1..6 for helpfulness_6, None if unparseable."""
    if scale == "fail_pass_excellent":
        return _final_value(raw, "rating", r"excellent|pass|fail")
    if scale == "helpfulness_6":
        # "Score: 5/6" is fine; "Score: 4.5" or "Score: 10" is not a score on this scale.
        v = _final_value(raw, "score", r"[1-6](?![.,]?\d)")
        return None if v is None else int(v)
    raise LimaError(f"unknown scale {scale!r}", fix=f"use one of {', '.join(SCALES)}")


REMINDERS = {
    "pairwise": "Your answer did not end with a verdict line. Reply with your verdict as a single line in "
                "exactly one of these forms, and nothing else: `Verdict: A`, `Verdict: B` or `Verdict: tie`.",
    "fail_pass_excellent": "Your answer did not end with a rating line. Reply with your rating as a single line "
                           "in exactly one of these forms, and nothing else: `Rating: excellent`, "
                           "`Rating: pass` or `Rating: fail`.",
    "helpfulness_6": "Your answer did not end with a score line. Reply with your score as a single line of the "
                     "form `Score: N` (N a whole number from 1 to 6), and nothing else.",
}


# ----------------------------------------------------------------- swapping the order


def show(a_text: str, b_text: str, order: str) -> tuple[str, str]:
    """The two original answers in the order the judge sees them: (shown as A, shown as B)."""
    return (a_text, b_text) if order == "ab" else (b_text, a_text)


def unswap(label: str | None, order: str) -> str | None:
    """A verdict about the shown positions ('A', 'B', 'tie', None) in terms of the ORIGINAL a/b."""
    if label in (None, "tie"):
        return label
    first, second = ("a", "b") if order == "ab" else ("b", "a")
    return first if label == "A" else second


def combine(ab: str | None, ba: str | None) -> tuple[str | None, bool | None]:
    """(combined verdict, consistent) from the two orders' verdicts, both in original terms.

    Agreement gives that verdict; a tie against a preference, or opposite preferences (the judge
    followed the position, not the content), give a tie. Any unparseable vote gives (None, None).
    """
    if ab is None or ba is None:
        return None, None
    if ab == ba:
        return ab, True
    return "tie", False


# ----------------------------------------------------------------- instructions


@dataclass(frozen=True)
class Instructions:
    name: str      # the file's stem: "pairwise", "absolute_fpe", ...
    sha256: str    # of the file's bytes, as stored in every record
    template: str  # the text sent, with the leading documentation comment removed
    path: Path

    def fill(self, values: dict[str, str]) -> str:
        """Replace each {name} in one pass: text coming in is never scanned for placeholders again."""
        pattern = re.compile("|".join(re.escape("{" + k + "}") for k in values))
        return pattern.sub(lambda m: values[m.group(0)[1:-1]], self.template)

    def record(self) -> dict[str, str]:
        return {"name": self.name, "sha256": self.sha256}


def load_instructions(path: str | Path | None, kind: str) -> Instructions:
    """Read an instruction file (None: the packaged one for `kind`) and check its placeholders."""
    path = Path(path) if path is not None else INSTRUCTIONS_DIR / DEFAULT_INSTRUCTIONS[kind]
    if not path.is_file():
        raise LimaError("instruction file not found", where=str(path),
                        fix="check the path, or leave the option out to use the packaged instructions")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise LimaError("instruction file is not UTF-8 text", where=str(path), fix="save it as UTF-8") from None
    template = re.sub(r"\A\s*<!--.*?-->\s*", "", text, flags=re.DOTALL)
    needed = PAIRWISE_FIELDS if kind == "pairwise" else ABSOLUTE_FIELDS
    missing = [f"{{{f}}}" for f in needed if f"{{{f}}}" not in template]
    if missing:
        raise LimaError(f"instruction file lacks the placeholder(s) {', '.join(missing)}", where=str(path),
                        fix=f"a {kind} instruction file must contain {', '.join('{' + f + '}' for f in needed)}")
    return Instructions(path.stem, hashlib.sha256(data).hexdigest(), template, path)


def render_conversation(messages: list[dict[str, str]]) -> str:
    """The prompt turns as the judge reads them, each labelled with its role."""
    return "\n\n".join(f"[{m['role'].capitalize()}]\n{m['content']}" for m in messages)
