"""Crash-safe JSONL: line numbers in errors, partial tails, durable appends, atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lima_align.errors import LimaError
from lima_align.jsonl import JsonlAppender, done_keys, read_jsonl, repair_tail, write_jsonl_atomic, write_text_atomic


def line(obj: dict) -> bytes:
    return (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")


GOOD = [{"id": i, "text": f"record {i} — ünïcode"} for i in range(5)]


def write_good(path: Path, n: int = 5) -> bytes:
    data = b"".join(line(r) for r in GOOD[:n])
    path.write_bytes(data)
    return data


def test_read_jsonl_yields_line_numbers_and_skips_blank_lines(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(line(GOOD[0]) + b"\n   \n" + line(GOOD[1]))
    assert list(read_jsonl(p)) == [(1, GOOD[0]), (4, GOOD[1])]


def test_broken_line_in_the_middle_is_reported_by_line_number(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(line(GOOD[0]) + line(GOOD[1]) + b'{"id": 2, "text": "oops"\n' + line(GOOD[3]) + line(GOOD[4]))
    with pytest.raises(LimaError) as e:
        list(read_jsonl(p))
    assert f"{p}:3" in str(e.value)
    assert "not valid JSON" in str(e.value)
    # a broken middle line is an error even when a partial tail is allowed
    with pytest.raises(LimaError, match=f"{p}:3"):
        list(read_jsonl(p, allow_partial_tail=True))


def test_non_object_line_is_reported(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(line(GOOD[0]) + b"[1, 2]\n")
    with pytest.raises(LimaError, match=f"{p}:2.*expected a JSON object, got list"):
        list(read_jsonl(p))


def test_missing_file(tmp_path):
    with pytest.raises(LimaError, match="file not found"):
        list(read_jsonl(tmp_path / "nope.jsonl"))


def test_partial_tail_is_an_error_to_readers_and_cut_by_the_job_that_appends(tmp_path):
    p = tmp_path / "a.jsonl"
    complete = write_good(p, 3)
    p.write_bytes(complete + b'{"id": 3, "text": "half wri')
    with pytest.raises(LimaError, match=f"(?s){p}:4.*cut short.*rerun the command that wrote the file"):
        list(read_jsonl(p))
    # the appending job's own read repairs the file, even when it then finds nothing left to do
    assert [obj for _, obj in read_jsonl(p, allow_partial_tail=True)] == GOOD[:3]
    assert p.read_bytes() == complete
    assert [obj for _, obj in read_jsonl(p)] == GOOD[:3]


def test_broken_last_line_with_newline_is_not_a_partial_tail(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(write_good(p, 2) + b'{"id": 2, "text": "ha\n')
    with pytest.raises(LimaError, match=f"{p}:3"):
        list(read_jsonl(p, allow_partial_tail=True))


def test_repair_tail_cuts_only_the_partial_line(tmp_path):
    p = tmp_path / "a.jsonl"
    complete = write_good(p)
    partial = b'{"id": 5, "text": "half \xc3'  # cut even mid-way through a UTF-8 character
    p.write_bytes(complete + partial)
    assert repair_tail(p) == len(partial)
    assert p.read_bytes() == complete  # complete lines kept byte for byte
    assert repair_tail(p) == 0  # idempotent
    assert p.read_bytes() == complete


def test_repair_tail_on_clean_empty_and_missing_files(tmp_path):
    p = tmp_path / "a.jsonl"
    complete = write_good(p)
    assert repair_tail(p) == 0 and p.read_bytes() == complete
    e = tmp_path / "empty.jsonl"
    e.write_bytes(b"")
    assert repair_tail(e) == 0 and e.read_bytes() == b""
    assert repair_tail(tmp_path / "missing.jsonl") == 0


def test_repair_tail_single_partial_line_empties_the_file(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'{"id": 0, "te')
    assert repair_tail(p) == 13
    assert p.read_bytes() == b""


def test_repair_tail_scans_back_over_a_long_partial_line(tmp_path):
    p = tmp_path / "a.jsonl"
    complete = write_good(p, 2)
    partial = b'{"text": "' + b"x" * 200_000  # longer than the 64 KiB scan block
    p.write_bytes(complete + partial)
    assert repair_tail(p) == len(partial)
    assert p.read_bytes() == complete


def test_appender_after_crash_appends_cleanly(tmp_path):
    p = tmp_path / "gen.jsonl"
    complete = write_good(p, 3)
    # the process died half-way through writing record 3
    p.write_bytes(complete + line(GOOD[3])[:17])
    done = {obj["id"] for _, obj in read_jsonl(p, allow_partial_tail=True)}
    assert done == {0, 1, 2}
    with JsonlAppender(p) as w:
        w.write_many(r for r in GOOD if r["id"] not in done)
    assert p.read_bytes() == b"".join(line(r) for r in GOOD)  # no duplicate, no loss, no junk
    ids = [obj["id"] for _, obj in read_jsonl(p)]
    assert ids == [0, 1, 2, 3, 4]


def test_appender_creates_folders_and_appends_across_sessions(tmp_path):
    p = tmp_path / "deep" / "er" / "out.jsonl"
    with JsonlAppender(p) as w:
        w.write(GOOD[0])
        w.write_many([])
    with JsonlAppender(p) as w:
        w.write_many(GOOD[1:3])
    assert p.read_bytes() == b"".join(line(r) for r in GOOD[:3])


def test_appender_keeps_a_complete_record_without_trailing_newline(tmp_path):
    p = tmp_path / "gen.jsonl"
    p.write_bytes(line(GOOD[0]) + line(GOOD[1]).rstrip(b"\n"))
    done = {obj["id"] for _, obj in read_jsonl(p, allow_partial_tail=True)}
    assert done == {0, 1}
    with JsonlAppender(p) as w:
        w.write(GOOD[2])
    assert [obj["id"] for _, obj in read_jsonl(p)] == [0, 1, 2]


def test_write_jsonl_atomic_leaves_no_tmp(tmp_path):
    p = tmp_path / "sub" / "out.jsonl"
    write_jsonl_atomic(p, iter(GOOD))
    assert p.read_bytes() == b"".join(line(r) for r in GOOD)
    assert [q.name for q in p.parent.iterdir()] == ["out.jsonl"]
    # overwriting replaces the whole file
    write_jsonl_atomic(p, GOOD[:1])
    assert [obj for _, obj in read_jsonl(p)] == GOOD[:1]
    assert not list(p.parent.glob("*.tmp"))


def test_write_jsonl_atomic_failure_keeps_the_old_file(tmp_path):
    p = tmp_path / "out.jsonl"
    write_jsonl_atomic(p, GOOD)
    before = p.read_bytes()

    def records():
        yield GOOD[0]
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_jsonl_atomic(p, records())
    assert p.read_bytes() == before


def test_write_text_atomic(tmp_path):
    p = tmp_path / "a" / "page.html"
    write_text_atomic(p, "<p>hé</p>")
    assert p.read_text(encoding="utf-8") == "<p>hé</p>"
    assert [q.name for q in p.parent.iterdir()] == ["page.html"]


def test_every_broken_line_is_reported_at_once_in_plain_words(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(line(GOOD[0]) + b'{"id": 1, "text": "no end\n' + line(GOOD[2]) + b'{"id": \xff}\n' + b"[3]\n"
                  + line(GOOD[4]))
    with pytest.raises(LimaError) as e:
        list(read_jsonl(p))
    assert [x.where for x in e.value.problems] == [f"{p}:2", f"{p}:4", f"{p}:5"]
    text = str(e.value)
    assert "Unterminated string starting at: column 19" in text and "at at" not in text
    assert "not UTF-8 text (byte 0xff at column 8)" in text and "column ?" not in text


def test_a_csv_file_is_named_as_such_with_the_formats_that_are_read(tmp_path):
    p = tmp_path / "data.csv"
    p.write_text("instruction,output\nSay hi,Hi\n")
    with pytest.raises(LimaError) as e:
        list(read_jsonl(p))
    (problem,) = e.value.problems
    assert problem.where == str(p) and "looks like CSV" in problem.what and "JSON Lines" in problem.fix


def test_missing_file_and_folder_say_the_path_once(tmp_path):
    for path, what in ((tmp_path / "nope.jsonl", "file not found"), (tmp_path, "is a folder, not a file")):
        with pytest.raises(LimaError) as e:
            list(read_jsonl(path))
        assert str(e.value).count(str(path)) == 1 and what in str(e.value)


def test_outputs_that_cannot_be_written_are_user_errors_and_leave_nothing(tmp_path):
    (tmp_path / "a-file").write_text("x")
    for out in (tmp_path, tmp_path / "a-file" / "out.jsonl"):
        with pytest.raises(LimaError, match="folder"):
            write_jsonl_atomic(out, GOOD)
        with pytest.raises(LimaError, match="folder"):
            JsonlAppender(out)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(LimaError, match="not a regular file"):  # an atomic rename would replace it
        write_text_atomic(fifo, "x")
    assert fifo.exists() and not fifo.is_file()

    def failing():
        yield GOOD[0]
        raise LimaError("record 2 is bad")

    with pytest.raises(LimaError, match="record 2"):
        write_jsonl_atomic(tmp_path / "out.jsonl", failing())
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a-file", "pipe"]


def test_done_keys_are_what_was_written_with_the_half_written_tail_cut(tmp_path):
    out = tmp_path / "gens.jsonl"
    assert done_keys(out, lambda r: r.get("prompt_id")) == set()  # no file yet: nothing done, nothing made
    assert not out.exists()
    recs = [{"prompt_id": "a", "model": "m"}, {"prompt_id": 7, "model": "m"}, {"model": "m"}]
    out.write_bytes(b"".join(line(r) for r in recs) + b'{"prompt_id": "c", "mod')
    assert done_keys(out, lambda r: r.get("prompt_id"), model="m") == {"a", "7"}  # a None key is not counted
    assert out.read_bytes() == b"".join(line(r) for r in recs)  # the partial line is gone, whole ones kept


def test_done_keys_refuse_a_file_of_another_model(tmp_path):
    out = tmp_path / "gens.jsonl"
    out.write_bytes(line({"prompt_id": "a", "model": "m"}) + line({"prompt_id": "b", "model": "other"}))
    with pytest.raises(LimaError) as e:
        done_keys(out, lambda r: r.get("prompt_id"), model="m")
    p = e.value.problems[0]
    assert p.where == f"{out}:2" and "'other'" in p.what and "'m'" in p.what
    assert "--output" in p.fix and "delete" in p.fix
    assert done_keys(out, lambda r: r.get("prompt_id")) == {"a", "b"}  # no model given: no check
