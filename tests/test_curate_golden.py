"""Golden cases for StackExchange curation, written by us: small HTML posts with the exact Markdown
they must become and the rule outcome they must get, dumps in the real Posts.xml schema (2015-style
rows without ContentLicense beside newer rows with it), and the ways a damaged dump must be reported.
Rendering the Markdown with markdown-it checks that code stays code and tables stay tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from markdown_it import MarkdownIt
from test_curate_sources import a, posts_xml, prose, q, row, run_se, se_cfg, write_site

from lima_align.config import load_recipe
from lima_align.curate.config import CurateRecipe, StackExchangeConfig
from lima_align.curate.html_md import convert_post, html_to_markdown
from lima_align.curate.inputs import BadRows
from lima_align.curate.pipeline import run_curate
from lima_align.curate.rules import find_phrase, find_words
from lima_align.curate.stackexchange import mined_dumps, post_license, site_from_name
from lima_align.errors import LimaError

MD = MarkdownIt("commonmark").enable("table")
SE = StackExchangeConfig()


def first_person(text: str) -> str | None:
    return find_words(text, SE.first_person_words)


def refers(text: str) -> str | None:
    return find_phrase(text, SE.refers_to_others, edit_notes=True)


# ------------------------------------------------------------------ rules: first person


@pytest.mark.parametrize("text", [
    "Disk I/O is the bottleneck here, not the CPU.",
    "A Type I error rejects a null hypothesis that is true.",
    "Type I and II errors trade off against each other.",
    "Rationing in Britain began during World War I and lasted for years.",
    "The castle was rebuilt under Henry I after the fire.",
    "Phase I trials test safety in a few volunteers.",
    "Use an I-beam when the span is long.",
    "Chapter I of the standard defines the terms.",
    "The I/Q samples come from the mixer.",
    "Episode I came out first.",
    "Set `I = np.eye(3)` first, then call `solve(I, b)`.",
    "```\nI = identity(4)\nprint(I)\n```",
])
def test_technical_i_is_not_first_person(text):
    assert first_person(text) is None


@pytest.mark.parametrize("text, word", [
    ("When I ran the test it passed.", "I"),
    ("I think the kernel caches it.", "I"),
    ("Disk I/O was slow, so I moved the logs.", "I"),  # the technical use is skipped, the writer is not
    ("In my experience it helps.", "my"),
    ("Type I errors are what I worry about most.", "I"),
    ("Here I/we would pick the second one.", "I"),
])
def test_first_person_still_found(text, word):
    assert first_person(text) == word


# ------------------------------------------------------------------ rules: references and edit notes


@pytest.mark.parametrize("text", [
    "Hadoop's scheduler places each task near its data.",  # "op's" inside a word
    "The bishop's move is diagonal.",
    "Feed the op amp from a split supply; the op-amp output then swings both ways.",
    "Give credit: the idea comes from the manual.",  # "edit:" inside "credit:"
    "Run `update: function() {}` through the linter.",
    "```\nconst handlers = {\n  update: function() { return 1; },\n};\n```",
    "```\ncurl https://api.stackexchange.com/2.3/questions\n```",
    "The client fetches https://stackexchange.com/sites on start.",  # a URL is not prose
    "Update the index first, then rebuild.",  # the verb, not a note
    "**Update** the index before you rebuild it.",
    "The edit distance between the strings is 3.",
])
def test_reference_rule_does_not_misfire(text):
    assert refers(text) is None


@pytest.mark.parametrize("text", [
    "**Edit**: the flag was renamed in version 3.",
    "**EDIT** since version 3 the flag is gone.",
    "**Update**\n\nThe flag is gone now.",
    "**Update:** the flag is gone now.",
    "## Update\n\nThe flag is gone now.",
    "### EDIT 2\n\nThe flag is gone now.",
    "Edit 2 - the flag is gone now.",
    "Some text.\n\n*Edit:* the flag is gone now.",
    "> **Edit**: quoted note.",
    "The OP's setup differs.",
    "As the OP said, the op amp clips.",
    "As mentioned in the comments, it works.",
    "See the accepted answer for details.",
])
def test_reference_rule_catches_notes_and_references(text):
    assert refers(text) is not None


def test_edit_notes_can_be_switched_off():
    assert find_phrase("**EDIT** since version 3 it is gone.", SE.refers_to_others, edit_notes=False) is None
    assert find_phrase("Edit: gone.", SE.refers_to_others, edit_notes=False) == "edit:"


# ------------------------------------------------------------------ Markdown that keeps meaning


GOLDEN_MD = {
    "code block inside a list item": (
        "<ol><li><p>Install it:</p><pre><code>pip install tool\ntool --help\n</code></pre></li>"
        "<li>Run it.</li></ol><p>After the list.</p>",
        "1. Install it:\n\n   ```\n   pip install tool\n   tool --help\n   ```\n2. Run it.\n\nAfter the list."),
    "code block with a blank line in a nested list": (
        "<ul><li>Outer<ul><li>Inner:<pre><code>a = 1\n\nb = 2</code></pre></li></ul></li></ul>",
        "- Outer\n\n  - Inner:\n\n    ```\n    a = 1\n\n    b = 2\n    ```"),
    "superscripts and subscripts": (
        "<p>About 10<sup>6</sup> rows, 2<sup>20</sup> bytes, e<sup>i&pi;</sup>, x<sup>n+1</sup> and "
        "H<sub>2</sub>O.</p>",
        "About 10^6 rows, 2^20 bytes, e^iπ, x^(n+1) and H_2O."),
    "footnote marker": (
        "<p>The limit is stated in the standard<sup>1</sup>.</p>",
        "The limit is stated in the standard^1."),
    "struck-out text is dropped": (
        "<p>Pass <strike>the old flag</strike><del>--fast</del> <s>or this</s> the new one.</p>",
        "Pass the new one."),
    "table": (
        "<table><thead><tr><th>Size</th><th>Time</th></tr></thead><tbody><tr><td>10</td><td>1 s</td></tr>"
        "<tr><td>100</td><td><code>a|b</code></td></tr></tbody></table>",
        "| Size | Time |\n|---|---|\n| 10 | 1 s |\n| 100 | `a\\|b` |"),
    "a table inside a table cell becomes text": (
        "<table><tr><td><table><tr><td>in</td><td>b</td></tr></table></td><td>x</td></tr></table>",
        "| in, b | x |\n|---|---|"),
    # a URL the sentence leads into stays (dropped, "The full list:" and "Also." point at nothing);
    # where the URL goes, see tests/test_curate_realdump_golden.py
    "a URL as its own link text stays where the sentence leads into it": (
        '<p>The full list: <a href="https://example.org/list">https://example.org/list</a></p>'
        '<p>Also <a href="https://example.org/b">example.org/b</a>.</p>',
        "The full list: <https://example.org/list>\n\nAlso example.org/b."),
    "link text stays, its URL goes": (
        '<p>Read the <a href="https://example.org/m">manual page on limits</a> first.</p>',
        "Read the manual page on limits first."),
    "a stub link keeps its URL": (
        '<p>The details are <a href="https://example.org/d">here</a>.</p>',
        "The details are [here](https://example.org/d)."),
    "bare URL in prose stays where the sentence needs it": (
        "<p>Download it from https://example.org/get and unpack it.</p>",
        "Download it from <https://example.org/get> and unpack it."),
    "quote inside a nested list keeps its indentation": (
        "<ul><li>Outer<ul><li>Inner<blockquote><p>first line</p><p>second line</p></blockquote></li></ul></li></ul>",
        "- Outer\n\n  - Inner\n\n    > first line\n    >\n    > second line"),
    "punctuation in prose keeps its space": (
        "<p>Use the ! operator, or write a : b in the header.</p>",
        "Use the ! operator, or write a : b in the header."),
    "entities are decoded once": (
        "<p>Write &amp;lt; for a literal &lt; and <code>x &amp;&amp; y</code>.</p>",
        "Write &lt; for a literal < and `x && y`."),
    "inline code holding a backtick": (
        "<p>Quote it as <code>a`b</code>.</p>",
        "Quote it as ``a`b``."),
    "markup inside a code block is not Markdown": (
        "<pre><code>if a &lt; b:\n    <b>print</b>(a)  # 10<sup>6</sup>\n</code></pre>",
        "```\nif a < b:\n    print(a)  # 106\n```"),
}


@pytest.mark.parametrize("name", list(GOLDEN_MD))
def test_golden_markdown(name):
    html, expected = GOLDEN_MD[name]
    assert html_to_markdown(html) == expected


def test_strikethrough_can_be_marked():
    html = "<p>Pass <del>--fast</del> the new one.</p>"
    assert html_to_markdown(html, strike="mark") == "Pass ~~--fast~~ the new one."


def code_texts(html: str) -> list[str]:
    """The text of each rendered code block."""
    out = []
    for part in html.split("<code>")[1:]:
        out.append(part.split("</code>")[0])
    return out


def test_rendered_code_in_a_list_stays_code_and_ends_where_it_should():
    md = html_to_markdown(GOLDEN_MD["code block inside a list item"][0])
    page = MD.render(md)
    assert code_texts(page) == ["pip install tool\ntool --help\n"]
    assert "<p>After the list.</p>" in page  # the closing fence did not open a block that swallows the rest
    assert page.index("<p>After the list.</p>") > page.index("</ol>")


def test_rendered_table_is_a_table():
    page = MD.render(html_to_markdown(GOLDEN_MD["table"][0]))
    assert "<th>Size</th>" in page and "<td>100</td>" in page and "<code>a|b</code>" in page


def test_rendered_nested_quote_stays_inside_its_item():
    page = MD.render(html_to_markdown(GOLDEN_MD["quote inside a nested list keeps its indentation"][0]))
    inner = page.index("<p>Inner</p>")
    assert inner < page.index("<blockquote>") < page.index("</blockquote>") < page.index("</li>")
    assert "<p>second line</p>" in page


@pytest.mark.parametrize("html, expected", [
    ('<p>It looks like this:</p><p><img src="https://example.org/a.png" alt="screen"></p>',
     ("It looks like this:", True)),
    ('<p>The result is below:<br><img src="https://example.org/a.png"></p>', ("The result is below:", True)),
    ('<p>See the screenshot, the menu is greyed out.</p><img src="https://example.org/a.png">',
     ("See the screenshot, the menu is greyed out.", True)),
    ('<p>As shown below, the error repeats.</p><p><img src="x.png"></p>', ("As shown below, the error repeats.", True)),
    ('<p>The oven heats evenly. <img src="https://example.org/oven.png"> Bake for an hour.</p>',
     ("The oven heats evenly. Bake for an hour.", False)),
    ("<p>Like this: set the flag.</p>", ("Like this: set the flag.", False)),  # no image was removed
])
def test_removed_image_is_noticed_when_the_text_points_at_it(html, expected):
    assert convert_post(html) == expected


# ------------------------------------------------------------------ the rules on a dump, each counted


def answer(seed: int, extra: str = "") -> str:
    return f"<p>{prose(seed, 1300)}</p>{extra}"


def misfire_rows() -> list[str]:
    return [
        q(1, 90, "How does disk throughput limit a database server?"),
        a(2, 1, 40, answer(1, "<p>Disk I/O decides it; a Type I error in the benchmark hides it.</p>")),
        q(3, 80, "Why does a map task run near its data block?"),
        a(4, 3, 40, answer(3, "<p>Hadoop's scheduler places it there.</p>")),
        q(5, 70, "How should handlers be declared in the config object?"),
        a(6, 5, 40, answer(5, "<pre><code>const h = {\n  update: function() {},\n};\n</code></pre>")),
        q(7, 60, "Which flag replaced the fast mode of the compressor?"),
        a(8, 7, 40, answer(7, "<p><strong>EDIT</strong> since version 3 the flag is gone.</p>")),
        q(9, 50, "What does the settings window show after a reset?"),
        a(10, 9, 40, answer(9, '<p>It looks like this:</p><p><img src="https://i.example.org/s.png"></p>')),
        q(11, 40, "How was rationing organised during the first world war?"),
        a(12, 11, 40, answer(11, "<p>During World War I rationing began late.</p>")),
    ]


def test_rules_on_a_dump_keep_technical_text_and_count_each_drop(tmp_path):
    xml = write_site(tmp_path, "serverfault.com", misfire_rows())
    recs, counts, _ = run_se(se_cfg([xml], prompt_from="title"))
    assert [r["meta"]["original_id"] for r in recs] == ["1", "3", "5", "11"]
    assert counts.dropped["stackexchange"] == {"se_refers_to_other_answers": 1, "se_refers_to_removed_image": 1}
    code = recs[2]["messages"][1]["content"]
    assert "```\nconst h = {\n  update: function() {},\n};\n```" in code


def test_removed_image_rule_can_be_switched_off(tmp_path):
    xml = write_site(tmp_path, "serverfault.com", misfire_rows())
    recs, counts, _ = run_se(se_cfg([xml], prompt_from="title", removed_image_rule=False))
    assert "9" in [r["meta"]["original_id"] for r in recs]


# ------------------------------------------------------------------ meta sites


def test_meta_site_names():
    assert site_from_name("cooking.meta.stackexchange.com.7z") == ("cooking.meta", "cooking.meta.stackexchange.com")
    assert site_from_name("meta.stackexchange.com") == ("meta", "meta.stackexchange.com")


def test_meta_sites_are_left_out_by_default_with_a_notice(tmp_path):
    root = tmp_path / "dumps"
    write_site(root, "cooking.stackexchange.com", misfire_rows())
    write_site(root, "cooking.meta.stackexchange.com", misfire_rows())
    write_site(root, "meta.stackoverflow.com", misfire_rows())
    notices: list[str] = []
    assert [d.site for d in mined_dumps(se_cfg([root]), notices)] == ["cooking"]
    assert len(notices) == 2 and "include_meta" in notices[0]
    both = mined_dumps(se_cfg([root], include_meta=True))
    assert [d.site for d in both] == ["cooking.meta", "cooking", "meta.stackoverflow"]
    recs, counts, _ = run_se(se_cfg([root], prompt_from="title"))
    assert {r["meta"]["site"] for r in recs} == {"cooking"} and counts.notices == notices


def test_only_meta_sites_is_an_error(tmp_path):
    xml = write_site(tmp_path, "meta.stackexchange.com", misfire_rows())
    with pytest.raises(LimaError, match="meta site") as e:
        mined_dumps(se_cfg([xml]))
    assert "include_meta" in e.value.problems[0].fix


# ------------------------------------------------------------------ provenance


def dated(pid: int, parent: int, created: str, score: int = 40, **extra: str) -> str:
    kind = {"PostTypeId": 1, "Title": f"How does method number {pid} settle the matter?", "Tags": "<x>"} \
        if parent == 0 else {"PostTypeId": 2, "ParentId": parent}
    return row(Id=pid, **kind, CreationDate=created, Score=score, Body=answer(pid), **extra)


@pytest.mark.parametrize("attrs, expected", [
    ({"CreationDate": "2010-06-01T10:00:00.000"}, "CC BY-SA 2.5"),
    ({"CreationDate": "2011-04-07T23:59:59.999"}, "CC BY-SA 2.5"),
    ({"CreationDate": "2011-04-08T00:00:00.000"}, "CC BY-SA 3.0"),
    ({"CreationDate": "2015-02-01T10:00:00.000"}, "CC BY-SA 3.0"),
    ({"CreationDate": "2018-05-02T00:00:00.000"}, "CC BY-SA 4.0"),
    # a retag or a bot's link rewrite after the cut-over keeps the post's licence (real dumps say so)
    ({"CreationDate": "2015-02-01T10:00:00.000", "LastEditDate": "2019-01-01T00:00:00.000"}, "CC BY-SA 3.0"),
    ({"CreationDate": "2022-02-01T10:00:00.000", "ContentLicense": "CC BY-SA 3.0"}, "CC BY-SA 3.0"),
    ({}, None),
])
def test_post_license_from_the_row_or_its_date(attrs, expected):
    assert post_license(attrs) == expected


def test_records_carry_each_posts_licence(tmp_path):
    rows = [  # a 2015-style dump: no ContentLicense; then rows of a newer dump that carry it
        dated(1, 0, "2010-05-01T10:00:00.000"), dated(2, 1, "2010-05-02T10:00:00.000"),
        dated(3, 0, "2014-05-01T10:00:00.000"), dated(4, 3, "2019-05-02T10:00:00.000"),
        dated(5, 0, "2021-05-01T10:00:00.000", ContentLicense="CC BY-SA 4.0"),
        dated(6, 5, "2021-05-02T10:00:00.000", ContentLicense="CC BY-SA 4.0"),
        dated(7, 0, "2017-05-01T10:00:00.000", ContentLicense="CC BY-SA 3.0"),
        dated(8, 7, "2017-05-02T10:00:00.000", ContentLicense="CC BY-SA 3.0"),
    ]
    xml = write_site(tmp_path, "physics.stackexchange.com", rows)
    recs, counts, _ = run_se(se_cfg([xml], prompt_from="title"))
    lic = {r["meta"]["original_id"]: r["meta"]["license"] for r in recs}
    assert lic == {"1": "CC BY-SA 2.5", "3": "question: CC BY-SA 3.0; answer: CC BY-SA 4.0",
                   "5": "CC BY-SA 4.0", "7": "CC BY-SA 3.0"}
    assert counts.sites == [{"source": "stackexchange", "site": "physics", "url": "https://physics.stackexchange.com",
                             "path": str(xml), "meta_site": False, "newest_question": "2021-05-01"}]
    fixed, _, _ = run_se(se_cfg([xml], prompt_from="title", license="CC BY-SA 4.0"))
    assert {r["meta"]["license"] for r in fixed} == {"CC BY-SA 4.0"}


# ------------------------------------------------------------------ damaged dumps are loud


def recipe(tmp_path: Path, paths: list[Path], **kw: object) -> CurateRecipe:
    return load_recipe(None, [f"output_dir={tmp_path / 'out'}", "report=false",
                              f"stackexchange.paths={json.dumps([str(p) for p in paths])}",
                              "stackexchange.prompt_from=title"] + [f"{k}={v}" for k, v in kw.items()],
                       cls=CurateRecipe)


def good(n: int) -> list[str]:
    out = []
    for i in range(n):
        out += [dated(2 * i + 1, 0, "2016-01-01T00:00:00.000", score=90 - i),
                dated(2 * i + 2, 2 * i + 1, "2016-01-02T00:00:00.000")]
    return out


def test_truncated_dump_is_reported_at_the_end_of_the_run(tmp_path, capsys):
    text = posts_xml(good(4))
    d = tmp_path / "cooking.stackexchange.com"
    d.mkdir()
    (d / "Posts.xml").write_text(text[: text.index('<row Id="8"') + 30], encoding="utf-8")
    run_curate(recipe(tmp_path, [d]))
    err = capsys.readouterr().err
    assert f"warning: {d / 'Posts.xml'}: skipped 1 bad row(s)" in err and "truncated" in err
    assert "warning: skipped 1 bad row(s) in 1 file(s)" in err


def test_invalid_utf8_is_named_as_such(tmp_path, capsys):
    lines = posts_xml(good(3)).encode().split(b"\n")
    lines[4] = lines[4].replace(b"&lt;p&gt;", b"&lt;p&gt;caf\xe9 ", 1)
    d = tmp_path / "cooking.stackexchange.com"
    d.mkdir()
    (d / "Posts.xml").write_bytes(b"\n".join(lines))
    bad = BadRows()
    run_se(se_cfg([d]), bad=bad)
    assert bad.locations == [{"where": f"{d / 'Posts.xml'}:5",
                              "what": "invalid UTF-8 (byte 0xe9 at column " + str(lines[4].index(b"\xe9") + 1)
                              + "); the row was skipped"}]
    run_curate(recipe(tmp_path, [d]))
    assert "invalid UTF-8" in capsys.readouterr().err


@pytest.mark.parametrize("content", ["", '<?xml version="1.0" encoding="utf-8"?>\n<posts>\n</posts>\n'])
def test_empty_dump_is_an_error_even_when_skipping(tmp_path, content):
    d = tmp_path / "cooking.stackexchange.com"
    d.mkdir()
    (d / "Posts.xml").write_text(content, encoding="utf-8")
    with pytest.raises(LimaError) as e:
        run_se(se_cfg([d]))
    assert e.value.problems[0].where == str(d / "Posts.xml") and "re-download" in e.value.problems[0].fix


def test_answers_before_their_questions_are_read_again(tmp_path):
    rows = good(3)
    shuffled = [rows[1], rows[3], rows[5], rows[0], rows[2], rows[4]]  # every answer first
    xml = write_site(tmp_path, "cooking.stackexchange.com", shuffled)
    recs, counts, _ = run_se(se_cfg([xml], prompt_from="title"))
    in_order, _, _ = run_se(se_cfg([write_site(tmp_path / "o", "cooking.stackexchange.com", rows)], prompt_from="title"))
    assert [r["meta"]["answer_id"] for r in recs] == ["2", "4", "6"]
    assert [r["messages"] for r in recs] == [r["messages"] for r in in_order]
    assert len(counts.notices) == 1 and "3 answer(s) came before their question" in counts.notices[0]


def test_row_without_body_is_a_bad_row_not_a_short_answer(tmp_path):
    rows = good(2) + [row(Id=9, PostTypeId=1, CreationDate="2016-01-01T00:00:00.000", Score=99,
                          Title="How does a row without a body get counted?"),
                      row(Id=10, PostTypeId=2, ParentId=1, CreationDate="2016-01-01T00:00:00.000", Score=99)]
    xml = write_site(tmp_path, "cooking.stackexchange.com", rows)
    recs, counts, bad = run_se(se_cfg([xml], prompt_from="title"))
    assert [x["what"] for x in bad.locations] == ["row without a Body"] * 2
    assert "se_answer_length" not in counts.dropped.get("stackexchange", {})
    assert [r["meta"]["answer_id"] for r in recs] == ["2", "4"]


def test_manifest_has_sites_and_notices(tmp_path):
    root = tmp_path / "dumps"
    write_site(root, "cooking.stackexchange.com", good(2))
    write_site(root, "cooking.meta.stackexchange.com", good(2))
    out = run_curate(recipe(tmp_path, [root], report="true"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["url"] for s in manifest["sites"]] == ["https://cooking.stackexchange.com"]
    assert manifest["sites"][0]["newest_question"] == "2016-01-01"
    assert "cooking.meta.stackexchange.com" in manifest["notices"][0]
    page = (out / "report.html").read_text()
    assert "<td>https://cooking.stackexchange.com</td><td>2016-01-01</td>" in page
    assert "<td>CC BY-SA 3.0</td><td class=n>2</td>" in page and "left out cooking.meta" in page


# ------------------------------------------------------------------ the README example


def test_readme_example_runs_on_a_single_non_stem_site(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_site(tmp_path / "dumps", "cooking.stackexchange.com", good(3))
    (tmp_path / "se.yaml").write_text(yaml.safe_dump({  # the README's recipe, as written there
        "output_dir": "runs/curate-se", "seed": 0, "stackexchange": {"paths": ["dumps/"]},
        "select": {"strategy": "lima", "quotas": {"stackexchange:stem": 200, "stackexchange:other": 200}}}))
    out = run_curate(load_recipe("se.yaml", [], cls=CurateRecipe))
    selected = [json.loads(x) for x in (out / "selected.jsonl").read_text().splitlines()]
    assert len(selected) == 3 and {r["meta"]["group"] for r in selected} == {"stackexchange:other"}
    err = capsys.readouterr().err
    assert "no records in group 'stackexchange:stem'" in err and "asked for 200 records, 3 available" in err
