"""Curation sources and LIMA's rules on tiny dumps the tests write: StackExchange (Posts.xml, .7z,
folders), wikiHow (CSV, JSONL), Reddit (NDJSON, .zst), existing datasets; every rule drops the record
built to fail it; every kind of bad input is either a located error or a counted, located skip."""

from __future__ import annotations

import json
import random
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pytest

from lima_align.curate.config import RedditConfig, StackExchangeConfig, WikiHowConfig
from lima_align.curate.existing import dataset_records
from lima_align.curate.html_md import html_to_markdown
from lima_align.curate.inputs import BadRows
from lima_align.curate.reddit import reddit_records
from lima_align.curate.rules import RuleCounts, TitleRules, find_phrase, find_words, title_problem
from lima_align.curate.stackexchange import find_dumps, site_from_name, stackexchange_records
from lima_align.curate.wikihow import prune_sections, wikihow_records
from lima_align.errors import LimaError

WORDS = ("river stone lattice copper signal orbit valve kernel meadow pixel enzyme harbor quartz gradient "
         "voltage canyon syntax protein thermal vector basalt cipher glacier fiber tensor marble plasma "
         "lantern circuit nectar prism dune cobalt sonnet ledger tundra mosaic helium timber rotor saffron "
         "beacon fjord isotope garnet compass velvet turbine lichen piston amber nebula cedar").split()


def prose(seed: int, chars: int) -> str:
    """Neutral text with no first-person words or references, distinct per seed (so dedup keeps it)."""
    rng = random.Random(seed)
    out = []
    while sum(len(s) + 1 for s in out) < chars:
        out.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 12))).capitalize() + ".")
    return " ".join(out)


def html_answer(seed: int, chars: int = 1500) -> str:
    return (f"<p>{prose(seed, chars - 300)}</p><pre><code>total = sum(x for x in values)\n</code></pre>"
            f"<ul><li>first point</li><li>second point</li></ul><p>See <a href=\"https://example.org/x\">the "
            f"reference</a> <img src=\"https://example.org/i.png\" alt=\"pic\"> {prose(seed + 1, 150)}</p>")


def row(**attrs: object) -> str:
    return "  <row " + " ".join(f"{k}={quoteattr(str(v), {chr(10): '&#xA;'})}" for k, v in attrs.items()) + " />\n"


DATE = "2019-03-01T10:00:00.000"  # rows without ContentLicense: CC BY-SA 4.0 by this date


def q(pid: int, score: int, title: str, body: str = "<p>Some details about the question.</p>") -> str:
    return row(Id=pid, PostTypeId=1, CreationDate=DATE, Score=score, Title=title, Body=body, Tags="<x>")


def a(pid: int, parent: int, score: int, body: str) -> str:
    return row(Id=pid, PostTypeId=2, ParentId=parent, CreationDate=DATE, Score=score, Body=body)


def posts_xml(rows: list[str]) -> str:
    return '<?xml version="1.0" encoding="utf-8"?>\n<posts>\n' + "".join(rows) + "</posts>\n"


def rule_site_rows(base: int = 0) -> list[str]:
    """One question per StackExchange rule (ids offset by `base`), plus two that pass."""
    b = base
    return [
        q(b + 1, 90, "How do solar panels turn light into electric current?"),
        a(b + 2, b + 1, 40, html_answer(b + 1)),
        a(b + 3, b + 1, 12, f"<p>{prose(b + 99, 1500)}</p>"),  # a lower-scoring answer: not used
        q(b + 4, 80, "Why does this fail?"),  # se_title_not_self_contained
        q(b + 5, 70, "What makes sourdough bread rise without added yeast?"),  # se_no_answer
        q(b + 6, 60, "How does a heat pump move warmth out of cold air?"),
        a(b + 7, b + 6, 5, html_answer(b + 6)),  # se_answer_score
        q(b + 8, 50, "Which metals conduct heat the fastest at room temperature?"),
        a(b + 9, b + 8, 30, "<p>Copper, mostly.</p>"),  # se_answer_length
        q(b + 10, 40, "Why do cats purr when they are content or stressed?"),
        a(b + 11, b + 10, 30, f"<p>I think {prose(b + 10, 1400)}</p>"),  # se_first_person
        q(b + 12, 30, "How are tides linked to the position of the moon?"),
        a(b + 13, b + 12, 30, f"<p>As mentioned in other answers, {prose(b + 12, 1400)}</p>"),  # se_refers_to_other_answers
        q(b + 14, 25, "What keeps a bicycle upright while it is moving forward?"),
        a(b + 15, b + 14, 25, html_answer(b + 14)),
        q(b + 16, 1, "How do bees decide where to build a new hive?"),  # se_not_top_question (lowest score)
        a(b + 17, b + 16, 50, html_answer(b + 16)),
        row(Id=b + 18, PostTypeId=5, Score=0, Body="<p>tag wiki</p>"),  # other post types are passed over
    ]


def se_cfg(paths: list[Path], **kw: object) -> StackExchangeConfig:
    cfg = StackExchangeConfig(paths=[str(p) for p in paths], top_questions_per_site=7)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def write_site(root: Path, name: str, rows: list[str]) -> Path:
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "Posts.xml").write_text(posts_xml(rows), encoding="utf-8")
    return d / "Posts.xml"


def run_se(cfg: StackExchangeConfig, seed: int = 0, bad: BadRows | None = None) -> tuple[list[dict], RuleCounts, BadRows]:
    counts, bad = RuleCounts(), bad or BadRows()
    return list(stackexchange_records(cfg, seed, counts, bad)), counts, bad


# ------------------------------------------------------------------ text rules and HTML


def test_html_to_markdown_keeps_code_and_lists_drops_links_and_images():
    md = html_to_markdown('<p>Use <code>a &lt; b</code> and <a href="http://x.org">the docs</a>.'
                          '<img src="p.png" alt="pic"></p><pre><code>def f():\n    return 1\n</code></pre>'
                          '<ol><li>one</li><li>two<ul><li>inner</li></ul></li></ol><script>x()</script>'
                          '<blockquote><p>quoted <b>bold</b></p></blockquote>')
    assert md.startswith("Use `a < b` and the docs.")
    assert "```\ndef f():\n    return 1\n```" in md
    assert "1. one\n2. two" in md and "  - inner" in md
    assert "http" not in md and "pic" not in md and "x()" not in md
    assert "> quoted **bold**" in md


def test_text_rules():
    rules = TitleRules()
    assert title_problem("How do tides work on other planets?", rules) is None
    assert "this" in title_problem("Why does this not compile?", rules)
    assert "'?'" in title_problem("Tides on other planets", rules)
    assert "length" in title_problem("Why?", rules)
    words = StackExchangeConfig().first_person_words
    assert find_words("Then I ran it.", words) == "I"
    assert find_words("I\u2019m sure.", words) == "I'm"
    assert find_words("for i in range(3): the loop index", words) is None  # lowercase i is not first person
    assert find_words("Call `my_func()` here.", words) is None  # code is not prose
    assert find_phrase("See the ANSWER ABOVE for details", StackExchangeConfig().refers_to_others) == "answer above"


def test_site_names_from_dump_names():
    assert site_from_name("cooking.stackexchange.com.7z") == ("cooking", "cooking.stackexchange.com")
    assert site_from_name("stackoverflow.com-Posts.7z") == ("stackoverflow", "stackoverflow.com")
    assert site_from_name("mathoverflow.net") == ("mathoverflow", "mathoverflow.net")
    assert site_from_name("physics") == ("physics", "physics.stackexchange.com")


# ------------------------------------------------------------------ StackExchange


def test_stackexchange_every_rule_drops_its_record(tmp_path):
    xml = write_site(tmp_path, "physics.stackexchange.com", rule_site_rows())
    recs, counts, bad = run_se(se_cfg([xml]))
    assert [r["id"] for r in recs] == ["se:physics:1", "se:physics:14"]
    assert counts.dropped["stackexchange"] == {
        "se_title_not_self_contained": 1, "se_not_top_question": 1, "se_no_answer": 1, "se_answer_score": 1,
        "se_answer_length": 1, "se_first_person": 1, "se_refers_to_other_answers": 1}
    assert counts.seen["stackexchange"] == 9 and counts.kept["stackexchange"] == 2
    r = recs[0]
    meta = r["meta"]
    assert meta["site"] == "physics" and meta["domain"] == "stem" and meta["group"] == "stackexchange:stem"
    assert meta["answer_id"] == "2" and meta["answer_score"] == 40  # the best answer, not the other one
    assert meta["url"] == "https://physics.stackexchange.com/questions/1" and meta["license"] == "CC BY-SA 4.0"
    answer = r["messages"][1]["content"]
    assert "```\ntotal = sum(x for x in values)\n```" in answer and "- first point" in answer
    assert "the reference" in answer and "example.org" not in answer
    assert bad.count == 0


def test_se_prompt_from_title_or_body_is_seeded_and_stable(tmp_path):
    rows = []
    for i in range(12):
        rows += [q(10 * i + 1, 50 + i, f"How does process number {WORDS[i]} work in practice?",
                   body=f"<p>Body of question {i} with <b>detail</b>.</p>"),
                 a(10 * i + 2, 10 * i + 1, 20, html_answer(i))]
    xml = write_site(tmp_path, "cooking.stackexchange.com", rows)
    cfg = se_cfg([xml], top_questions_per_site=100)
    first, _, _ = run_se(cfg, seed=1)
    again, _, _ = run_se(cfg, seed=1)
    other, _, _ = run_se(cfg, seed=2)
    kinds = [r["meta"]["prompt_from"] for r in first]
    assert first == again
    assert set(kinds) == {"title", "body"}
    assert kinds != [r["meta"]["prompt_from"] for r in other]
    body_rec = next(r for r in first if r["meta"]["prompt_from"] == "body")
    assert body_rec["messages"][0]["content"].startswith("Body of question") and "**detail**" in body_rec["messages"][0]["content"]
    assert first[0]["meta"]["domain"] == "other"


def test_se_empty_prompt_rule(tmp_path):
    xml = write_site(tmp_path, "cooking", [q(1, 5, "How long should pasta rest after draining?", body=""),
                                           a(2, 1, 20, html_answer(3))])
    recs, counts, _ = run_se(se_cfg([xml], prompt_from="body"))
    assert recs == [] and counts.dropped["stackexchange"] == {"se_empty_prompt": 1}


def test_se_7z_archive_and_folder_of_sites(tmp_path):
    py7zr = pytest.importorskip("py7zr")
    plain = write_site(tmp_path / "plain", "cooking.stackexchange.com", rule_site_rows())
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    with py7zr.SevenZipFile(dumps / "cooking.stackexchange.com.7z", "w") as z:
        z.write(plain, "Posts.xml")
    write_site(dumps, "physics.stackexchange.com", rule_site_rows(1000))
    assert [d.site for d in find_dumps([str(dumps)])] == ["cooking", "physics"]
    recs, counts, _ = run_se(se_cfg([dumps]))
    assert [r["id"] for r in recs] == ["se:cooking:1", "se:cooking:14", "se:physics:1001", "se:physics:1014"]
    assert recs[0]["meta"]["domain"] == "other" and recs[2]["meta"]["domain"] == "stem"
    assert counts.dropped["stackexchange"]["se_first_person"] == 2
    single, _, _ = run_se(se_cfg([plain]))
    assert single[0]["messages"] == recs[0]["messages"]  # the archive reads like the plain file


def test_se_stem_list_is_overridable(tmp_path):
    xml = write_site(tmp_path, "cooking.stackexchange.com", rule_site_rows())
    recs, _, _ = run_se(se_cfg([xml], stem_sites=["cooking"]))
    assert recs[0]["meta"]["group"] == "stackexchange:stem"


# ------------------------------------------------------------------ wikiHow


def wikihow_rows() -> list[dict]:
    body = (f"{prose(7, 700)}\n\n## Steps\n{prose(8, 300)} Read [the guide](https://example.org/g) "
            "![step](https://example.org/s.jpg)\n\n## Tips\nA tip that should go.\n\n## Warnings\nA warning too.\n")
    return [
        {"title": "How to Plant Tomatoes", "headline": "This article explains how to plant tomatoes.",
         "text": body, "category": "Home and Garden"},
        {"title": "How to Fold a Shirt", "headline": "", "text": prose(9, 900), "category": "Personal Care"},
        {"title": "", "headline": "x", "text": prose(10, 900), "category": "Travel"},  # wh_missing_fields
        {"title": "How to Wave", "headline": "", "text": "Lift a hand.", "category": "Travel"},  # wh_too_short
        {"title": "How to Write a Novel", "headline": "", "text": prose(11, 9000), "category": "Arts"},  # wh_too_long
    ]


def check_wikihow(recs: list[dict], counts: RuleCounts) -> None:
    assert [r["messages"][0]["content"] for r in recs] == ["How to Plant Tomatoes", "How to Fold a Shirt"]
    first = recs[0]["messages"][1]["content"]
    assert first.startswith("The following answer explains how to plant tomatoes.")
    assert "A tip that should go" not in first and "A warning too" not in first and "## Steps" in first
    assert "the guide" in first and "example.org" not in first and "![" not in first
    assert recs[0]["meta"]["stratum"] == "Home and Garden" and recs[0]["meta"]["group"] == "wikihow"
    assert recs[0]["id"].startswith("wikihow:")
    assert counts.dropped["wikihow"] == {"wh_missing_fields": 1, "wh_too_short": 1, "wh_too_long": 1}
    assert counts.transforms["wikihow"] == {"wh_sections_pruned": 1, "wh_this_article_rewritten": 1}


def write_wikihow_csv(path: Path, rows: list[dict]) -> Path:
    import csv

    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["title", "headline", "text", "category"])
        w.writeheader()
        w.writerows(rows)
    return path


def test_wikihow_csv_and_jsonl(tmp_path):
    csv_path = write_wikihow_csv(tmp_path / "wikihow.csv", wikihow_rows())
    jsonl = tmp_path / "wikihow.jsonl"
    jsonl.write_text("".join(json.dumps({**r, "summary": r.pop("headline"), "body": r.pop("text")}) + "\n"
                             for r in wikihow_rows()), encoding="utf-8")
    for path in (csv_path, jsonl):
        counts = RuleCounts()
        recs = list(wikihow_records(WikiHowConfig(paths=[str(path)]), counts, BadRows()))
        check_wikihow(recs, counts)


def test_prune_sections_stops_at_next_heading():
    text, n = prune_sections("Intro\n== Tips ==\ntip\n== Steps ==\nstep", ["Tips"])
    assert (text, n) == ("Intro\n== Steps ==\nstep", 1)


# ------------------------------------------------------------------ Reddit


def reddit_lines() -> tuple[list[dict], list[dict]]:
    subs = [
        {"id": "s1", "subreddit": "WritingPrompts", "title": "[WP] A lighthouse keeper finds a door in the sea",
         "score": 900, "permalink": "/r/WritingPrompts/comments/s1/x/"},
        {"id": "s2", "subreddit": "WritingPrompts", "title": "[OT] Weekly chat thread", "score": 500},  # rd_meta_post
        {"id": "s3", "subreddit": "WritingPrompts", "title": "[WP] The moon files a complaint", "score": 400},  # rd_no_comment
        {"id": "s4", "subreddit": "WritingPrompts", "title": "[WP] Clocks run backwards on Tuesdays", "score": 300},  # rd_comment_score
        {"id": "s5", "subreddit": "WritingPrompts", "title": "[WP] A map that redraws itself", "score": 200},  # rd_comment_length
        {"id": "s6", "subreddit": "WritingPrompts", "title": "[WP] Low scoring idea about dust", "score": 1},  # rd_not_top_submission
        {"id": "e1", "subreddit": "AskReddit", "title": "What small habit improved your sleep the most?", "score": 50},
        {"id": "e2", "subreddit": "AskReddit", "title": "What is this?", "score": 40},  # rd_eval_title_not_self_contained
        {"id": "x1", "subreddit": "pics", "title": "Sunset", "score": 5000},  # another subreddit: not read
    ]
    comments = [
        {"id": "c1", "link_id": "t3_s1", "parent_id": "t3_s1", "body": prose(21, 900), "score": 300},
        {"id": "c2", "link_id": "t3_s1", "parent_id": "t3_s1", "body": prose(22, 900), "score": 100},
        {"id": "c3", "link_id": "t3_s1", "parent_id": "t1_c1", "body": prose(23, 900), "score": 999},  # a reply
        {"id": "c4", "link_id": "t3_s3", "parent_id": "t3_s3", "body": "[deleted]", "score": 50},
        {"id": "c5", "link_id": "t3_s4", "parent_id": "t3_s4", "body": prose(24, 900), "score": 3},
        {"id": "c6", "link_id": "t3_s5", "parent_id": "t3_s5", "body": "Too short.", "score": 80},
        {"id": "c7", "link_id": "t3_s6", "parent_id": "t3_s6", "body": prose(25, 900), "score": 80},
    ]
    return subs, comments


def ndjson(objs: list[dict]) -> bytes:
    return "".join(json.dumps(o) + "\n" for o in objs).encode()


def test_reddit_ndjson_and_zst(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    subs, comments = reddit_lines()
    (tmp_path / "RS.ndjson").write_bytes(ndjson(subs))
    (tmp_path / "RC.ndjson.zst").write_bytes(zstandard.ZstdCompressor().compress(ndjson(comments)))
    cfg = RedditConfig(paths=[str(tmp_path / "RS.ndjson"), str(tmp_path / "RC.ndjson.zst")],
                       top_submissions_per_subreddit=4)
    counts, evals = RuleCounts(), []
    recs = list(reddit_records(cfg, counts, BadRows(), evals))
    assert [r["id"] for r in recs] == ["reddit:writingprompts:s1"]
    assert recs[0]["messages"][0]["content"] == "A lighthouse keeper finds a door in the sea"
    assert recs[0]["messages"][1]["content"] == prose(21, 900) and recs[0]["meta"]["comment_id"] == "c1"
    assert counts.dropped["reddit"] == {"rd_meta_post": 1, "rd_no_comment": 1, "rd_comment_score": 1,
                                        "rd_comment_length": 1, "rd_not_top_submission": 1,
                                        "rd_eval_title_not_self_contained": 1}
    assert [e["messages"] for e in evals] == [[{"role": "user", "content": subs[6]["title"]}]]
    # one combined file gives the same result
    (tmp_path / "all.ndjson").write_bytes(ndjson(comments + subs))
    cfg.paths = [str(tmp_path / "all.ndjson")]
    assert [r["id"] for r in reddit_records(cfg, RuleCounts(), BadRows(), [])] == ["reddit:writingprompts:s1"]


# ------------------------------------------------------------------ existing datasets


def test_existing_dataset_formats(tmp_path):
    files = {
        "ours.jsonl": {"id": "o1", "messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]},
        "lima.jsonl": {"conversations": ["Name a colour.", "Teal."]},
        "alpaca.jsonl": {"instruction": "Add", "input": "2 and 2", "output": "4"},
        "sharegpt.jsonl": {"id": "g1", "conversations": [{"from": "human", "value": "Hey"}, {"from": "gpt", "value": "Hi."}]},
    }
    for name, obj in files.items():
        (tmp_path / name).write_text(json.dumps(obj) + "\n", encoding="utf-8")
    from lima_align.curate.config import DatasetsConfig

    counts = RuleCounts()
    recs = list(dataset_records(DatasetsConfig(paths=[str(tmp_path / n) for n in files] + ["seed"]), counts))
    assert [r["id"] for r in recs[:4]] == ["dataset:ours:o1", "dataset:lima:lima-1", "dataset:alpaca:alpaca-1",
                                          "dataset:sharegpt:g1"]
    assert recs[2]["messages"][0]["content"] == "Add\n\n2 and 2"
    assert len(recs) > 10 and recs[-1]["meta"]["group"] == "dataset:seed"
    assert counts.seen["dataset"] == counts.kept["dataset"] == len(recs)


def test_hub_dataset_unreachable_is_a_clear_error(monkeypatch):
    datasets = pytest.importorskip("datasets")
    from lima_align.curate.config import DatasetsConfig

    def offline(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(LimaError, match="Hugging Face hub") as e:
        list(dataset_records(DatasetsConfig(hub=["someone/some-data"]), RuleCounts()))
    assert "datasets.paths" in e.value.problems[0].fix


def test_hub_dataset_rows_are_read(monkeypatch):
    datasets = pytest.importorskip("datasets")
    from lima_align.curate.config import DatasetsConfig

    monkeypatch.setattr(datasets, "load_dataset", lambda name, split, streaming: iter(
        [{"instruction": "Say hi", "input": "", "output": "Hi."}]))
    recs = list(dataset_records(DatasetsConfig(hub=["someone/tiny"]), RuleCounts()))
    assert recs[0]["id"] == "dataset:someone-tiny:someone-tiny-0" and recs[0]["messages"][1]["content"] == "Hi."


# ------------------------------------------------------------------ bad input


def good_rows(n: int, base: int = 0) -> list[str]:
    out = []
    for i in range(n):
        pid = base + 2 * i + 1
        out += [q(pid, 100 - i, f"How does the {WORDS[i % len(WORDS)]} method number {i} work?"),
                a(pid + 1, pid, 30, html_answer(pid))]
    return out


@pytest.mark.parametrize("batch_bytes", [1 << 20, 300, 5000])  # one batch for the file, or a few lines per batch
def test_malformed_xml_row_and_bad_encoding_are_counted_skips_with_lines(tmp_path, monkeypatch, batch_bytes):
    monkeypatch.setattr("lima_align.curate.inputs.BATCH_BYTES", batch_bytes)
    rows = good_rows(30)
    text = posts_xml(rows).encode()
    lines = text.split(b"\n")
    lines[5] = b'  <row Id="5" PostTypeId="1" Score="3" Title="broken <row'  # line 6: malformed XML
    lines[9] = lines[9].replace(b"&lt;p&gt;", b"&lt;p&gt;caf\xe9 ", 1)  # line 10: a Latin-1 byte, not UTF-8
    lines[13] = b'  <row Id="900" PostTypeId="1" Score="many" Title="How do non-numbers score?" />'  # line 14
    d = tmp_path / "cooking"
    d.mkdir()
    (d / "Posts.xml").write_bytes(b"\n".join(lines))
    bad = BadRows(max_bad_rows=5)
    recs, counts, bad = run_se(se_cfg([d], top_questions_per_site=100), bad=bad)
    assert bad.count == 3
    where = [x["where"] for x in bad.locations]
    assert where == [f"{d / 'Posts.xml'}:6", f"{d / 'Posts.xml'}:10", f"{d / 'Posts.xml'}:14"]
    assert "malformed XML" in bad.locations[0]["what"] and "integer" in bad.locations[2]["what"]
    assert len(recs) == 30 - 3  # the three broken lines held answers: their questions have none now
    assert counts.dropped["stackexchange"] == {"se_no_answer": 3}


@pytest.mark.parametrize("batch_bytes", [1 << 20, 300, 5000])
def test_truncated_xml_keeps_rows_before_and_records_where(tmp_path, monkeypatch, batch_bytes):
    monkeypatch.setattr("lima_align.curate.inputs.BATCH_BYTES", batch_bytes)
    text = posts_xml(good_rows(10))
    cut = text[: text.index('<row Id="19"') + 40]  # stops inside a row, no closing tag
    d = tmp_path / "cooking"
    d.mkdir()
    (d / "Posts.xml").write_text(cut, encoding="utf-8")
    recs, _, bad = run_se(se_cfg([d], top_questions_per_site=100))
    assert len(recs) == 9  # question 19's row itself was cut
    assert bad.count == 1 and "truncated" in bad.locations[0]["what"]


def test_on_error_fail_names_file_line_and_fix(tmp_path):
    lines = posts_xml(good_rows(3)).split("\n")
    lines[3] = '  <row Id="3" PostTypeId="1" <<<'
    d = tmp_path / "cooking"
    d.mkdir()
    (d / "Posts.xml").write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(LimaError) as e:
        run_se(se_cfg([d]), bad=BadRows(on_error="fail"))
    p = e.value.problems[0]
    assert p.where == f"{d / 'Posts.xml'}:4" and "malformed XML" in p.what and "on_error=skip" in p.fix


def test_too_many_bad_rows_stop_the_run(tmp_path):
    lines = posts_xml(good_rows(20)).split("\n")
    for i in range(3, 15):
        lines[i] = "<row <<< broken"
    d = tmp_path / "cooking"
    d.mkdir()
    (d / "Posts.xml").write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(LimaError, match=r"12 of \d+ rows are bad") as e:
        run_se(se_cfg([d]), bad=BadRows(max_bad_rows=10, max_bad_fraction=0.01))
    assert "re-download" in e.value.problems[0].fix


def test_truncated_7z_is_a_clear_error(tmp_path):
    py7zr = pytest.importorskip("py7zr")
    xml = write_site(tmp_path / "src", "cooking", good_rows(5))
    arc = tmp_path / "cooking.stackexchange.com.7z"
    with py7zr.SevenZipFile(arc, "w") as z:
        z.write(xml, "Posts.xml")
    data = arc.read_bytes()
    arc.write_bytes(data[: len(data) // 2])
    with pytest.raises(LimaError, match="cannot read the .7z archive") as e:
        run_se(se_cfg([arc]))
    assert e.value.problems[0].where == str(arc) and "re-download" in e.value.problems[0].fix


def test_7z_without_posts_is_a_clear_error(tmp_path):
    py7zr = pytest.importorskip("py7zr")
    (tmp_path / "Users.xml").write_text("<users/>")
    arc = tmp_path / "cooking.stackexchange.com.7z"
    with py7zr.SevenZipFile(arc, "w") as z:
        z.write(tmp_path / "Users.xml", "Users.xml")
    with pytest.raises(LimaError, match="no Posts.xml inside"):
        run_se(se_cfg([arc]))


def test_truncated_zst_is_counted_with_byte_offset_and_rows_before_kept(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    subs, _ = reddit_lines()
    many = [dict(s, id=f"w{i}", title=f"[WP] Story seed {i} " + prose(i, 60)) for i, s in enumerate(subs[:1] * 3000)]
    data = zstandard.ZstdCompressor().compress(ndjson(many))
    path = tmp_path / "RS.ndjson.zst"
    path.write_bytes(data[: len(data) // 2])
    bad = BadRows()
    counts = RuleCounts()
    list(reddit_records(RedditConfig(paths=[str(path)]), counts, bad, []))
    assert bad.count == 2  # the cut stream and the half line it ends with
    wheres = [x["where"] for x in bad.locations]
    assert any(w.startswith(f"{path} byte ") for w in wheres)
    assert any("truncated" in x["what"] for x in bad.locations)
    assert 0 < counts.seen["reddit"] < 3000


def test_malformed_json_and_bad_utf8_rows(tmp_path):
    rows = [json.dumps(r) for r in wikihow_rows()]
    rows.insert(1, '{"title": "How to Break JSON", "text": ')  # line 2
    path = tmp_path / "wikihow.jsonl"
    path.write_bytes(("\n".join(rows) + "\n").encode() + b'{"title": "How to \xff", "text": "x"}\n')
    bad, counts = BadRows(), RuleCounts()
    recs = list(wikihow_records(WikiHowConfig(paths=[str(path)]), counts, bad))
    check_wikihow(recs, counts)
    assert [x["where"] for x in bad.locations] == [f"{path}:2", f"{path}:7"]
    assert "not valid JSON" in bad.locations[0]["what"] and "UTF-8" in bad.locations[1]["what"]


def test_malformed_csv_rows(tmp_path):
    path = write_wikihow_csv(tmp_path / "wikihow.csv", wikihow_rows())
    text = path.read_bytes() + b'"How to Add Columns","h","text","cat","extra"\n' + b'"How to \xff","h","t","c"\n'
    path.write_bytes(text)
    bad, counts = BadRows(), RuleCounts()
    recs = list(wikihow_records(WikiHowConfig(paths=[str(path)]), counts, bad))
    check_wikihow(recs, counts)
    assert bad.count == 2
    assert "expected 4 fields" in bad.locations[0]["what"] and "row 6" in bad.locations[0]["where"]
    assert "UTF-8" in bad.locations[1]["what"]


def test_csv_without_needed_columns(tmp_path):
    path = tmp_path / "w.csv"
    path.write_text("name,value\na,b\n", encoding="utf-8")
    with pytest.raises(LimaError, match="no title and text/body column"):
        list(wikihow_records(WikiHowConfig(paths=[str(path)]), RuleCounts(), BadRows()))


def test_missing_inputs_are_clear_errors(tmp_path):
    with pytest.raises(LimaError, match="StackExchange dump not found"):
        find_dumps([str(tmp_path / "nope")])
    with pytest.raises(LimaError, match="no StackExchange dumps"):
        find_dumps([str(tmp_path)])
    with pytest.raises(LimaError, match="wikiHow dump not found"):
        list(wikihow_records(WikiHowConfig(paths=[str(tmp_path / "w.csv")]), RuleCounts(), BadRows()))
    with pytest.raises(LimaError, match="Reddit dump not found"):
        list(reddit_records(RedditConfig(paths=[str(tmp_path / "r.ndjson")]), RuleCounts(), BadRows(), []))


def test_reddit_bad_lines_are_counted_once_with_lines(tmp_path):
    subs, comments = reddit_lines()
    path = tmp_path / "all.ndjson"
    path.write_bytes(ndjson(subs[:1]) + b'{"id": "s9", "title": \n' + b'"just a string"\n' + b'{"title": "\xff"}\n'
                     + ndjson(comments[:2]))
    bad = BadRows()
    recs = list(reddit_records(RedditConfig(paths=[str(path)]), RuleCounts(), bad, []))
    assert [r["id"] for r in recs] == ["reddit:writingprompts:s1"]
    assert [x["where"] for x in bad.locations] == [f"{path}:2", f"{path}:3", f"{path}:4"]  # the comment pass adds none
    assert ["not valid JSON" in bad.locations[0]["what"], "JSON object" in bad.locations[1]["what"],
            "UTF-8" in bad.locations[2]["what"]] == [True, True, True]
