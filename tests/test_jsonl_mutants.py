"""JSONL behaviour that mutation testing (benchmarks/mutation.py) found unchecked: the exact error a user
sees for each kind of bad input or output path (where, what, fix), whole-file detection of files that are
not JSON Lines, the cap on listed lines, and repair_tail at the edges of its backward scan."""

from __future__ import annotations

import json
import os

import pytest

from lima_align import jsonl
from lima_align.errors import LimaError
from lima_align.jsonl import (JsonlAppender, check_output, check_output_folder, output_error, read_bytes, read_jsonl, read_text,
                              repair_tail, write_jsonl_atomic)

GOOD = b'{"id": 1}\n'


def error_of(fn, *args, **kwargs) -> LimaError:
    with pytest.raises(LimaError) as e:
        r = fn(*args, **kwargs)
        if hasattr(r, "__next__"):
            list(r)
    return e.value


def test_unreadable_inputs_say_where_what_and_how_to_fix(tmp_path, monkeypatch):
    missing = tmp_path / "nope.jsonl"
    assert str(error_of(read_bytes, missing)) == f"{missing}: file not found\n    fix: check the path"
    assert str(error_of(read_bytes, tmp_path)) == (f"{tmp_path}: is a folder, not a file\n"
                                                   "    fix: give the path of a file inside it")
    locked = tmp_path / "locked.jsonl"
    locked.write_bytes(GOOD)

    def denied(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(locked), "read_bytes", denied)
    assert str(error_of(read_bytes, locked)) == (f"{locked}: cannot read it (Permission denied)\n"
                                                 "    fix: check its permissions")


def test_read_text_names_the_line_and_column_of_a_byte_that_is_not_utf8(tmp_path):
    p = tmp_path / "notes.md"
    p.write_bytes("first line ü\n".encode() + b"ab\xffcd\n")
    assert str(error_of(read_text, p)) == (f"{p}:2: not UTF-8 text (byte 0xff at column 3)\n"
                                           "    fix: save the file as UTF-8")
    p.write_bytes(b"\nx\nab\xffcd\n\n\n")  # lines before and after, one starting the file
    assert str(error_of(read_text, p)).startswith(f"{p}:3: not UTF-8 text (byte 0xff at column 3)")
    p.write_bytes(b"\nab\xff")
    assert str(error_of(read_text, p)).startswith(f"{p}:2: not UTF-8 text (byte 0xff at column 3)")
    p.write_bytes("héllo\nwörld".encode())
    assert read_text(p) == "héllo\nwörld"


def test_each_broken_line_kind_has_its_own_message_and_fix(tmp_path):
    p = tmp_path / "data.jsonl"
    p.write_bytes(GOOD + b"ab\xffcd\n" + b'{"id": \n' + b"[1, 2]\n" + b'"text"\n' + b'{"id": 9')
    problems = error_of(read_jsonl, p).problems
    assert [str(x) for x in problems] == [
        f"{p}:2: not UTF-8 text (byte 0xff at column 3)\n    fix: save the file as UTF-8",
        f"{p}:3: not valid JSON (Expecting value: column 8)\n"
        "    fix: each line must be one complete JSON object; fix or delete it",
        f"{p}:4: expected a JSON object, got list\n    fix: wrap the record in {{...}}",
        f"{p}:5: expected a JSON object, got str\n    fix: wrap the record in {{...}}",
        f"{p}:6: not valid JSON (Expecting ',' delimiter: column 9); the last line is cut short, as an interrupted "
        "write leaves it\n    fix: rerun the command that wrote the file (it repairs the last line), or delete it",
    ]


def test_a_broken_middle_line_is_never_taken_for_a_partial_tail(tmp_path):
    # The file lacks a final newline, but only its last line can be an interrupted write.
    p = tmp_path / "a.jsonl"
    p.write_bytes(GOOD + b'{"id": \n' + b'{"id": 3}')
    e = error_of(read_jsonl, p, allow_partial_tail=True)
    assert [x.where for x in e.problems] == [f"{p}:2"]
    assert p.read_bytes() == GOOD + b'{"id": \n' + b'{"id": 3}'  # nothing cut


WHOLE_FILE_FIX = ("lima-align reads JSON Lines, one JSON object a line (datasets also as a .json list of objects); "
                  "convert the file, e.g. for CSV in Python: "
                  "pandas.read_csv(IN).to_json(OUT, orient='records', lines=True)")


def test_a_file_with_no_json_object_is_reported_once_as_not_json_lines(tmp_path):
    csv = tmp_path / "data.csv"
    csv.write_text("prompt,answer\n")  # one line is enough when the suffix says what it is
    e = error_of(read_jsonl, csv)
    assert len(e.problems) == 1
    assert str(e) == (f"{csv}: not a JSON Lines file: no line is a JSON object (it looks like CSV)\n"
                      f"    fix: {WHOLE_FILE_FIX}")
    other = tmp_path / "data.dat"
    other.write_text("prompt answer\nhello there\n")
    assert str(error_of(read_jsonl, other)) == (f"{other}: not a JSON Lines file: no line is a JSON object\n"
                                                f"    fix: {WHOLE_FILE_FIX}")


def test_one_broken_line_or_json_that_is_not_objects_is_listed_by_line(tmp_path):
    one = tmp_path / "one.dat"
    one.write_text("hello there\n")
    assert [x.where for x in error_of(read_jsonl, one).problems] == [f"{one}:1"]
    lists = tmp_path / "lists.dat"
    lists.write_text("[1]\n[2]\n")
    e = error_of(read_jsonl, lists)
    assert [(x.where, x.what) for x in e.problems] == [(f"{lists}:1", "expected a JSON object, got list"),
                                                       (f"{lists}:2", "expected a JSON object, got list")]


def test_at_most_twenty_broken_lines_are_listed_and_the_rest_counted(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(GOOD + b"oops\n" * 25)
    problems = error_of(read_jsonl, p).problems
    assert len(problems) == 21
    assert [x.where for x in problems[:20]] == [f"{p}:{i}" for i in range(2, 22)]
    assert str(problems[20]) == f"{p}: 5 more broken lines not listed\n    fix: fix these and run again"
    p.write_bytes(GOOD + b"oops\n" * 20)
    problems = error_of(read_jsonl, p).problems
    assert len(problems) == 20 and all(x.where != str(p) for x in problems)


def test_output_paths_that_cannot_be_written_say_why(tmp_path):
    assert str(error_of(check_output, tmp_path)) == (f"{tmp_path}: is a folder; an output file is needed here\n"
                                                     f"    fix: give a file path, e.g. {tmp_path / 'out.jsonl'}")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert str(error_of(check_output, fifo)) == (f"{fifo}: is not a regular file\n"
                                                 "    fix: give the path of a file to write")
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    target = blocker / "sub" / "out.jsonl"
    assert str(error_of(write_jsonl_atomic, target, [{"a": 1}])) == (
        f"{target}: cannot write it: {blocker} is a file, not a folder\n"
        "    fix: choose a path in a folder you can write to")
    # refused by the check itself, before any work, and said the same way by output_error
    assert str(error_of(check_output, target)) == str(error_of(write_jsonl_atomic, target, []))
    assert str(output_error(target, NotADirectoryError(20, "Not a directory"))) == str(error_of(check_output, target))
    plain = output_error(tmp_path / "out.jsonl", PermissionError(13, "Permission denied"))
    assert str(plain) == (f"{tmp_path / 'out.jsonl'}: cannot write it (Permission denied)\n"
                          "    fix: choose a path in a folder you can write to")


def test_write_failures_after_the_checks_become_user_errors(tmp_path, monkeypatch):
    out = tmp_path / "out.jsonl"

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(jsonl.os, "replace", denied)
    assert "cannot write it (Permission denied)" in str(error_of(write_jsonl_atomic, out, [{"a": 1}]))
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(jsonl, "repair_tail", denied)
    assert "cannot write it (Permission denied)" in str(error_of(JsonlAppender, out))


def test_atomic_write_creates_missing_folders(tmp_path):
    out = tmp_path / "a" / "b" / "out.jsonl"
    write_jsonl_atomic(out, [{"text": "ünï"}])
    assert out.read_text(encoding="utf-8") == '{"text": "ünï"}\n'


def test_repair_tail_keeps_a_complete_record_and_removes_nothing(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(GOOD + b'{"id": 2}')
    assert repair_tail(p) == 0
    assert p.read_bytes() == GOOD + b'{"id": 2}\n'


def test_repair_tail_cuts_a_one_byte_partial_line(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(GOOD + b"{")
    assert repair_tail(p) == 1
    assert p.read_bytes() == GOOD


@pytest.mark.parametrize("tail", [65535, 65536])
def test_repair_tail_finds_the_newline_at_a_scan_block_edge(tmp_path, tail):
    # 65535: the last newline is the first byte of the last 64 KiB block read;
    # 65536 with one newline first: the scan's final block is that single byte.
    p = tmp_path / "a.jsonl"
    head = GOOD * 3 if tail == 65535 else b"\n"
    p.write_bytes(head + b"x" * tail)
    assert repair_tail(p) == tail
    assert p.read_bytes() == head
    if tail == 65535:
        assert [json.loads(x) for x in p.read_bytes().splitlines()] == [{"id": 1}] * 3


def test_output_folder_check_refuses_a_file_or_a_path_under_one(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    assert str(error_of(check_output_folder, f)) == (f"{f}: is a file; an output folder is needed here\n"
                                                     "    fix: give a folder path (it is created if missing)")
    assert str(error_of(check_output_folder, f / "run")) == (
        f"{f / 'run'}: cannot write it: {f} is a file, not a folder\n"
        "    fix: choose a path in a folder you can write to")
    assert check_output_folder(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert check_output_folder(str(tmp_path)) == tmp_path


def test_a_resumed_job_refuses_a_file_written_for_another_model(tmp_path):
    from lima_align.jsonl import done_keys

    p = tmp_path / "gen.jsonl"
    p.write_text('{"id": "a", "model": "m1"}\n')
    assert str(error_of(done_keys, p, lambda r: r["id"], model="m2")) == (
        f"{p}:1: already holds answers of model 'm1', not 'm2'\n"
        f"    fix: write each model's answers to its own --output file, or delete {p} to start it over")
    assert done_keys(p, lambda r: r["id"], model="m1") == {"a"}
