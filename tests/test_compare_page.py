"""The side-by-side page: a human lead line, the judge-free figures per model, even columns, line breaks kept."""

from __future__ import annotations

import re

from lima_align.answer_checks import fmt_share, summarize
from lima_align.compare_page import decoding_text, lead_line
from lima_align.report import side_by_side_html

DEC = {"max_new_tokens": 160, "temperature": 0.7, "top_p": 0.9, "repetition_penalty": 1.2, "seed": 0}


def rec(pid, prompt, output, finish, tokens, model):
    return {"id": f"{model}:{pid}", "prompt_id": pid, "model": model, "output": output, "finish_reason": finish,
            "messages": [{"role": "user", "content": prompt}], "tokens": {"prompt": 4, "output": tokens},
            "decoding": dict(DEC)}


BASE = [rec("p1", "Give me 3 bullet points on tea.", "Tea is tea is tea is tea is tea", "length", 160, "base"),
        rec("p2", "Why is the sea salty?", "Salt.", "eot", 2, "base"),
        rec("only-base", "Hi?", "Hello", "eot", 1, "base")]
ALIGNED = [rec("p1", "Give me 3 bullet points on tea.", "- green\n- black\n- oolong", "eot", 9, "aligned"),
           rec("p2", "Why is the sea salty?", "Rivers carry salts.\n\nThe sea keeps them.", "eot", 9, "aligned")]


def test_page_has_a_human_lead_line_and_the_figures(tmp_path):
    page = side_by_side_html(BASE, ALIGNED, tmp_path / "c.html", title="t", names=("base", "aligned"),
                             summary="Prompts: seed:test.").read_text()
    lead = re.search(r"<p class=lead>(.*?)</p>", page).group(1)
    assert lead == ("2 prompts answered by both models; decoding for both: temperature 0.7, top-p 0.9, "
                    "repetition penalty 1.2, at most 160 new tokens. Prompts: seed:test.")
    assert "{" not in lead and "seed" not in lead.split(".")[0]  # no JSON config dump
    # the figures are those of the prompts shown (the base-only prompt is left out of both)
    base, aligned = summarize(BASE[:2]), summarize(ALIGNED)
    figs = page[page.index("<table class=figs>"):page.index("<table class=answers>")]
    for label, b, a in (("ended its turn", base["ended_turn"], aligned["ended_turn"]),
                        ("line breaks, list/steps prompts", base["list_prompts_with_line_breaks"],
                         aligned["list_prompts_with_line_breaks"])):
        assert re.search(rf"<td>{re.escape(label)}</td><td class=n>{re.escape(fmt_share(b))}</td>"
                         rf"<td class=n>{re.escape(fmt_share(a))}</td>", figs), label
    assert "1/2" in figs and "2/2" in figs and "only-base" not in page


def test_columns_are_even_and_line_breaks_are_kept(tmp_path):
    page = side_by_side_html(BASE, ALIGNED, tmp_path / "c.html", title="t", names=("base", "aligned")).read_text()
    assert "table-layout:fixed" in page and page.count("<col class=ans>") == 2 and "col.ans{width:40%}" in page
    assert ".text{white-space:pre-wrap" in page
    assert "<div class=text>- green\n- black\n- oolong</div>" in page  # the newlines reach the page as they are


def test_decoding_text_when_files_differ_or_say_nothing():
    assert decoding_text([{"decoding": None}]) is None
    mixed = [rec("p1", "q", "a", "eot", 1, "m"),
             {**rec("p2", "q", "a", "eot", 1, "m"), "decoding": {**DEC, "top_p": 1}}]
    assert decoding_text(mixed) == "several decoding settings"
    other = [{**r, "decoding": {**DEC, "temperature": 0.0}} for r in ALIGNED]
    line = lead_line(BASE[:2], other, ("base", "aligned"))
    assert "base: temperature 0.7" in line and "aligned: temperature 0.0" in line


def test_every_text_on_the_page_is_escaped(tmp_path):
    evil = "<script>alert(1)</script>"
    a = [{**rec(evil, evil, evil, evil, 1, "base")}]
    b = [{**rec(evil, "q", "fine", "eot", 1, "aligned")}]
    page = side_by_side_html(a, b, tmp_path / "c.html", title=evil, names=(evil, evil), summary=evil).read_text()
    assert "<script>" not in page and "fine" in page
    # title and heading, lead, the two column heads twice, prompt, prompt id, answer and its finish reason
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 11
