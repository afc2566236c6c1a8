"""Follow-ups from issue 15's hardening: error wording, NaN in curation settings, broken pipes, refused API ports."""

from __future__ import annotations

import math

import pytest

from lima_align.errors import LimaError, ProblemList


def test_a_folder_without_config_json_is_named_once(tmp_path):
    from lima_align.models import resolve_model_path

    with pytest.raises(LimaError) as e:
        resolve_model_path(str(tmp_path))
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path}: ") and msg.count(str(tmp_path)) == 1 and "config.json" in msg


@pytest.mark.parametrize("where, value", [("stackexchange.top_questions_per_site", math.nan),
                                          ("reddit.top_submissions_per_subreddit", math.nan),
                                          ("reddit.top_submissions_per_subreddit", 0),
                                          ("max_bad_fraction", math.nan), ("wikihow.min_chars", math.nan),
                                          ("stackexchange.title.min_chars", -1)])
def test_curation_numbers_out_of_range_are_refused_nan_too(where, value):
    """`v <= 0` is False for NaN, so a recipe built in Python with NaN passed its checks."""
    import dataclasses

    from lima_align.curate.config import CurateRecipe

    recipe = CurateRecipe(datasets=dataclasses.replace(CurateRecipe().datasets, paths=["seed:train"]))
    *path, name = where.split(".")
    section = recipe
    for part in path:
        section = getattr(section, part)
    setattr(section, name, value)
    problems = ProblemList()
    recipe.check(problems)
    assert [p.where for p in problems.problems] == [where]
    ok = ProblemList()
    CurateRecipe(datasets=recipe.datasets).check(ok)
    assert not ok  # the defaults pass


def test_curation_ranges_are_checked_when_a_recipe_is_loaded(tmp_path):
    from lima_align.config import load_recipe
    from lima_align.curate.config import CurateRecipe

    with pytest.raises(LimaError) as e:
        load_recipe(None, ["datasets.paths=[seed:train]", "reddit.top_submissions_per_subreddit=0",
                           "max_bad_fraction=2"], cls=CurateRecipe)
    msg = str(e.value)
    assert "override reddit.top_submissions_per_subreddit=0: must be > 0, got 0" in msg
    assert "max_bad_fraction=2: must be in [0, 1], got 2" in msg and "2 problems" in msg  # each once


@pytest.mark.parametrize("command", ["data stats", "answers"])
def test_a_rich_table_into_a_closed_pipe_ends_quietly_with_141(tmp_path, command):
    """`lima-align data stats F | head`: rich ended the process itself with status 1 on the broken pipe."""
    import json
    import os
    import subprocess
    import sys

    answers = tmp_path / "g.jsonl"
    answers.write_text(json.dumps({"id": "m:p1", "prompt_id": "p1", "model": "m", "output": "Yes.",
                                   "messages": [{"role": "user", "content": "Q?"}], "finish_reason": "eot"}) + "\n")
    args = ["data", "stats", "seed:train"] if command == "data stats" else ["answers", str(answers)]
    p = subprocess.Popen([sys.executable, "-m", "lima_align", *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "LIMA_ALIGN_CACHE": str(tmp_path / "cache")})
    p.stdout.close()  # before the process has printed anything
    err = p.stderr.read()
    assert p.wait(timeout=60) == 141 and err == ""
    assert not (tmp_path / "cache" / "logs").exists()


@pytest.mark.parametrize("flag, value", [("--temperature", "nan"), ("--temperature", "2.5"), ("--max-tokens", "0")])
def test_annotate_dialogue_decoding_flags_take_the_recipes_ranges(tmp_path, capsys, flag, value):
    from lima_align.cli import main

    db = tmp_path / "a.sqlite"
    assert main(["annotate", "create-study", "--db", f"sqlite:///{db}", "--kind", "dialogue", "--name", "d",
                 "--chat-url", "http://127.0.0.1:9/v1", "--chat-model", "m", flag, value]) == 2
    err = capsys.readouterr().err
    assert f"{flag}: must be a number" in err and "generate." in err
    assert not db.exists()  # refused before the database was opened
