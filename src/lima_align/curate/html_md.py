"""HTML posts -> clean Markdown, keeping what a training response needs and nothing else.

Kept: paragraphs, line breaks (<br> as a hard break), code blocks (fenced, indented with their list
item) and inline code, lists (nested, numbered), headings, block quotes, bold/italic, tables (as
GitHub tables), superscripts and subscripts (`10^6`, `H_2O`, so 10<sup>6</sup> does not read 106).
Dropped: link URLs (the anchor text stays), images, scripts, styles, struck-out text (or `~~text~~`
with strike="mark") and every other tag (its text stays). A URL is kept only where the sentence
would point at nothing without it: a link whose text only points at it ("here", "this link")
becomes a Markdown link, and a URL shown as itself (link text or bare) stays as `<URL>` on a line
of its own, after a colon or a word leading into it ("available at", "see"), or when the sentence
goes on after it; elsewhere it goes. Emphasis keeps its spaces outside the marks, as CommonMark
needs, and a literal "*" or "_" the page showed is escaped where it would read as emphasis (not in
TeX maths or URLs). Entities are decoded once. Written on the standard library's html.parser: no
extra dependency.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

BLOCK = {"p", "div", "section", "article", "dl", "figure", "details", "dd", "dt", "figcaption"}
HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
DROP_WITH_CONTENT = {"script", "style", "head", "title", "svg", "noscript"}
STRUCK = {"s", "strike", "del"}
INLINE_MARKS = {"strong": "**", "b": "**", "em": "*", "i": "*"}
# Containers rendered when they close; their text is collected on a stack.
CONTAINERS = {"pre", "li", "blockquote", "table", "tr", "td", "th", "sup", "sub", "a", "code"} | STRUCK
CONTAINERS |= set(INLINE_MARKS)
PLACEHOLDER = re.compile(r"\x00(\d+)\x00")
IMAGE = "\x01"  # where an image was removed (see convert_post)
DROPPED = "\x02"  # where a URL or struck-out text was removed: no gap is left before punctuation there
BREAK = "\x05"  # a <br>: two spaces before the newline at the end (a hard line break), none at a block's end
URL = "\x03"  # around a URL shown as itself (link text or bare): kept or dropped by its sentence, see _url
URL_MARKED = re.compile(f"{URL}([^{URL}]*){URL}")
# Words after which a sentence goes on into the URL ("available at", "see", "from"): without it, it points at nothing.
URL_LEADS = {"at", "from", "see", "via", "visit", "in", "on", "to", "is", "are", "was", "were", "here", "there",
             "under", "check", "read", "try", "download", "and", "or", "by", "of", "also"}
DOMAIN_NAME = re.compile(r"^(?!www\.)[\w-]+(?:\.[\w-]+)+$")
URL_TEXT = re.compile(r"^(?:https?://|ftp://|www\.)\S*$", re.IGNORECASE)
BARE_URL = re.compile(r"(?<![\w/])(?:https?://|www\.)[^\s<>()\[\]]*[^\s<>()\[\].,;:!?'\"]")
# Anchor texts that only point at the link: the URL is kept for these.
STUB_ANCHORS = {"here", "this", "link", "this link", "click here", "this page", "this post", "this article",
                "source", "this one", "there", "see here", "found here", "this answer", "this question"}
SIMPLE_SCRIPT = re.compile(r"^[\w.]+$")


class _Converter(HTMLParser):
    def __init__(self, strike: str = "drop") -> None:
        super().__init__(convert_charrefs=True)
        # A stack of open containers (kind, parts, info). Finished blocks (code blocks, list items,
        # quotes, tables) are stored whole in `done` and referenced by a placeholder, so the
        # whitespace clean-up of their parent never touches their indentation.
        self.stack: list[tuple[str, list[str], dict]] = [("root", [], {})]
        self.open: dict[str, int] = {}  # open containers by kind (the stack, counted)
        self.done: list[str] = []
        self.lists: list[dict] = []
        self.dropping = 0
        self.strike = strike
        self.marked: dict[int, str] = {}  # placeholders of emphasis, by number: their mark

    # -- helpers
    @property
    def parts(self) -> list[str]:
        return self.stack[-1][1]

    def _placeholder(self, text: str) -> str:
        self.done.append(text)
        return f"\x00{len(self.done) - 1}\x00"

    def _in(self, kind: str) -> bool:
        return self.open.get(kind, 0) > 0

    def _push(self, item: tuple[str, list[str], dict]) -> None:
        self.stack.append(item)
        self.open[item[0]] = self.open.get(item[0], 0) + 1

    def _pop(self) -> tuple[str, list[str], dict]:
        item = self.stack.pop()
        self.open[item[0]] -= 1
        return item

    def _close(self, kind: str) -> tuple[list[str], dict] | None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i][0] == kind:
                while len(self.stack) > i + 1:  # unclosed inner containers end here
                    self._finish(*self._pop())
                _, parts, info = self._pop()
                return parts, info
        return None

    def _block(self, parts: list[str]) -> str:
        """A container's content as finished Markdown (placeholders expanded)."""
        return _expand(_normalise("".join(parts)), self.done)

    def _finish(self, kind: str, parts: list[str], info: dict) -> None:
        """Render a container that was popped and add it to its parent."""
        if kind == "pre":
            code = "".join(parts).strip("\n")
            fence = "`" * max(3, _longest_run(code, "`") + 1)
            self.parts.append("\n\n" + self._placeholder(f"{fence}\n{code}\n{fence}") + "\n\n")
        elif kind == "code":
            code = "".join(parts)
            if not code.strip():
                return
            tick = "`" * (_longest_run(code, "`") + 1)
            pad = " " if code.startswith("`") or code.endswith("`") else ""
            self.parts.append(self._placeholder(f"{tick}{pad}{code}{pad}{tick}"))
        elif kind == "li":
            marker = info["marker"]
            pad = " " * len(marker)
            body = self._block(parts).replace("\n", "\n" + pad).replace("\n" + pad + "\n", "\n\n")
            body = re.sub(r"\n[ ]+\n", "\n\n", body)
            self.parts.append("\n" + self._placeholder(marker + body))
        elif kind == "blockquote":
            body = self._block(parts)
            quoted = "\n".join("> " + ln if ln else ">" for ln in body.split("\n"))
            self.parts.append("\n\n" + self._placeholder(quoted) + "\n\n")
        elif kind in ("td", "th"):
            cell = re.sub(r"\s+", " ", self._block(parts).replace(BREAK, "")).strip().replace("|", "\\|")
            self.stack[-1][2].setdefault("cells", []).append(cell)
            if kind == "th":
                self.stack[-1][2]["header"] = True
        elif kind == "tr":
            if info.get("cells"):
                self.stack[-1][2].setdefault("rows", []).append((info["cells"], info.get("header", False)))
        elif kind == "table":
            rows = info.get("rows", [])
            if self._in("td") or self._in("th"):  # a table in a cell cannot be a table: its cells as text
                self.parts.append(" " + "; ".join(", ".join(cells) for cells, _ in rows) + " ")
            else:
                self.parts.append("\n\n" + self._placeholder(_table(rows)) + "\n\n")
        elif kind in ("sup", "sub"):
            text = re.sub(r"\s+", " ", self._block(parts).replace(BREAK, "")).strip()
            if text:
                mark = "^" if kind == "sup" else "_"
                self.parts.append(mark + (text if SIMPLE_SCRIPT.match(text) else f"({text})"))
        elif kind == "a":
            text = _anchor(self._block(parts), info.get("href", ""))
            self.parts.append(self._placeholder(text) if text.strip(IMAGE + DROPPED) and URL not in text else text)
        elif kind in INLINE_MARKS:
            # CommonMark ignores "**Note: **text" and "** **": a space at either end goes outside the
            # marks, and emphasis left empty (its URL or image removed) leaves no marks at all
            raw = "".join(parts)
            if URL_MARKED.fullmatch(raw.strip()):  # a bold URL: its sentence decides (see _url), no marks
                self.parts.append(raw)
                return
            text = self._block(parts)
            if not text.strip(IMAGE + DROPPED + BREAK + " \n"):
                self.parts.append(raw)
                return
            lead = " " if raw[:1].isspace() else ""
            trail = " " if raw[-1:].isspace() else ""
            mark = INLINE_MARKS[kind]
            last = PLACEHOLDER.fullmatch(self.parts[-1]) if self.parts and not lead else None
            if last and self.marked.get(int(last.group(1))) == mark:  # "**x****y**" is no bold: one run
                n = int(last.group(1))
                self.done[n] = self.done[n][: -len(mark)] + text + mark
                self.parts.append(trail)
                return
            self.parts.append(lead + self._placeholder(f"{mark}{text}{mark}") + trail)
            self.marked[len(self.done) - 1] = mark
        elif kind in STRUCK:  # only reached with strike="mark": dropped text never opens a container
            text = self._block(parts).strip()
            if text:
                self.parts.append(f"~~{text}~~")

    # -- parser callbacks
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in DROP_WITH_CONTENT or (tag in STRUCK and self.strike == "drop"):
            if not self.dropping and tag in STRUCK:
                self.parts.append(DROPPED)
            self.dropping += 1
            return
        if self.dropping:
            return
        in_pre = self._in("pre")
        if in_pre and tag != "pre":
            if tag == "br":
                self.parts.append("\n")
            return  # markup inside a code block is not Markdown
        if tag in ("pre", "blockquote", "sup", "sub", "code") or tag in STRUCK:
            self._push((tag, [], {}))
        elif tag == "a":
            self._push(("a", [], {"href": dict(attrs).get("href") or ""}))
        elif tag == "table":
            self._push(("table", [], {}))
        elif tag == "tr" and self._in("table"):
            self._push(("tr", [], {}))
        elif tag in ("td", "th") and self._in("tr"):
            self._push((tag, [], {}))
        elif tag in ("ul", "ol"):
            start = dict(attrs).get("start") or "1"
            self.lists.append({"ordered": tag == "ol", "n": int(start) if start.isdigit() else 1})
            self.parts.append("\n\n")
        elif tag == "li":
            lst = self.lists[-1] if self.lists else {"ordered": False, "n": 1}
            marker = f"{lst['n']}. " if lst["ordered"] else "- "
            lst["n"] += 1
            self._push(("li", [], {"marker": marker}))
        elif tag in HEADINGS:
            self.parts.append("\n\n" + "#" * HEADINGS[tag] + " ")
        elif tag in BLOCK:
            self.parts.append("\n\n")
        elif tag == "br":
            self.parts.append("\n" if self._in("code") else BREAK + "\n")
        elif tag == "hr":
            self.parts.append("\n\n---\n\n")
        elif tag == "img":
            self.parts.append(IMAGE)
        elif tag in INLINE_MARKS and not self._in("code"):
            self._push((tag, [], {}))
        # everything else: no markup (its text stays)

    def handle_endtag(self, tag: str) -> None:
        if tag in DROP_WITH_CONTENT or (tag in STRUCK and self.strike == "drop"):
            self.dropping = max(0, self.dropping - 1)
            return
        if self.dropping:
            return
        if self._in("pre") and tag != "pre":
            return
        if tag in CONTAINERS:
            closed = self._close(tag)
            if closed is not None:
                self._finish(tag, *closed)
        elif tag in ("ul", "ol"):
            if self.lists:
                self.lists.pop()
            self.parts.append("\n\n")
        elif tag in HEADINGS or tag in BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self.dropping:
            return
        if self._in("pre") or self._in("code"):
            self.parts.append(data)
        elif self._in("a"):
            data = re.sub(r"\s+", " ", data)
            self.parts.append(data if URL_TEXT.match(data.strip()) else _escape_marks(data))
        else:
            if "://" in data or "www." in data:
                data = BARE_URL.sub(lambda m: f"{URL}{m.group(0)}{URL}", data)
            self.parts.append(_escape_marks(re.sub(r"\s+", " ", data)))

    def result(self) -> str:
        while len(self.stack) > 1:
            self._finish(*self._pop())
        text = self._block(self.parts[:]).replace(DROPPED, "")  # any left inside finished blocks
        # a line break before a blank line, a list item or the end breaks nothing: only the newline stays
        text = re.sub(BREAK + r"+(?=\n(?:\n|[ \t>]*(?:[-*+]|\d+[.)])[ \t])|\s*$)", "", text)
        return text.replace(BREAK, "  ")


# Spans of text where "*" and "_" stay as written: URLs (marked) and TeX maths, which Stack Exchange
# keeps out of Markdown ($...$, $$...$$).
VERBATIM = re.compile(f"{URL}[^{URL}]*{URL}" + r"|\$\$.+?\$\$|\$[^$\n]+\$", re.DOTALL)
LITERAL_MARK = re.compile(r"(?<=\S)\*|\*(?=\S)|(?<![^\W_])_+(?=\S)|(?<=\S)_+(?![^\W_])")


def _escaped(m: re.Match[str]) -> str:
    return "".join("\\" + ch for ch in m.group(0))


def _escape_marks(text: str) -> str:
    """A literal "*" or "_" in the post's text (the page showed it) is escaped where Markdown would
    read it as emphasis ("even*even, odd*odd" is no italic); in maths and URLs it stays."""
    if "*" not in text and "_" not in text:
        return text
    out, at = [], 0
    for m in VERBATIM.finditer(text):
        out += [LITERAL_MARK.sub(_escaped, text[at:m.start()]), m.group(0)]
        at = m.end()
    out.append(LITERAL_MARK.sub(_escaped, text[at:]))
    return "".join(out)


def _longest_run(text: str, ch: str) -> int:
    runs = re.findall(re.escape(ch) + "+", text)
    return max((len(r) for r in runs), default=0)


def _anchor(text: str, href: str) -> str:
    """A link's Markdown: its text, a URL marker when the text is a URL (see _url), a link when the
    text is a stub. A bare domain as the text ("llm-attacks.org") is the site's name: it stays as text."""
    t = text.strip()
    bare = re.sub(r"^[a-z]+://", "", href, flags=re.IGNORECASE).rstrip("/")
    if t and DOMAIN_NAME.match(t):
        return text
    if not t or URL_TEXT.match(t) or t.rstrip("/") in (href.rstrip("/"), bare):
        if IMAGE in text or not t:
            return IMAGE if IMAGE in text else DROPPED
        return f"{URL}{t}{URL}"
    stub = t.lower().strip(".:")
    if (stub in STUB_ANCHORS or stub.endswith(" link")) and href.startswith(("http://", "https://")):
        return text.replace(t, f"[{t}]({href})")
    return text


def _table(rows: list[tuple[list[str], bool]]) -> str:
    if not rows:
        return ""
    width = max(len(cells) for cells, _ in rows)
    lines = [cells + [""] * (width - len(cells)) for cells, _ in rows]
    # GitHub tables need a header row: the first row serves, marked <th> or not.
    out = ["| " + " | ".join(lines[0]) + " |", "|" + "|".join(["---"] * width) + "|"]
    out += ["| " + " | ".join(cells) + " |" for cells in lines[1:]]
    return "\n".join(out)


def _url(m: re.Match[str]) -> str:
    """A URL shown as itself stays (as an autolink) where its sentence needs it: on a line or list item
    of its own, after a colon or a word that leads into it ("available at", "see"), or when the sentence
    goes on after it ("... gives a good definition"). Elsewhere it goes, as other URLs do; alone in
    parentheses it takes them along."""
    before = m.string[: m.start()].rsplit("\n", 1)[-1].rstrip(" \t")
    after = m.string[m.end():].split("\n", 1)[0].lstrip(" \t")
    url = m.group(1)
    if before.endswith("(") and after.startswith(")"):
        return DROPPED + "\x04"
    words = re.findall(r"[A-Za-z]+", before[-12:])
    if (not before.strip(DROPPED + IMAGE) or before.endswith((":", "-", "\u2013", "\u2014"))
            or (words and words[-1].lower() in URL_LEADS)
            or re.match(r"[a-z]", after)):
        return f"<{url}>" if re.match(r"(?:https?|ftp)://", url, re.IGNORECASE) else url
    return DROPPED


def _normalise(text: str) -> str:
    if URL in text:
        text = URL_MARKED.sub(_url, text)
        text = re.sub(r"\(\s*" + DROPPED + "\x04\\s*\\)", DROPPED, text).replace("\x04", "")
    if DROPPED in text:  # a dropped URL or struck word leaves no gap before punctuation, one space elsewhere
        text = re.sub(f"[ \t]*{DROPPED}[{DROPPED} \t]*(?=[.,;:!?\n]|$)", "", text)
        text = re.sub(f"[ \t]*{DROPPED}[{DROPPED} \t]*", " ", text)
    text = re.sub(r"[ \t]*\n[ \t]*", "\n", text)
    text = re.sub(r"[ \t]{2,}", " ", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def _expand(text: str, done: list[str]) -> str:
    for _ in range(64):  # nested placeholders: a list inside a quote inside a list item ...
        if "\x00" not in text:
            break
        text = PLACEHOLDER.sub(lambda m: done[int(m.group(1))], text)
    return text


# Phrases that point at a picture: with an image removed, the text around it refers to nothing.
PICTURE = r"(?:image|picture|screenshot|screen shot|photo|diagram|figure|graph|chart|plot|video|gif|animation)s?"
POINTS_AT_IMAGE = re.compile(
    rf"\b(?:see|in|on|from|check) (?:the|this|my|attached) {PICTURE}\b"
    r"|\b(?:as|is) shown (?:below|above|here|in the (?:image|picture|screenshot|figure))"
    rf"|\b{PICTURE} (?:below|above)\b|\blike (?:this|so):\s*$|\bthe following {PICTURE}"
    rf"|\b(?:the|this) (?:above|below) {PICTURE}\b|\b(?:above|below) (?:is|are|shows?) (?:an? |the |my )?{PICTURE}\b"
    r"|\battached (?:here|below|above)\b", re.IGNORECASE | re.MULTILINE)


def convert_post(html: str, strike: str = "drop") -> tuple[str, bool]:
    """(Markdown, whether its text points at an image that was removed): an image right after a colon
    ("It looks like this:") or a phrase such as "see the screenshot" or "as shown below"."""
    md = _convert(html, strike)
    if IMAGE not in md:
        return md, False
    # the colon may end the line before a quote or list item that holds the image ("This is it:\n\n> img")
    points = (bool(re.search(r":(?:[\s>]|[-*+]\s|\d+[.)]\s)*" + IMAGE, md))
              or bool(POINTS_AT_IMAGE.search(md.replace(IMAGE, "\n"))))
    return _strip_images(md), points


def _strip_images(md: str) -> str:
    """Markdown without the image markers: a paragraph that was only images goes whole, an image in
    a line leaves one space (none at either end of the line)."""
    only = rf"[ \t>]*(?:(?:[-*+]|\d+[.)])[ \t]+)?{IMAGE}(?:[ \t]*{IMAGE})*[ \t]*"
    md = re.sub(rf"(?:^|\n\n){only}(?=\n\n|$)", "", md)
    # a list item that held only images goes with its marker (no empty "-" item is left)
    md = re.sub(rf"(?m)^[ \t>]*(?:[-*+]|\d+[.)])[ \t]+{IMAGE}(?:[ \t]*{IMAGE})*[ \t]*(?:\n|$)", "", md)
    md = re.sub(rf"(?m)^[ \t]*{IMAGE}[ \t]*|[ \t]*{IMAGE}[ \t]*$", "", md)
    return re.sub(rf"[ \t]*{IMAGE}[ \t]*", " ", md).strip()


def _convert(html: str, strike: str) -> str:
    conv = _Converter(strike)
    conv.feed(html)
    conv.close()
    return conv.result()


def html_to_markdown(html: str, strike: str = "drop") -> str:
    md = _convert(html, strike)
    return _strip_images(md) if IMAGE in md else md


MD_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
MD_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")


def strip_markdown_links(text: str) -> str:
    """For text that is already Markdown or plain (wikiHow): drop images and URLs, keep anchor text."""
    text = MD_IMAGE.sub("", text)
    text = MD_LINK.sub(r"\1", text)
    return re.sub(r"https?://\S+", "", text)
