"""The shell commands of README.md's fenced bash / sh / console blocks, in reading order.

Used by test_readme.py, which runs them. A logical line is one command: continuation lines
(a trailing backslash) are joined with one space, a trailing `# comment` is dropped, a leading
`$ ` prompt is dropped, and a trailing `&` marks it as started in the background. `cat > FILE
<<'EOF'` ... `EOF` is a heredoc (the file's text is kept), and a line of NAME=VALUE assignments
(`;`-separated) sets shell variables that later commands use as `$NAME`.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
SHELL_LANGS = {"bash", "sh", "shell", "console"}
_ASSIGN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_HEREDOC = re.compile(r"^cat\s+>\s*(?P<file>\S+)\s+<<-?\s*(?P<q>['\"]?)(?P<tag>\w+)(?P=q)$")


@dataclass
class Command:
    text: str  # the logical line as the README writes it, without its comment and trailing `&`
    section: str  # the `## ` heading it sits under
    line: int  # README line number where it starts
    background: bool = False
    heredoc: str | None = None  # the file's text for `cat > FILE <<'EOF'`
    assigns: dict[str, str] = field(default_factory=dict)  # NAME=VALUE lines

    @property
    def kind(self) -> str:
        if self.heredoc is not None:
            return "heredoc"
        if self.assigns:
            return "assign"
        return "lima-align" if self.text.split()[0] == "lima-align" else "other"


def strip_comment(line: str) -> str:
    """The line without a shell comment: a `#` at the start or after whitespace, outside quotes."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def parse_assigns(text: str) -> dict[str, str]:
    """{NAME: VALUE} when the line is only assignments (`A=1; B="x y"`), else {}."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in _split_semicolons(text)):
        if not part:
            continue
        if not _ASSIGN.match(part):
            return {}
        words = shlex.split(part)
        if len(words) != 1:
            return {}
        name, value = words[0].split("=", 1)
        out[name] = value
    return out


def _split_semicolons(text: str) -> list[str]:
    parts, cur, quote = [], [], None
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == ";":
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return parts


def readme_commands(path: Path = README) -> list[Command]:
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Command] = []
    section = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].strip()
        fence = re.match(r"^```(\w*)\s*$", line)
        if not fence:
            i += 1
            continue
        lang = fence.group(1)
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        if lang in SHELL_LANGS:
            out.extend(_block(lines, i + 1, end, section))
        i = end + 1
    return out


def _block(lines: list[str], start: int, end: int, section: str) -> list[Command]:
    out: list[Command] = []
    i = start
    while i < end:
        first = i
        raw = lines[i]
        i += 1
        if raw.startswith("$ "):
            raw = raw[2:]
        text = strip_comment(raw)
        while text.endswith("\\") and i < end:
            text = text[:-1].rstrip() + " " + strip_comment(lines[i]).strip()
            i += 1
        text = text.strip()
        if not text:
            continue
        doc = _HEREDOC.match(text)
        if doc:
            stop = next(j for j in range(i, end) if lines[j].strip() == doc.group("tag"))
            out.append(Command(text, section, first + 1, heredoc="\n".join(lines[i:stop]) + "\n"))
            i = stop + 1
            continue
        background = text.endswith("&") and not text.endswith("&&")
        if background:
            text = text[:-1].rstrip()
        out.append(Command(text, section, first + 1, background=background, assigns=parse_assigns(text)))
    return out


if __name__ == "__main__":
    for c in readme_commands():
        print(f"{c.line:4} {c.kind:10} {'&' if c.background else ' '} {c.text}")
