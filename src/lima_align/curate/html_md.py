"""HTML posts -> clean Markdown, keeping what a training response needs and nothing else.

Kept: paragraphs, code blocks (fenced) and inline code, lists (nested, numbered), headings, block
quotes, bold/italic. Dropped: link URLs (the anchor text stays), images, scripts, styles and every
other tag (its text stays). Written on the standard library's html.parser: no extra dependency.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

BLOCK = {"p", "div", "table", "section", "article", "dl", "figure", "details"}
HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
DROP_WITH_CONTENT = {"script", "style", "head", "title", "svg", "noscript"}
INLINE_MARKS = {"strong": "**", "b": "**", "em": "*", "i": "*"}
PLACEHOLDER = re.compile(r"\x00(\d+)\x00")


class _Converter(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        # A stack of open containers (kind, parts, info). Finished containers (code blocks, list
        # items, quotes) are stored whole in `done` and referenced by a placeholder, so the whitespace
        # clean-up of their parent never touches their indentation.
        self.stack: list[tuple[str, list[str], dict]] = [("root", [], {})]
        self.done: list[str] = []
        self.lists: list[dict] = []
        self.dropping = 0

    # -- helpers
    @property
    def parts(self) -> list[str]:
        return self.stack[-1][1]

    def _placeholder(self, text: str) -> str:
        self.done.append(text)
        return f"\x00{len(self.done) - 1}\x00"

    def _in_pre(self) -> bool:
        return any(kind == "pre" for kind, _, _ in self.stack)

    def _close(self, kind: str) -> tuple[list[str], dict] | None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i][0] == kind:
                while len(self.stack) > i + 1:  # unclosed inner containers end here
                    self._finish(*self.stack.pop())
                _, parts, info = self.stack.pop()
                return parts, info
        return None

    def _finish(self, kind: str, parts: list[str], info: dict) -> None:
        """Render a container that was popped and add it to its parent."""
        if kind == "pre":
            code = "".join(parts).strip("\n")
            fence = "````" if "```" in code else "```"
            self.parts.append("\n\n" + self._placeholder(f"{fence}\n{code}\n{fence}") + "\n\n")
        elif kind == "li":
            marker = info["marker"]
            body = _normalise("".join(parts), self.done)
            pad = " " * len(marker)
            body = body.replace("\n", "\n" + pad).replace("\n" + pad + "\n", "\n\n")
            self.parts.append("\n" + self._placeholder(marker + body))
        elif kind == "blockquote":
            body = _normalise("".join(parts), self.done)
            quoted = "\n".join("> " + ln if ln else ">" for ln in body.split("\n"))
            self.parts.append("\n\n" + self._placeholder(quoted) + "\n\n")

    # -- parser callbacks
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in DROP_WITH_CONTENT:
            self.dropping += 1
            return
        if self.dropping:
            return
        if tag == "pre":
            self.stack.append(("pre", [], {}))
        elif tag == "code" and not self._in_pre():
            self.parts.append("`")
        elif tag in ("ul", "ol"):
            start = dict(attrs).get("start") or "1"
            self.lists.append({"ordered": tag == "ol", "n": int(start) if start.isdigit() else 1})
            self.parts.append("\n\n")
        elif tag == "li":
            lst = self.lists[-1] if self.lists else {"ordered": False, "n": 1}
            marker = f"{lst['n']}. " if lst["ordered"] else "- "
            lst["n"] += 1
            self.stack.append(("li", [], {"marker": marker}))
        elif tag == "blockquote":
            self.stack.append(("blockquote", [], {}))
        elif tag in HEADINGS:
            self.parts.append("\n\n" + "#" * HEADINGS[tag] + " ")
        elif tag in BLOCK:
            self.parts.append("\n\n")
        elif tag in ("br", "tr"):
            self.parts.append("\n")
        elif tag == "hr":
            self.parts.append("\n\n---\n\n")
        elif tag in ("td", "th"):
            self.parts.append(" ")
        elif tag in INLINE_MARKS and not self._in_pre():
            self.parts.append(INLINE_MARKS[tag])
        # <a>, <img> and everything else: no markup (an image has no text, a link keeps its text)

    def handle_endtag(self, tag: str) -> None:
        if tag in DROP_WITH_CONTENT:
            self.dropping = max(0, self.dropping - 1)
            return
        if self.dropping:
            return
        if tag in ("pre", "li", "blockquote"):
            closed = self._close(tag)
            if closed is not None:
                self._finish(tag, *closed)
        elif tag == "code" and not self._in_pre():
            self.parts.append("`")
        elif tag in ("ul", "ol"):
            if self.lists:
                self.lists.pop()
            self.parts.append("\n\n")
        elif tag in HEADINGS or tag in BLOCK:
            self.parts.append("\n\n")
        elif tag in INLINE_MARKS and not self._in_pre():
            self.parts.append(INLINE_MARKS[tag])

    def handle_data(self, data: str) -> None:
        if self.dropping:
            return
        if self._in_pre():
            self.parts.append(data)
        else:
            self.parts.append(re.sub(r"\s+", " ", data))

    def result(self) -> str:
        while len(self.stack) > 1:
            self._finish(*self.stack.pop())
        return _expand(_normalise("".join(self.parts), self.done), self.done)


def _normalise(text: str, done: list[str]) -> str:
    text = re.sub(r"[ \t]*\n[ \t]*", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def _expand(text: str, done: list[str]) -> str:
    for _ in range(64):  # nested placeholders: a list inside a quote inside a list item ...
        if "\x00" not in text:
            break
        text = PLACEHOLDER.sub(lambda m: done[int(m.group(1))], text)
    return text


def html_to_markdown(html: str) -> str:
    conv = _Converter()
    conv.feed(html)
    conv.close()
    return conv.result()


MD_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
MD_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
BARE_URL = re.compile(r"https?://\S+")


def strip_markdown_links(text: str) -> str:
    """For text that is already Markdown or plain (wikiHow): drop images and URLs, keep anchor text."""
    text = MD_IMAGE.sub("", text)
    text = MD_LINK.sub(r"\1", text)
    return BARE_URL.sub("", text)
