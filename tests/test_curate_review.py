"""Terminal review: keystrokes fed in, decisions appended durably, resume, undo, edit, apply."""

from __future__ import annotations

import io
import json
import sys

import pytest
from rich.console import Console

from lima_align.curate.review import apply_review, replay, review
from lima_align.errors import LimaError


def make_selection(path, n=4):
    rows = [{"id": f"s{i}", "source": "pool", "meta": {"group": "g", "stratum": "x", "url": f"https://ex.org/{i}"},
             "messages": [{"role": "user", "content": f"Question number {i}? [b]raw[/b]"},
                          {"role": "assistant", "content": f"Answer number {i}."}]} for i in range(1, n + 1)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def keys(*presses):
    it = iter(presses)

    def read(prompt=""):
        try:
            return next(it)
        except StopIteration:
            raise EOFError from None
    return read


def run(sel, dec, *presses, editor="", **kw):
    out = io.StringIO()
    tally = review(sel, dec, read_key=keys(*presses), editor=editor, console=Console(file=out, width=100), **kw)
    return tally, out.getvalue()


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def read_out(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_decisions_are_appended_and_a_rerun_resumes(tmp_path):
    sel, dec = make_selection(tmp_path / "sel.jsonl"), tmp_path / "dec.jsonl"
    tally, text = run(sel, dec, "a", "r", "q")
    assert tally == {"accept": 1, "edit": 0, "reject": 1, "undecided": 2}
    assert [(d["id"], d["decision"]) for d in lines(dec)] == [("s1", "accept"), ("s2", "reject")]
    assert "Question number 1?" in text and "Answer number 1." in text and "https://ex.org/1" in text
    assert "[a]ccept  [r]eject" in text and "[b]raw[/b]" in text  # shown as typed, not read as rich markup
    # resume: starts at s3, not s1
    tally, text = run(sel, dec, "a")  # then end of input: quits
    assert "resuming at example 3 of 4" in text and "Question number 3?" in text
    assert "Question number 1?" not in text
    assert tally["undecided"] == 1
    tally, text = run(sel, dec, "", "a")  # a blank key (Enter) is ignored, the example not shown twice
    assert tally == {"accept": 3, "edit": 0, "reject": 1, "undecided": 0} and text.count("Question number 4?") == 1
    out = tmp_path / "out.jsonl"
    t = apply_review(sel, dec, out)
    assert [r["id"] for r in read_out(out)] == ["s1", "s3", "s4"] and t["written"] == 3 and t["reject"] == 1
    assert read_out(out)[0]["meta"]["review"] == {"decision": "accept"}
    # nothing left: a further run shows nothing and writes nothing
    before = dec.read_text()
    tally, _ = run(sel, dec, "a")
    assert dec.read_text() == before


def test_edit_inline_and_with_an_editor_never_touch_the_selection(tmp_path):
    sel, dec = make_selection(tmp_path / "sel.jsonl"), tmp_path / "dec.jsonl"
    original = sel.read_bytes()
    # inline: lines until a lone "."
    run(sel, dec, "e", "A better answer,", "on two lines.", ".", "q")
    # an editor command that rewrites the file it is given
    script = tmp_path / "fake_editor.py"
    script.write_text("import sys, pathlib\np = pathlib.Path(sys.argv[1])\n"
                      "p.write_text(p.read_text().replace('Answer', 'Edited answer'))\n")
    run(sel, dec, "e", "q", editor=f"{sys.executable} {script}")
    # an editor that changes nothing saves nothing and stays on the example
    _, text = run(sel, dec, "e", "r", editor="true")
    assert "no change saved" in text
    assert sel.read_bytes() == original
    d = lines(dec)
    assert [(x["id"], x["decision"]) for x in d] == [("s1", "edit"), ("s2", "edit"), ("s3", "reject")]
    assert d[0]["response"] == "A better answer,\non two lines." and d[1]["response"] == "Edited answer number 2."
    out = tmp_path / "out.jsonl"
    apply_review(sel, dec, out)
    rows = read_out(out)
    assert [r["messages"][1]["content"] for r in rows] == ["A better answer,\non two lines.", "Edited answer number 2."]
    assert rows[0]["meta"]["review"]["decision"] == "edit"


def test_undo_within_and_across_sessions_and_skip(tmp_path):
    sel, dec = make_selection(tmp_path / "sel.jsonl"), tmp_path / "dec.jsonl"
    tally, _ = run(sel, dec, "a", "u", "r", "q")  # s1 accepted, undone, then rejected
    assert tally["reject"] == 1 and tally["accept"] == 0
    run(sel, dec, "a", "q")  # s2 accepted
    tally, text = run(sel, dec, "u", "r", "q")  # a new session undoes s2 and rejects it instead
    assert "Question number 2?" in text and tally == {"accept": 0, "edit": 0, "reject": 2, "undecided": 2}
    state, _ = replay(dec)
    assert state["s2"][-1]["decision"] == "reject"
    # skip leaves s3 undecided: the session goes on to s4, and the next one starts at s3 again
    tally, _ = run(sel, dec, "s", "a")
    assert tally["undecided"] == 1
    _, text = run(sel, dec, "x", "a")
    assert "resuming at example 3" in text and "unknown key 'x'" in text
    assert apply_review(sel, dec, tmp_path / "o.jsonl")["written"] == 2


def test_interrupted_write_and_bad_decisions(tmp_path):
    sel, dec = make_selection(tmp_path / "sel.jsonl"), tmp_path / "dec.jsonl"
    run(sel, dec, "a", "q")
    with dec.open("a") as f:
        f.write('{"id": "s2", "decis')  # killed mid-write
    tally, _ = run(sel, dec, "r", "q")
    assert tally["reject"] == 1 and tally["accept"] == 1
    assert [d["id"] for d in lines(dec)] == ["s1", "s2"]  # partial line cut, no duplicate
    # the example changed after it was reviewed: apply refuses instead of writing a stale decision
    rows = [json.loads(x) for x in sel.read_text().splitlines()]
    rows[0]["messages"][1]["content"] = "Someone changed this."
    sel.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(LimaError, match="changed since it was reviewed"):
        apply_review(sel, dec, tmp_path / "o.jsonl")
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"id": "zz", "decision": "accept"}) + "\n")
    with pytest.raises(LimaError, match="not in the selection"):
        apply_review(sel, other, tmp_path / "o.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "s1", "decision": "maybe"}\n')
    with pytest.raises(LimaError, match="bad.jsonl:1"):
        replay(bad)
    dup = tmp_path / "dup.jsonl"
    dup.write_text(sel.read_text().splitlines()[0] + "\n" + sel.read_text().splitlines()[0] + "\n")
    with pytest.raises(LimaError, match="duplicate id"):
        review(dup, dec, read_key=keys("q"), console=Console(file=io.StringIO()))


def test_cli_review_reads_keys_from_stdin_and_apply_review(tmp_path, monkeypatch, capsys):
    from lima_align.cli import main

    sel, dec, out = make_selection(tmp_path / "sel.jsonl"), tmp_path / "dec.jsonl", tmp_path / "out.jsonl"
    monkeypatch.setattr("sys.stdin", io.StringIO("a\nr\nq\n"))
    assert main(["curate", "review", str(sel), "--decisions", str(dec), "--editor", "", "--reviewer", "ana"]) == 0
    assert [(d["decision"], d["reviewer"]) for d in lines(dec)] == [("accept", "ana"), ("reject", "ana")]
    monkeypatch.setattr("sys.stdin", io.StringIO("a\n"))  # resumes at s3, then stdin ends
    assert main(["curate", "review", str(sel), "--decisions", str(dec), "--editor", ""]) == 0
    assert main(["curate", "apply-review", str(sel), "--decisions", str(dec), "--output", str(out)]) == 0
    assert [r["id"] for r in read_out(out)] == ["s1", "s3"]
    assert "wrote 2 examples" in capsys.readouterr().out
    assert main(["curate", "apply-review", str(sel), "--decisions", str(tmp_path / "none.jsonl"),
                 "--output", str(out)]) == 2
