"""Our HTML -> Markdown converter (curate/html_md.py) against markdownify with our rules on top, on the
golden cases of tests/test_curate_golden.py: exact matches, and whether the rendered Markdown
(markdown-it, CommonMark + tables) keeps every code block as code and every table as a table.
Also times both on a long answer.

    .venv/bin/pip install markdownify   # only for this comparison; the project does not depend on it
    .venv/bin/python benchmarks/curate_markdown_compare.py
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from markdown_it import MarkdownIt

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_curate_golden import GOLDEN_MD  # noqa: E402

from lima_align.curate.html_md import STUB_ANCHORS, URL_TEXT, html_to_markdown  # noqa: E402


def markdownify_converter():  # type: ignore[no-untyped-def]
    from markdownify import MarkdownConverter

    class Ours(MarkdownConverter):
        """markdownify with the rules our converter follows: no images, link text without its URL (a
        URL as its own text goes, a stub keeps the link), struck-out text dropped, ^/_ scripts."""

        def convert_a(self, el, text, parent_tags):  # noqa: ANN001, ANN201
            href = el.get("href") or ""
            t = text.strip()
            if not t or URL_TEXT.match(t) or t.rstrip("/") in (href.rstrip("/"), re.sub(r"^[a-z]+://", "", href)):
                return ""
            if t.lower().strip(".:") in STUB_ANCHORS and href.startswith(("http://", "https://")):
                return f"[{t}]({href})"
            return text

        def convert_img(self, el, text, parent_tags):  # noqa: ANN001, ANN201
            return ""

        def convert_del(self, el, text, parent_tags):  # noqa: ANN001, ANN201
            return ""

        convert_s = convert_strike = convert_del

        def convert_sup(self, el, text, parent_tags):  # noqa: ANN001, ANN201
            t = text.strip()
            return "^" + (t if re.match(r"^[\w.]+$", t) else f"({t})") if t else ""

        def convert_sub(self, el, text, parent_tags):  # noqa: ANN001, ANN201
            t = text.strip()
            return "_" + (t if re.match(r"^[\w.]+$", t) else f"({t})") if t else ""

    def convert(html: str) -> str:
        return Ours(heading_style="ATX", bullets="-", escape_underscores=False, escape_asterisks=False,
                    escape_misc=False, strip=["script", "style"]).convert(html).strip()

    return convert


RENDER = MarkdownIt("commonmark").enable("table")


def render_checks(md: str, expected: str) -> bool:
    """As many code blocks, tables and quotes when rendered as the golden Markdown gives."""
    page, want = RENDER.render(md), RENDER.render(expected)
    return all(page.count(f"<{tag}") == want.count(f"<{tag}") for tag in ("pre", "table", "blockquote"))


def same_page(md: str, expected: str) -> bool:
    """Renders like the golden Markdown, whatever the spelling (list spacing, table rules, spaces)."""
    def norm(text: str) -> str:
        page = re.sub(r">\s+<", "><", RENDER.render(text))
        return re.sub(r"\s+", " ", page.replace("<p>", "").replace("</p>", "")).strip()
    return norm(md) == norm(expected)


def main() -> None:
    converters = {"html_md (ours)": html_to_markdown, "markdownify + our rules": markdownify_converter()}
    for name, conv in converters.items():
        exact, rendered, same, misses = 0, 0, 0, []
        for case, (html, expected) in GOLDEN_MD.items():
            md = conv(html)
            exact += md == expected
            rendered += render_checks(md, expected)
            same += same_page(md, expected)
            if not same_page(md, expected):
                misses.append(f"    {case}: {md!r}")
        big = "".join(html for html, _ in GOLDEN_MD.values()) * 40
        t0 = time.perf_counter()
        for _ in range(5):
            conv(big)
        ms = (time.perf_counter() - t0) / 5 * 1000
        n = len(GOLDEN_MD)
        print(f"{name}: {exact}/{n} exact, {same}/{n} render like the golden Markdown, {rendered}/{n} keep as many "
              f"code blocks, tables and quotes when rendered; {len(big) / 1000:.0f} kB of HTML in {ms:.1f} ms")
        print("\n".join(misses))


if __name__ == "__main__":
    main()
