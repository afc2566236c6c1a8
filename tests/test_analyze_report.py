"""`lima-align report` with shift and retention summaries beside judgments: sections, charts, report.json."""

from __future__ import annotations

import json

from lima_align.analyze.report_sections import split_section_files
from lima_align.analyze.retention import _mcq_summary, _paired_difference, _ppl_estimate, predict
from lima_align.analyze.shift import ShiftSources, summarize_shift
from lima_align.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>x</script>"


def shift_summary(path):
    recs = [{"prompt_id": "p1", "ranks": [1, 5, 4, 1, 1], "tokens": ["Sure", EVIL, "!", " the", " end"],
             "base_top": ["The", "x", ".", " the", " end"]},
            {"prompt_id": "p2", "ranks": [2, 1, 9], "tokens": ["Sure", " it", EVIL], "base_top": ["I", " it", "."]}]
    s = summarize_shift(recs, ShiftSources("embedded", "runs/q/epoch-02"), n_boot=100)
    path.write_text(json.dumps(s))
    return s


def retention_summary(path):
    qs = [{"id": f"q{i}", "subject": "geo" if i % 2 else "science", "answer": 0, "choices": ["Rome", "Oslo"]}
          for i in range(6)]
    base = [predict(q, [-1.0, -2.0 if i < 4 else -0.5]) for i, q in enumerate(qs)]  # 4 of 6 right
    aligned = [predict(q, [-1.0, -2.0 if i < 3 else -0.5]) for i, q in enumerate(qs)]  # 3 of 6 right
    ppl = [{"id": "t1", "subject": "s", "nll": 20.0, "tokens": 10}, {"id": "t2", "subject": "s", "nll": 30.0,
                                                                    "tokens": 10}]
    models = [{"role": role, "model": name, "perplexity": {**_ppl_estimate(ppl, 100, 0), "by_subject": {}},
               "mcq": _mcq_summary(preds)} for role, name, preds in (("base", "embedded", base),
                                                                    ("aligned", "runs/q/epoch-02", aligned))]
    s = {"kind": "retention", "base": "embedded", "aligned": "runs/q/epoch-02", "models": models,
         "difference": {"accuracy": _paired_difference([p["correct"] for p in base], [p["correct"] for p in aligned],
                                                       100, 0)}, "mcq_items": []}
    path.write_text(json.dumps(s))
    return s


def judgments(path):
    r = {"id": "j1", "type": "pairwise", "prompt_id": "p1", "prompt": [{"role": "user", "content": "Q?"}],
         "model_a": "aligned", "model_b": "base", "output_a": "long answer", "output_b": "short", "judge": "longest",
         "instructions": {"name": "pairwise", "sha256": "0" * 64},
         "votes": [{"order": "ab", "raw": "a", "verdict": "a"}, {"order": "ba", "raw": "a", "verdict": "a"}],
         "verdict": "a", "consistent": True, "usage": {}, "created": 1.0}
    path.write_text(json.dumps(r) + "\n")


def test_split_keeps_judgments_and_picks_our_summaries(tmp_path):
    shift_summary(tmp_path / "shift.json")
    judgments(tmp_path / "j.jsonl")
    (tmp_path / "other.json").write_text(json.dumps({"kind": "something-else"}))
    paths = [tmp_path / "j.jsonl", tmp_path / "shift.json", tmp_path / "other.json"]
    js, sections = split_section_files(paths)
    assert js == [tmp_path / "j.jsonl", tmp_path / "other.json"]
    assert [s["kind"] for s in sections] == ["shift"]


def test_report_renders_shift_and_retention_sections(tmp_path, capsys):
    s = shift_summary(tmp_path / "shift.json")
    r = retention_summary(tmp_path / "retention.json")
    judgments(tmp_path / "judgments.jsonl")
    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "shift.json"), str(tmp_path / "retention.json"),
                 str(tmp_path / "judgments.jsonl"), "--output", str(out), "--n-boot", "50"]) == 0
    page = (out / "report.html").read_text()
    assert "token distribution shift" in page and "knowledge retention" in page
    assert "Pairwise preference" in page  # the judgments are still reported
    assert EVIL not in page and "&lt;script&gt;" in page
    shifted = s["shares"]["shifted"]["value"]
    assert f"{100 * shifted:.1f}%" in page
    assert f"{100 * r['models'][0]['mcq']['accuracy']['value']:.1f}%" in page  # base accuracy, 66.7%
    for name in ("shift_shares", "shift_position", "retention", "win_rates"):
        assert (out / "charts" / f"{name}.png").read_bytes().startswith(PNG_MAGIC)
    data = json.loads((out / "report.json").read_text())
    assert [a["kind"] for a in data["analysis"]] == ["shift", "retention"]
    assert data["analysis"][0]["counts"] == {"unshifted": 4, "marginal": 1, "shifted": 3}
    assert data["pairwise"] and data["charts"]["shift_shares"] == "charts/shift_shares.png"
    assert page.count("</main>") == 1 and page.index("id=retention") < page.index("</main>")


def test_report_with_only_an_analysis_summary(tmp_path):
    shift_summary(tmp_path / "shift.json")
    assert main(["report", str(tmp_path / "shift.json"), "--output", str(tmp_path / "r"), "--n-boot", "20"]) == 0
    page = (tmp_path / "r" / "report.html").read_text()
    assert "token distribution shift" in page and "Pairwise preference" not in page


def test_two_summaries_of_the_same_models_are_told_apart(tmp_path):
    shift_summary(tmp_path / "greedy.json")
    shift_summary(tmp_path / "sampled.json")
    assert main(["report", str(tmp_path / "greedy.json"), str(tmp_path / "sampled.json"), "--output",
                 str(tmp_path / "r"), "--n-boot", "20"]) == 0
    page = (tmp_path / "r" / "report.html").read_text()
    assert "epoch-02 vs embedded (greedy)" in page and "epoch-02 vs embedded (sampled)" in page
