"""Untrusted text (prompts, model answers, dataset records) to safe HTML.

Two layers, so one mistake is not enough: markdown-it renders with raw HTML switched off (a `<script>` in an
answer becomes visible text) and refuses javascript:/vbscript:/data: links, then nh3 removes whatever
is still unsafe (script elements, on* attributes, unknown URL schemes). The Content-Security-Policy of
every page (app.py) is the third layer: even an injected inline script would not run.
"""

from __future__ import annotations

from functools import lru_cache

from markupsafe import Markup

ALLOWED_TAGS = {"p", "br", "hr", "pre", "code", "blockquote", "em", "strong", "del", "s", "a", "ul", "ol", "li",
                "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td", "sup", "sub"}


@lru_cache(maxsize=1)
def _markdown():  # -> markdown_it.MarkdownIt, imported lazily
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table").enable("strikethrough")


def markdown(text: str) -> Markup:
    return Markup(_clean_html(text or ""))


@lru_cache(maxsize=4096)
def _clean_html(text: str) -> str:
    """A pure function of the text, so cached: each item is shown to k annotators, and rendering plus
    sanitising is a visible share of a page's CPU time (an item's answers are a few KiB, the cache a few MiB)."""
    import nh3

    html = _markdown().render(text)
    clean = nh3.clean(html, tags=ALLOWED_TAGS, attributes={"a": {"href", "title"}, "code": {"class"}},
                      url_schemes={"http", "https", "mailto"}, link_rel="noopener noreferrer nofollow")
    return str(clean)
