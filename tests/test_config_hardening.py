"""Recipe hardening: ranges and finiteness of every number, every problem at once, problems named by the
override that caused them, YAML syntax errors as LimaErrors; and the same through the `lima-align` CLI."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from lima_align.cli import main
from lima_align.config import Recipe, load_recipe
from lima_align.errors import LimaError
from lima_align.recipe_loading import Range, range_of


def problems(overrides: list[str], path: str | Path | None = "quickstart") -> list:
    with pytest.raises(LimaError) as e:
        load_recipe(path, overrides)
    return e.value.problems


def numeric_fields(cls: type = Recipe, prefix: str = ""):
    """(dotted key, field, number type, optional) for every int/float field of a recipe dataclass tree."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        args = typing.get_args(tp)
        if typing.get_origin(tp) is list and args and dataclasses.is_dataclass(args[0]):
            yield from numeric_fields(args[0], f"{prefix}{f.name}[0].")
        elif dataclasses.is_dataclass(tp):
            yield from numeric_fields(tp, f"{prefix}{f.name}.")
        else:
            inner = [a for a in args if a is not type(None)] if args else [tp]
            if inner and inner[0] in (int, float):
                yield f"{prefix}{f.name}", f, inner[0], type(None) in args


NUMERIC = list(numeric_fields())


def outside(rng: Range) -> float:
    """A value just outside the range."""
    if rng.lo is not None:
        return rng.lo if rng.lo_open else rng.lo - 1
    return rng.hi if rng.hi_open else rng.hi + 1


def override_for(key: str, value) -> list[str]:
    """An override setting `key` (data.mix[0].x becomes a one-entry data.mix)."""
    if key.startswith("data.mix[0]."):
        return ["data.train=[]", f"data.mix=[{{dataset: seed, {key.rsplit('.', 1)[1]}: {value}}}]", "data.mix_total=9"]
    return [f"{key}={value}"]


# ------------------------------------------------------------------ every number has a range


def test_the_walk_finds_the_numbers():
    keys = {k for k, *_ in NUMERIC}
    assert {"train.lr", "train.adam_beta1", "train.max_grad_norm", "generate.temperature", "train.lora.dropout",
            "data.mix[0].weight", "quickstart.eval_limit"} <= keys


@pytest.mark.parametrize("key, f, tp, optional", NUMERIC, ids=[k for k, *_ in NUMERIC])
def test_every_number_has_a_range_holding_its_default(key, f, tp, optional):
    rng = range_of(f)
    assert rng is not None, f"{key} has no range"
    default = dataclasses.MISSING if f.default is dataclasses.MISSING else f.default
    assert default is None and optional or default in rng, (key, default, rng)


@pytest.mark.parametrize("key, f, tp, optional", NUMERIC, ids=[k for k, *_ in NUMERIC])
def test_a_value_just_outside_every_range_is_refused_naming_the_override(key, f, tp, optional):
    rng = range_of(f)
    value = outside(rng)
    value = int(value) if tp is int else value
    probs = problems(override_for(key, value))
    assert len(probs) == 1, [str(p) for p in probs]
    p = probs[0]
    assert p.where.startswith("override ") and key.split("[0].")[-1] in p.where
    assert p.what.startswith(f"must be {rng}, got ") and p.fix.startswith(f"use a value {rng}")


FLOATS = [(k, f) for k, f, tp, _ in NUMERIC if tp is float]


@pytest.mark.parametrize("bad", ["nan", ".nan", "inf", "-.inf", "1e400"])
@pytest.mark.parametrize("key, f", FLOATS, ids=[k for k, _ in FLOATS])
def test_no_float_takes_nan_or_infinity(key, f, bad):
    (p,) = problems(override_for(key, bad))
    assert p.what.startswith("must be a finite number, got ")
    assert f"a number {range_of(f)}" in p.fix


def test_ranges_are_listed_with_the_fields(capsys):
    assert main(["config", "show", "--fields"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("train.adam_beta1 "))
    assert line.endswith("[allowed: in [0, 1)]")


# ------------------------------------------------------------------ the issue's cases, exactly

ISSUE_CASES = [  # the override -> the start of its one problem
    ("train.lr=inf", "override train.lr=inf", "must be a finite number, got inf"),
    ("train.weight_decay=nan", "override train.weight_decay=nan", "must be a finite number, got nan"),
    ("train.max_grad_norm=-1", "override train.max_grad_norm=-1", "must be > 0, got -1"),
    ("generate.temperature=nan", "override generate.temperature=nan", "must be a finite number, got nan"),
    ("train.lr=nan", "override train.lr=nan", "must be a finite number, got nan"),
    ("train.adam_beta1=2", "override train.adam_beta1=2", "must be in [0, 1), got 2"),
    ("train.adam_beta2=1", "override train.adam_beta2=1", "must be in [0, 1), got 1"),
    ("train.lr=1.5", "override train.lr=1.5", "must be in (0, 1], got 1.5"),
    ("train.seed=-1", "override train.seed=-1", "must be in [0, 4294967295], got -1"),
    ("train.seed=" + "9" * 400, "override train.seed=" + "9" * 400, "must be in [0, 4294967295], got " + "9" * 400),
    ("generate.top_p=.nan", "override generate.top_p=.nan", "must be a finite number, got nan"),
    ("data.mix=[{dataset: seed, count: 0}]", "override data.mix=[{dataset: seed, count: 0}]: data.mix[0].count",
     "must be > 0, got 0"),
    ("train.epochs=many", "override train.epochs=many", "expected int, got 'many'"),
    ("train.lr=null", "override train.lr=null", "expected float, got null"),
    ("train.lrr=1", "override train.lrr=1", "unknown key"),
    ("train=5", "override train=5", "expected a section (mapping), got int"),
    ("data.mix=[seed]", "override data.mix=[seed]: data.mix[0]", "expected a section (mapping), got str"),
    ("data.train=[unclosed", "override data.train=[unclosed", "not valid YAML (line 1, column 10 of the value)"),
    ("data.train={a: [1}", "override data.train={a: [1}", "not valid YAML (line 1, column 7 of the value)"),
    ("train..lr=1", "override train..lr=1", "expected key=value"),
]


@pytest.mark.parametrize("override, where, what", ISSUE_CASES, ids=[c[0][:40] for c in ISSUE_CASES])
def test_a_bad_override_is_one_problem_naming_it_with_a_fix(override, where, what):
    (p,) = problems([override])
    assert p.where == where
    assert p.what == what or p.what.startswith(what + ": "), p.what
    assert p.fix


# ------------------------------------------------------------------ every problem at once


def test_types_ranges_and_cross_field_rules_are_listed_together(tmp_path):
    r = tmp_path / "bad.yaml"
    r.write_text("train:\n  epochs: many\n  lr: abc\n  save_from_epoch: 11\ngenerate:\n  top_p: 2\n")
    probs = problems([], r)
    assert [p.where for p in probs] == [f"{r}: train.epochs", f"{r}: train.lr", f"{r}: generate.top_p",
                                        f"{r}: train.save_from_epoch"]
    assert all(p.fix for p in probs)  # type errors too


def test_a_cross_field_rule_about_a_refused_value_is_left_out():
    # train.lr stands in at its default for the cross-field rules; "lr_final above train.lr (1e-05)" would
    # be about that default, not about anything the user wrote
    (p,) = problems(["train.lr=-1", "train.lr_final=1e-4"])
    assert p.where == "override train.lr=-1"
    (p,) = problems(["data.train=[]", "data.mix=[{dataset: seed, weight: .nan}]", "data.mix_total=5"])
    assert p.where.endswith("data.mix[0].weight")  # not also "data.mix_total: no entry has a weight"


def test_a_refused_value_does_not_hide_other_cross_field_rules():
    probs = problems(["train.adam_beta1=2", "train.save_from_epoch=11", "train.micro_batch_tokens=100"])
    assert [p.where for p in probs] == ["override train.adam_beta1=2", "override train.save_from_epoch=11",
                                        "override train.micro_batch_tokens=100"]


def test_file_problems_name_the_file_and_override_problems_the_override(tmp_path):
    r = tmp_path / "r.yaml"
    r.write_text("train:\n  lr: .inf\n  weight_decay: .nan\ngenerate:\n  top_p: 2\n")
    probs = problems(["generate.top_p=0.5", "generate.temperature=-1"], r)
    assert [p.where for p in probs] == [f"{r}: train.lr", f"{r}: train.weight_decay",
                                        "override generate.temperature=-1"]  # top_p: fixed by its override


def test_a_section_override_names_itself_and_the_key_inside():
    (p,) = problems(["train={lr: .nan, epochs: 2}"])
    assert p.where == "override train={lr: .nan, epochs: 2}: train.lr"


def test_a_later_override_of_the_section_owns_its_keys():
    (p,) = problems(["train.lr=.nan", "train={lr: -1}"])
    assert p.where == "override train={lr: -1}: train.lr" and "got -1" in p.what


def test_a_good_recipe_still_loads():
    r = load_recipe("quickstart", ["train.lr=2e-4", "train.max_grad_norm=null", "generate.temperature=0"])
    assert r.train.lr == 2e-4 and r.train.max_grad_norm is None and r.generate.temperature == 0
    assert math.isfinite(r.train.weight_decay)


# ------------------------------------------------------------------ YAML and file errors


def test_yaml_error_in_a_file_names_line_and_column(tmp_path):
    r = tmp_path / "broken.yaml"
    r.write_text("train:\n  epochs: 3\n  lr: [1e-5\n  batch_size: 8\n")
    (p,) = problems([], r)
    file, line, column = p.where.rsplit(":", 2)
    assert file == str(r) and int(line) in (3, 4) and int(column) >= 1
    assert p.what.startswith("not valid YAML") and p.fix


def test_yaml_errors_in_a_file_and_an_override_are_listed_together(tmp_path):
    r = tmp_path / "broken.yaml"
    r.write_text("train: {lr: 1\n")
    probs = problems(["data.train=[x"], r)
    assert [p.where.split(":")[0] for p in probs] == [str(r), "override data.train=[x"]


@pytest.mark.parametrize("content, what", [
    (b"\xff\xfe not utf-8", "not UTF-8 text"),
    (b"[1, 2]\n", "a recipe must be a mapping of sections, got list"),
])
def test_unreadable_recipe_files(tmp_path, content, what):
    r = tmp_path / "r.yaml"
    r.write_bytes(content)
    (p,) = problems([], r)
    assert p.where == str(r) and p.what.startswith(what) and p.fix


def test_a_folder_is_not_a_recipe(tmp_path):
    (p,) = problems([], tmp_path)
    assert p.where == str(tmp_path) and p.what.startswith("cannot read the recipe")


# ------------------------------------------------------------------ through the CLI


CLI_CASES = [
    (["train", "quickstart", "train.lr=inf"], "error: override train.lr=inf: must be a finite number"),
    (["train", "quickstart", "train.adam_beta1=2"], "error: override train.adam_beta1=2: must be in [0, 1)"),
    (["train", "quickstart", "data.train=[unclosed"], "error: override data.train=[unclosed: not valid YAML"),
    (["generate", "--recipe", "quickstart", "generate.temperature=nan"],
     "error: override generate.temperature=nan: must be a finite number"),
    (["config", "show", "quickstart", "train.epochs=x", "train.lr=2", "train.save_from_epoch=99"],
     "error: 3 problems:"),
]


@pytest.mark.parametrize("argv, first", CLI_CASES, ids=[" ".join(a[2:]) for a, _ in CLI_CASES])
def test_cli_refuses_before_any_compute(argv, first, capsys, monkeypatch):
    import lima_align.generate
    import lima_align.train

    def no_compute(*a, **k):
        raise AssertionError("compute started with a bad recipe")
    monkeypatch.setattr(lima_align.train, "train", no_compute)
    monkeypatch.setattr(lima_align.generate, "generate_file", no_compute)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(first) and "fix: " in err and "Traceback" not in err


def test_cli_subprocess_yaml_error_exits_2_without_traceback(tmp_path):
    r = tmp_path / "r.yaml"
    r.write_text("train:\n  lr: 1e-5\n\tepochs: 2\n")
    out = subprocess.run([sys.executable, "-m", "lima_align.cli", "train", str(r), "train.weight_decay=nan"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.startswith(f"error: {r}:3:") and "Traceback" not in out.stderr


# ------------------------------------------------------------------ the other recipes (curation, ablation grids)


@pytest.mark.parametrize("override, what", [
    ("seed=-1", "must be >= 0, got -1"),
    ("max_bad_fraction=.nan", "must be a finite number, got nan"),
    ("select.temperature=inf", "must be a finite number, got inf"),
    ("wikihow.min_chars=-5", "must be >= 0, got -5"),
])
def test_curation_recipe_numbers(override, what):
    from lima_align.curate.config import CurateRecipe

    with pytest.raises(LimaError) as e:
        load_recipe("curate-lima", ["stackexchange.paths=[dumps]", override], cls=CurateRecipe)
    (p,) = e.value.problems
    assert p.where == f"override {override}" and p.what == what


@pytest.mark.parametrize("override, what", [
    ("seed=-2", "must be >= 0, got -2"),
    ("judge.concurrency=0", "must be > 0, got 0"),
    ("eval.limit=0", "must be > 0, got 0"),
    ("overrides=[train.lr=nan]", "must be a finite number, got nan"),  # the base recipe's own override
])
def test_ablation_recipe_numbers(override, what):
    from lima_align.analyze.ablate import AblationRecipe

    with pytest.raises(LimaError) as e:
        load_recipe("ablate-cpu", [override], cls=AblationRecipe)
    (p,) = e.value.problems
    assert (override in p.where or p.where.endswith("base: override train.lr=nan")) and p.what == what
