"""Golden cases for defects found by reading what `curate run` kept and dropped on real StackExchange
dumps (beer, genai, matheducators, datascience.meta; see /work/runs/helpers/realdump.md). Every HTML
post here is written by us in the shape the real one had, never copied from a dump."""

from __future__ import annotations

import pytest
from markdown_it import MarkdownIt

from lima_align.curate.html_md import convert_post

MD = MarkdownIt("commonmark")


# ------------------------------------------------------------------ removed images the text points at


@pytest.mark.parametrize("html, expected", [
    # the image sat in a quote after "...:" (the colon ends the line before "> ")
    ('<p>This is a heron:</p><blockquote><p><img src="https://example.org/h.jpg" alt="a heron"></p></blockquote>'
     "<p>How can the model draw the bird and not the crane?</p>",
     ("This is a heron:\n\nHow can the model draw the bird and not the crane?", True)),
    ('<p>The steps are:</p><ul><li><img src="https://example.org/s.png"></li></ul><p>Then it stops.</p>',
     ("The steps are:\n\nThen it stops.", True)),
    ('<p><img src="https://example.org/s.png"></p><p>The above is a screenshot of the settings page.</p>',
     ("The above is a screenshot of the settings page.", True)),
    ('<p><img src="https://example.org/s.png"></p><p>Above is the graph of the loss.</p>',
     ("Above is the graph of the loss.", True)),
    # an image that the text does not point at still goes quietly
    ('<p>The dough rests for an hour.</p><blockquote><p><img src="https://example.org/d.jpg"></p></blockquote>',
     ("The dough rests for an hour.", False)),
])
def test_removed_image_in_a_quote_or_list_is_noticed(html, expected):
    assert convert_post(html) == expected
