"""The evaluation report: report.json numbers, a self-contained report.html, valid PNG charts, escaping."""

from __future__ import annotations

import base64
import json
import re

import pytest

from lima_align.report import build_report, side_by_side_html

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert('pwned')</script>"


def pairwise(pid: str, votes: tuple, judge: str, *, out_a: str = "", out_b: str = "") -> dict:
    va, vb = votes
    verdict = None if None in votes else va if va == vb else "tie"
    return {"id": f"{judge}:{pid}", "type": "pairwise", "prompt_id": pid,
            "prompt": [{"role": "user", "content": f"Question {pid}?"}], "model_a": "aligned", "model_b": "base",
            "output_a": out_a or f"aligned answer to {pid}, rather long " * 3, "output_b": out_b or f"base {pid}",
            "judge": judge, "instructions": {"name": "pairwise", "sha256": "0" * 64},
            "votes": [{"order": "ab", "raw": f"Verdict: [[{va}]]", "verdict": va},
                      {"order": "ba", "raw": f"Verdict: [[{vb}]]", "verdict": vb}],
            "verdict": verdict, "consistent": None if None in votes else va == vb,
            "usage": {"prompt_tokens": 100, "completion_tokens": 10, "cost_usd": 0.001}, "created": 1.0}


def absolute(pid: str, model: str, score: str, judge: str) -> dict:
    return {"id": f"abs:{judge}:{model}:{pid}", "type": "absolute", "prompt_id": pid, "prompt": [], "model": model,
            "output": "...", "judge": judge, "instructions": {"name": "absolute", "sha256": "1" * 64},
            "scale": "fail_pass_excellent", "raw": score, "score": score, "usage": {}, "created": 1.0}


GPT = "api:gpt-4o@https://example.invalid/v1"


@pytest.fixture
def judgment_files(tmp_path):
    # Judge gpt-4o:   p1 a (both orders), p2 a, p3 tie, p4 b, p5 inconsistent (a then b -> tie)
    # Judge alice:    p1 a, p2 b, p3 tie, p4 b, p5 null (second vote unparsed)
    gpt = [pairwise("p1", ("a", "a"), GPT, out_a=EVIL), pairwise("p2", ("a", "a"), GPT),
           pairwise("p3", ("tie", "tie"), GPT), pairwise("p4", ("b", "b"), GPT), pairwise("p5", ("a", "b"), GPT)]
    alice = [pairwise("p1", ("a", "a"), "human:alice", out_a=EVIL), pairwise("p2", ("b", "b"), "human:alice"),
             pairwise("p3", ("tie", "tie"), "human:alice"), pairwise("p4", ("b", "b"), "human:alice"),
             pairwise("p5", ("a", None), "human:alice")]
    gpt += [absolute(f"p{i}", "aligned", s, GPT) for i, s in enumerate(["pass", "excellent", "excellent", "fail"])]
    gpt += [absolute(f"p{i}", "base", s, GPT) for i, s in enumerate(["fail", "fail", "pass", "pass"])]
    alice += [absolute(f"p{i}", "aligned", s, "human:alice")
              for i, s in enumerate(["pass", "pass", "excellent", "fail"])]
    paths = []
    for name, recs in (("gpt.jsonl", gpt), ("alice.jsonl", alice)):
        p = tmp_path / name
        p.write_text("".join(json.dumps(r) + "\n" for r in recs))
        paths.append(p)
    return paths


def test_report_json_has_the_numbers(judgment_files, tmp_path):
    out = tmp_path / "report"
    page = build_report(judgment_files, out, title="eval <1>", n_boot=200)
    assert page == out / "report.html"
    rep = json.loads((out / "report.json").read_text())
    assert rep["title"] == "eval <1>" and rep["n_records"] == 22
    by_label = {p["label"]: p for p in rep["pairwise"]}
    assert set(by_label) == {"aligned vs base (api:gpt-4o)", "aligned vs base (human:alice)"}
    g = by_label["aligned vs base (api:gpt-4o)"]
    # gpt: a a tie b tie(inconsistent) -> 2 wins, 2 ties, 1 loss of 5; score (2 + 1)/5 = 0.6
    assert g["counts"] == {"a": 2, "tie": 2, "b": 1, "null": 0}
    assert g["rates"]["score"]["value"] == pytest.approx(0.6)
    assert g["sign_test"]["p_value"] == pytest.approx(1.0)  # 2 vs 1: 2 * (1 + 3) / 8 = 1
    assert g["position"]["consistency"] == pytest.approx(4 / 5)
    h = by_label["aligned vs base (human:alice)"]
    assert h["counts"] == {"a": 1, "tie": 1, "b": 2, "null": 1}
    # agreement on p1-p4 (p5 is null for alice): a/a 1, a/b 0, tie/tie 1, b/b 1 -> 3/4 both ways
    (agr,) = rep["agreement"]
    assert (agr["n"], agr["n_null"]) == (4, 1)
    assert agr["tie_discounted_accuracy"] == pytest.approx(0.75) and agr["with_ties"] == pytest.approx(0.75)
    assert agr["without_ties"] == pytest.approx(2 / 3)  # decisive for both: p1, p2, p4
    ratings = {a["label"]: a for a in rep["absolute"]}
    assert ratings["aligned (api:gpt-4o)"]["counts"] == {"fail": 1, "pass": 1, "excellent": 2}
    assert ratings["base (api:gpt-4o)"]["pass_or_better"]["value"] == pytest.approx(0.5)
    assert rep["charts"] == {"win_rates": "charts/win_rates.png", "ratings": "charts/ratings.png"}


def test_report_html_is_self_contained_with_charts_and_escaped_answers(judgment_files, tmp_path):
    out = tmp_path / "report"
    text = build_report(judgment_files, out, title="eval <1>", n_boot=200).read_text()
    assert "aligned vs base (api:gpt-4o)" in text and "aligned vs base (human:alice)" in text
    assert "<title>eval &lt;1&gt;</title>" in text
    imgs = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(imgs) == 2 and all(base64.b64decode(i).startswith(PNG_MAGIC) for i in imgs)
    # the answer's script is shown as text, and the page's only script is the filter
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in text
    assert EVIL not in text and text.count("<script>") == 1
    # nothing is fetched from elsewhere
    assert not re.search(r'(src|href)="https?://', text)
    for label in ("aligned wins", "base wins", "inconsistent", 'data-f="tie"'):
        assert label in text
    # p5 from gpt is inconsistent; its row can be filtered on
    assert re.search(r'<tr data-o="[^"]*inconsistent', text)
    for section in ("Judge agreement", "Position consistency and length bias", "Statistical power", "Absolute ratings"):
        assert section in text


def test_chart_files_are_valid_pngs(judgment_files, tmp_path):
    import matplotlib.image

    out = tmp_path / "report"
    build_report(judgment_files, out, title="t", n_boot=100)
    for name in ("win_rates.png", "ratings.png"):
        path = out / "charts" / name
        assert path.read_bytes().startswith(PNG_MAGIC)
        img = matplotlib.image.imread(path)
        assert img.shape[0] > 100 and img.shape[1] > 300


def test_report_with_only_absolute_ratings(tmp_path):
    p = tmp_path / "abs.jsonl"
    p.write_text("".join(json.dumps(absolute(f"p{i}", "aligned", "pass", "j")) + "\n" for i in range(3)))
    page = build_report([p], tmp_path / "out", title="t", n_boot=50)
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["pairwise"] == [] and rep["charts"] == {"ratings": "charts/ratings.png"}
    assert not (tmp_path / "out" / "charts" / "win_rates.png").exists()
    assert "Absolute ratings" in page.read_text()


def test_side_by_side_html_still_works(tmp_path):
    a = [{"prompt_id": "x", "messages": [{"role": "user", "content": "hi <b>"}], "output": EVIL,
          "tokens": {"output": 3}, "finish_reason": "eot"}]
    b = [{"prompt_id": "x", "messages": [{"role": "user", "content": "hi <b>"}], "output": "fine"}]
    text = side_by_side_html(a, b, tmp_path / "c.html", title="t", names=("base", "aligned")).read_text()
    assert "hi &lt;b&gt;" in text and EVIL not in text and "fine" in text


def test_report_has_pooled_people_rows_when_two_people_judged(judgment_files, tmp_path):
    bob = [pairwise(f"p{i}", (v, v), "human:bob") for i, v in enumerate(["a", "b", "tie", "b", "a"], start=1)]
    path = tmp_path / "bob.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in bob))
    out = tmp_path / "report"
    text = build_report([*judgment_files, path], out, title="t", n_boot=100).read_text()
    rep = json.loads((out / "report.json").read_text())
    (p,) = rep["pooled"]["pairwise"]
    # alice a b tie b null + bob a b tie b a: 10 votes on 5 prompts, a 3, tie 2, b 4, null 1
    assert p["raters"] == ["human:alice", "human:bob"] and p["counts"] == {"a": 3, "tie": 2, "b": 4, "null": 1}
    assert len(rep["pairwise"]) == 3 and rep["pooled"]["absolute"] == []
    assert "People, pooled" in text and "cluster bootstrap" in text


def test_report_without_two_people_has_no_pooled_rows(judgment_files, tmp_path):
    out = tmp_path / "report"
    text = build_report(judgment_files, out, title="t", n_boot=50).read_text()
    assert "pooled" not in json.loads((out / "report.json").read_text()) and "People, pooled" not in text


def test_report_escapes_a_script_in_the_title_model_names_and_judge(tmp_path):
    recs = [{**pairwise(f"p{i}", ("a", "a"), f"human:{EVIL}"), "model_a": EVIL} for i in range(3)]
    recs.append({**absolute("p1", EVIL, "pass", f"human:{EVIL}")})
    p = tmp_path / "j.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    text = build_report([p], tmp_path / "out", title=EVIL, n_boot=20).read_text()
    assert EVIL not in text and text.count("<script>") == 1  # the page's own filter script
    assert text.count("&lt;script&gt;alert(") >= 10  # title, heading, cards, tables, prompt rows, badges
