"""Golden cases for defects found by reading what `curate run` kept and dropped on real StackExchange
dumps (beer, genai, matheducators, datascience.meta; see /work/runs/helpers/realdump.md). Every HTML
post here is written by us in the shape the real one had, never copied from a dump."""

from __future__ import annotations

import pytest
from markdown_it import MarkdownIt
from test_curate_sources import a, prose, q, row, run_se, se_cfg, write_site

from lima_align.config import load_recipe
from lima_align.curate.config import CurateRecipe
from lima_align.curate.html_md import convert_post
from lima_align.curate.pipeline import run_curate
from lima_align.curate.rules import TitleRules, find_words, title_problem
from lima_align.curate.stackexchange import StackExchangeConfig, leans_on_post_link

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


# ------------------------------------------------------------------ URLs shown as themselves


@pytest.mark.parametrize("html, expected", [
    # the sentence leads into the URL or goes on after it: dropped, it would point at nothing
    ('<p>The method is described in the paper (source: <a href="https://papers.example.org/2301">'
     "https://papers.example.org/2301</a>).</p>",
     "The method is described in the paper (source: <https://papers.example.org/2301>)."),
    ('<p>For gensim the vocabulary is a model attribute (see this answer: <a href="https://q.example.net/a/5">'
     "https://q.example.net/a/5</a>).</p>",
     "For gensim the vocabulary is a model attribute (see this answer: <https://q.example.net/a/5>)."),
    ('<p>As <a href="https://q.example.net/users/7">user7</a> notes, <a href="https://blog.example.org/p">'
     "https://blog.example.org/p</a> gives a good definition:</p>",
     "As user7 notes, <https://blog.example.org/p> gives a good definition:"),
    ("<p>Start studying from https://learn.example.com/course.</p>",
     "Start studying from <https://learn.example.com/course>."),
    ('<ul><li><a href="https://a.example.org/1">https://a.example.org/1</a></li><li>the printed manual</li></ul>',
     "- <https://a.example.org/1>\n- the printed manual"),
    ("<p><strong>www.hops.example.co.uk</strong> ships within a week.</p>",
     "www.hops.example.co.uk ships within a week."),
    # after a finished sentence, or alone in parentheses, it goes as before (and takes the parentheses along)
    ("<p>Gluten free brewing is covered well. https://gf.example.org/guide</p>",
     "Gluten free brewing is covered well."),
    ('<p>Read the original proposal (<a href="https://p.example.org/x">https://p.example.org/x</a>), most of it '
     "still holds.</p>",
     "Read the original proposal, most of it still holds."),
])
def test_url_shown_as_itself_stays_where_its_sentence_needs_it(html, expected):
    assert convert_post(html) == (expected, False)


# ------------------------------------------------------------------ emphasis that CommonMark still reads


@pytest.mark.parametrize("html, expected, rendered", [
    ("<p><b> Pirates (normal forms)</b>. Five pirates share a chest.</p>",
     "**Pirates (normal forms)**. Five pirates share a chest.",
     "<p><strong>Pirates (normal forms)</strong>. Five pirates share a chest.</p>"),
    ("<p><strong>Note: </strong>the kiln must be cold.</p>", "**Note:** the kiln must be cold.",
     "<p><strong>Note:</strong> the kiln must be cold.</p>"),
    ("<p>It is<em> not </em>safe.</p>", "It is *not* safe.", "<p>It is <em>not</em> safe.</p>"),
    ("<p><strong>x</strong><strong>y</strong> wins.</p>", "**xy** wins.", "<p><strong>xy</strong> wins.</p>"),
    # emphasis whose only content was removed leaves no "** **"
    ('<p>Good stout. <strong><img src="https://example.org/s.png"></strong></p>', "Good stout.",
     "<p>Good stout.</p>"),
    ("<p><code><b>make</b> all</code> builds it.</p>", "`make all` builds it.",
     "<p><code>make all</code> builds it.</p>"),
])
def test_emphasis_renders_as_emphasis(html, expected, rendered):
    md = convert_post(html)[0]
    assert md == expected
    assert MD.render(md).strip() == rendered


# ------------------------------------------------------------------ answers that lean on another post


@pytest.mark.parametrize("html, expected", [
    ('<p>There are good answers <a href="https://brew.stackexchange.com/questions/12/why-foam">here</a>, '
     "in short: pour slowly.</p>", "https://brew.stackexchange.com/questions/12/why-foam"),
    ('<p>The vocabulary is a model attribute (see this answer: <a href="https://ds.stackexchange.com/a/77/3">'
     "https://ds.stackexchange.com/a/77/3</a>).</p>", "https://ds.stackexchange.com/a/77/3"),
    ('<ul><li><a href="https://tex.stackexchange.com/q/9">Is $ or \\( better for inline maths?</a></li></ul>',
     "https://tex.stackexchange.com/q/9"),
    ('<p>As <a href="https://genx.stackexchange.com/users/5/kim">kim</a> says, the cache is cold.</p>',
     "https://genx.stackexchange.com/users/5/kim"),
    ('<p>The <a href="https://stackoverflow.com/a/3">accepted answer there</a> covers locks.</p>',
     "https://stackoverflow.com/a/3"),
    # a post linked on an ordinary phrase: the sentence reads the same without the link
    ('<p>Models learn from a <a href="https://genx.stackexchange.com/a/16/1">very large training set</a>.</p>', None),
    # not a Stack Exchange site
    ('<p>Read <a href="https://docs.example.org/questions/5">the FAQ</a> first.</p>', None),
])
def test_answer_leaning_on_a_post_link(html, expected):
    assert leans_on_post_link(html, convert_post(html)[0]) == expected


def test_post_link_rule_on_a_dump_counts_as_referring_to_other_answers(tmp_path):
    rows = [
        q(1, 90, "Why does a poured stout keep its head so long?"),
        a(2, 1, 40, f"<p>{prose(1, 1300)}</p><p>More good answers are "
                    '<a href="https://brew.stackexchange.com/questions/12">here</a>.</p>'),
        q(3, 80, "How do brewers keep a lager clear without filtering?"),
        a(4, 3, 40, f"<p>{prose(3, 1300)}</p><p>It needs "
                    '<a href="https://brew.stackexchange.com/questions/40">cold conditioning</a>.</p>'),
    ]
    xml = write_site(tmp_path, "brew.stackexchange.com", rows)
    recs, counts, _ = run_se(se_cfg([xml], prompt_from="title"))
    assert [r["meta"]["original_id"] for r in recs] == ["3"]
    assert counts.dropped["stackexchange"] == {"se_refers_to_other_answers": 1}
    both, _, _ = run_se(se_cfg([xml], prompt_from="title", post_links=False))
    assert [r["meta"]["original_id"] for r in both] == ["1", "3"]


# ------------------------------------------------------------------ titles and "I" that misfired


@pytest.mark.parametrize("title, problem", [
    ("Why does a shaken bottle foam over when tapped from above?", None),
    ("Must a table wine stay below a certain alcohol level?", None),
    ("Is a porter above 8% ABV still a porter?", None),
    ("Can bread yeast survive below freezing?", None),
    ("Why does the snippet below print twice?", "refers outside itself ('below')"),
    ("What does the error above mean for my build?", "refers outside itself ('above')"),
])
def test_title_above_below_as_place_or_amount_is_self_contained(title, problem):
    assert title_problem(title, TitleRules()) == problem


@pytest.mark.parametrize("text, word", [
    ("Schools place logarithms somewhere after Algebra I. Graphs come later.", None),
    ("Good Algebra I tasks are hard to find.", None),
    ("The Calculus I students meet twice a week.", None),
    ("Calculus I, II and III share one textbook.", None),
    ("In Physics I learned to estimate.", "I"),  # the writer: no course word follows
    ("> Baker, R. I., & Stone, M. (1990). Posing problems. New York.", None),  # initials in a citation
    ("The pyramid by I. M. Pei stands in the court.", None),
    ("Nobody was more surprised than I. The test passed.", "I"),
])
def test_course_numbered_i_is_not_first_person(text, word):
    assert find_words(text, StackExchangeConfig().first_person_words) == word


# ------------------------------------------------------------------ literal "*" and "_" the page showed


@pytest.mark.parametrize("html, expected, rendered", [
    ("<p>Of the products even*even, even*odd and odd*odd one is odd.</p>",
     "Of the products even\\*even, even\\*odd and odd\\*odd one is odd.",
     "<p>Of the products even*even, even*odd and odd*odd one is odd.</p>"),
    ("<p>Python calls __init__ first; my_var stays.</p>", "Python calls \\_\\_init\\_\\_ first; my_var stays.",
     "<p>Python calls __init__ first; my_var stays.</p>"),
    # TeX maths and URLs keep their marks as written (Stack Exchange keeps maths out of Markdown)
    ("<p>Reduce $3*3*7 \\over 3$ and $$x_1*x_2$$ first.</p>", "Reduce $3*3*7 \\over 3$ and $$x_1*x_2$$ first.", None),
    ('<p>Get it from <a href="https://x.example.org/_raw/a*b">https://x.example.org/_raw/a*b</a>.</p>',
     "Get it from <https://x.example.org/_raw/a*b>.", None),
    ("<p>A lone * after a sentence stays.</p>", "A lone * after a sentence stays.", None),
])
def test_literal_marks_are_escaped_outside_maths_and_urls(html, expected, rendered):
    md = convert_post(html)[0]
    assert md == expected
    if rendered:
        assert MD.render(md).strip() == rendered


# ------------------------------------------------------------------ the console says what the rules did


def test_run_prints_each_rules_drops(tmp_path, capsys):
    rows = [q(1, 90, "Why does a poured stout keep its head so long?"),
            a(2, 1, 40, f"<p>{prose(1, 1300)}</p>"),
            q(3, 80, "Head retention"),  # no question mark
            q(5, 70, "Why does a lager taste flat after a week?"),
            a(6, 5, 3, f"<p>{prose(5, 1300)}</p>"),
            q(7, 60, "How cold should a wheat beer be served?"),
            a(8, 7, 30, "<p>Cold.</p>")]
    xml = write_site(tmp_path, "brew.stackexchange.com", rows)
    run_curate(load_recipe(None, [f"output_dir={tmp_path / 'out'}", "report=false",
                                  f"stackexchange.paths=[{xml}]", "stackexchange.prompt_from=title"], cls=CurateRecipe))
    out = capsys.readouterr().out
    assert ("stackexchange: 4 seen, 1 kept; dropped: se_answer_length 1, se_answer_score 1, "
            "se_title_not_self_contained 1\n") in out


@pytest.mark.parametrize("html, expected", [
    ('<p>The website <a href="https://prompt-attacks.example.org/">prompt-attacks.example.org</a>, for instance, '
     "lists one.</p>", "The website prompt-attacks.example.org, for instance, lists one."),
    ('<p>A friend runs <a href="http://smallbeerguide.example">smallbeerguide.example</a>, which tracks it.</p>',
     "A friend runs smallbeerguide.example, which tracks it."),
])
def test_bare_domain_as_link_text_is_a_name_and_stays(html, expected):
    assert convert_post(html) == (expected, False)


# ------------------------------------------------------------------ <br> is a line break when rendered


@pytest.mark.parametrize("html, expected, rendered", [
    ("<p><strong>Small Brewery</strong><br>\nMain Street 3<br>\n12345 Town<br></p><p>Open daily.</p>",
     "**Small Brewery**  \nMain Street 3  \n12345 Town\n\nOpen daily.",
     "<p><strong>Small Brewery</strong><br />\nMain Street 3<br />\n12345 Town</p>\n<p>Open daily.</p>"),
    # before a line that starts a list item the break is only a newline (the item starts anyway)
    ("<p>1) Lecture briefly<br>2) Let them work</p>", "1) Lecture briefly\n2) Let them work",
     "<ol>\n<li>Lecture briefly</li>\n<li>Let them work</li>\n</ol>"),
    ("<table><tr><th>Step</th></tr><tr><td>mash<br>boil</td></tr></table>", "| Step |\n|---|\n| mash boil |", None),
])
def test_line_break_stays_a_line_break(html, expected, rendered):
    md = convert_post(html)[0]
    assert md == expected
    if rendered:
        assert MD.render(md).strip() == rendered


@pytest.mark.parametrize("html, expected", [
    ('<blockquote><p>"Rhythm helps fractions." <em>Some Weekly</em>. 2012. <a href="https://w.example.org/r">'
     "Article link</a>.</p></blockquote>",
     '> "Rhythm helps fractions." *Some Weekly*. 2012. [Article link](https://w.example.org/r).'),
    ('<p>Is there a standard for embeddings? reference - <a href="https://docs.example.org/emb">'
     "https://docs.example.org/emb</a></p>",
     "Is there a standard for embeddings? reference - <https://docs.example.org/emb>"),
])
def test_link_stub_and_dash_keep_their_url(html, expected):
    assert convert_post(html) == (expected, False)


def test_removed_animation_the_question_points_at_is_noticed():
    html = ('<p>I made this below video with an online tool and attached here.</p>'
            '<p><img src="https://example.org/clip.gif"></p><p>How can the mug stay the same in every frame?</p>')
    assert convert_post(html) == ("I made this below video with an online tool and attached here.\n\n"
                                  "How can the mug stay the same in every frame?", True)


# ------------------------------------------------------------------ attribution in every record


def test_records_name_the_answer_and_both_authors(tmp_path):
    rows = [row(Id=1, PostTypeId=1, CreationDate="2014-02-01T10:00:00.000", Score=50, OwnerUserId=17,
                Title="Why does a poured stout keep its head so long?", Body="<p>Details.</p>", Tags="<x>"),
            row(Id=2, PostTypeId=2, ParentId=1, CreationDate="2014-02-02T10:00:00.000", Score=40,
                OwnerDisplayName="gone user", Body=f"<p>{prose(1, 1300)}</p>")]
    xml = write_site(tmp_path, "brew.stackexchange.com", rows)
    (rec,), _, _ = run_se(se_cfg([xml], prompt_from="title"))
    meta = rec["meta"]
    assert meta["url"] == "https://brew.stackexchange.com/questions/1"
    assert meta["answer_url"] == "https://brew.stackexchange.com/a/2"
    assert meta["authors"] == {"question": "https://brew.stackexchange.com/users/17", "answer": "gone user"}
    assert meta["license"] == "CC BY-SA 3.0"
