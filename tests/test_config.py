"""Recipes: LIMA defaults, overrides, every problem reported at once, shipped recipes, `config show`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lima_align.cli import main
from lima_align.config import (RECIPES_DIR, Recipe, describe, dump_recipe, load_recipe, parse_overrides,
                               recipe_to_dict)
from lima_align.errors import LimaError, ProblemList

SHIPPED = sorted(RECIPES_DIR.glob("*.yaml")) if RECIPES_DIR.is_dir() else []
# `config show` prints training recipes; curation and ablation recipes have their own dataclasses
TRAINING = [p for p in SHIPPED if not p.stem.startswith(("curate-", "ablate-"))]
needs_recipes = pytest.mark.skipif(not SHIPPED, reason="no shipped recipes in src/lima_align/recipes yet")


def problems_of(overrides: list[str], path: str | Path | None = None) -> list[str]:
    with pytest.raises(LimaError) as e:
        load_recipe(path, overrides)
    return [str(p) for p in e.value.problems]


# ------------------------------------------------------------------ defaults


def test_defaults_are_limas_recipe():
    r = load_recipe(None)
    t, g = r.train, r.generate
    assert t.method == "full"
    assert t.epochs == 15
    assert t.lr == 1e-5 and t.lr_final == 1e-6
    assert (t.adam_beta1, t.adam_beta2) == (0.9, 0.95)
    assert t.weight_decay == 0.1
    assert t.batch_size == 32
    assert r.data.max_seq_len == 2048
    assert t.warmup_steps == 0
    assert t.residual_dropout_bottom == 0.0 and t.residual_dropout_top == 0.3
    assert (t.save_from_epoch, t.save_to_epoch) == (5, 10)
    assert g.top_p == 0.9 and g.temperature == 0.7 and g.repetition_penalty == 1.2
    assert g.max_new_tokens == 2048
    assert r.data.train == ["seed"] and r.data.loss_on == "assistant"
    assert r == Recipe()


def test_list_defaults_are_not_shared():
    a, b = Recipe(), Recipe()
    a.data.train.append("x.jsonl")
    a.train.lora.target_modules.append("q_proj")
    assert b.data.train == ["seed"] and b.train.lora.target_modules == ["all-linear"]


def test_every_field_has_help():
    rows = describe()
    keys = [k for k, _, _ in rows]
    assert "train.lr" in keys and "train.lora.r" in keys and "generate.top_p" in keys
    assert all(h for _, _, h in rows), [k for k, _, h in rows if not h]


# ------------------------------------------------------------------ overrides


def test_override_float():
    r = load_recipe(None, ["train.lr=2e-4", "train.lr_final=2.0e-5"])
    assert r.train.lr == 2e-4 and isinstance(r.train.lr, float)
    assert r.train.lr_final == 2e-5


def test_override_exponent_without_dot_is_a_float():
    # YAML 1.1 reads "1e-5" as a string; the loader must still give a float
    assert yaml.safe_load("1e-5") == "1e-5"
    r = load_recipe(None, ["train.lr=3e-5", "train.lr_final=1e-6"])
    assert r.train.lr == 3e-5 and isinstance(r.train.lr, float)
    assert r.train.lr_final == 1e-6 and isinstance(r.train.lr_final, float)


def test_override_int_written_for_float():
    r = load_recipe(None, ["train.weight_decay=0"])
    assert r.train.weight_decay == 0.0 and isinstance(r.train.weight_decay, float)


def test_override_lists():
    r = load_recipe(None, ["data.train=[a.jsonl,b.jsonl]", "train.lora.target_modules=q_proj"])
    assert r.data.train == ["a.jsonl", "b.jsonl"]
    assert r.train.lora.target_modules == ["q_proj"]  # one item where a list is expected


def test_override_nested_section():
    r = load_recipe(None, ["train.lora.r=8", "train.method=lora"])
    assert r.train.lora.r == 8 and r.train.method == "lora"
    assert r.train.lora.alpha == 32  # the rest of the section keeps its defaults


def test_override_none_and_bool():
    r = load_recipe(None, ["train.max_grad_norm=null", "train.gradient_checkpointing=true", "data.max_examples=10"])
    assert r.train.max_grad_norm is None
    assert r.train.gradient_checkpointing is True
    assert r.data.max_examples == 10


def test_overrides_apply_on_top_of_a_file(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("train:\n  epochs: 3\n  lr: 2.0e-5\ndata:\n  train: [x.jsonl]\n")
    r = load_recipe(p, ["train.epochs=4"])
    assert r.train.epochs == 4 and r.train.lr == 2e-5 and r.data.train == ["x.jsonl"]
    assert r.train.batch_size == 32  # untouched default


def test_parse_overrides_shapes():
    probs = ProblemList()
    nested = parse_overrides(["a.b.c=1", "a.b.d=x", "e=[1, 2]", "f="], probs)
    assert nested == {"a": {"b": {"c": 1, "d": "x"}}, "e": [1, 2], "f": ""}
    assert not probs
    parse_overrides(["novalue", "a=1", "a.b=2"], probs)
    assert len(probs.problems) == 2
    assert "expected key=value" in str(probs.problems[0])
    assert "both as a value and as a section" in str(probs.problems[1])


# ------------------------------------------------------------------ problems


def test_unknown_key_suggests_nearest_name():
    (msg,) = problems_of(["train.lrr=1e-4"])
    assert "train.lrr" in msg and "unknown key" in msg and "did you mean 'train.lr'?" in msg


def test_unknown_nested_key_suggests_full_name():
    (msg,) = problems_of(["train.lora.alhpa=8"])
    assert "train.lora.alhpa" in msg and "did you mean 'train.lora.alpha'?" in msg


def test_unknown_key_without_a_near_name_lists_the_valid_keys():
    (msg,) = problems_of(["train.lora.zzz=8"])
    assert "valid keys here: r, alpha, dropout, target_modules" in msg


def test_unknown_section_suggests():
    (msg,) = problems_of(["trian.epochs=3"])
    assert "did you mean 'train'?" in msg


def test_bad_literal_suggests():
    (msg,) = problems_of(["train.method=lroa"])
    assert "'lroa' is not one of 'full', 'lora'" in msg and "did you mean 'lora'?" in msg


def test_bad_type():
    (msg,) = problems_of(["train.epochs=many"])
    assert "train.epochs" in msg and "expected int" in msg


def test_section_must_be_a_mapping():
    (msg,) = problems_of(["train=5"])
    assert "train" in msg and "expected a section" in msg


def test_all_problems_in_one_recipe_are_reported_at_once(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  lrr: 1.0e-4\n  method: lroa\n  epochs: many\ngenerate:\n  top_pp: 0.9\n"
                 "data:\n  format: json\n")
    with pytest.raises(LimaError) as e:
        load_recipe(p)
    err = e.value
    assert len(err.problems) == 5
    assert str(err).startswith("5 problems:")
    text = str(err)
    for where in ("train.lrr", "train.method", "train.epochs", "generate.top_pp", "data.format"):
        assert f"{p}: {where}" in text


def test_cross_field_checks_all_reported():
    msgs = problems_of(["train.lr_final=1e-4", "train.save_from_epoch=11", "train.micro_batch_tokens=1024"])
    assert len(msgs) == 3
    text = "\n".join(msgs)
    assert "train.lr_final" in text and "between 0 and train.lr" in text
    assert "train.save_from_epoch" in text and "after train.save_to_epoch (10)" in text
    assert "train.micro_batch_tokens" in text and "smaller than data.max_seq_len (2048)" in text


@pytest.mark.parametrize("override, where", [
    ("train.lr_final=1e-4", "train.lr_final"),
    ("train.save_from_epoch=11", "train.save_from_epoch"),
    ("train.micro_batch_tokens=1024", "train.micro_batch_tokens"),
    ("train.epochs=0", "train.epochs"),
    ("train.residual_dropout_top=1.0", "train.residual_dropout_top"),
    ("generate.top_p=0", "generate.top_p"),
    ("generate.temperature=-1", "generate.temperature"),
    ("data.train=[]", "data.train"),
    ("train.lora.r=0", "train.lora.r"),
])
def test_each_cross_field_check(override, where):
    (msg,) = problems_of([override])
    assert msg.startswith(f"override {override}: ")  # the override is named, not the defaults


def test_cross_field_checks_pass_when_consistent():
    r = load_recipe(None, ["data.max_seq_len=512", "train.micro_batch_tokens=512", "train.save_from_epoch=10",
                           "train.lr_final=1e-5"])
    assert r.train.micro_batch_tokens == 512


def test_yaml_syntax_error_names_the_line(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("train:\n  epochs: 3\n  lr: [1e-5\n  batch_size: 8\n")
    with pytest.raises(LimaError) as e:
        load_recipe(p)
    msg = str(e.value)
    assert "not valid YAML" in msg
    assert f"{p}:" in msg
    line = int(msg.split(f"{p}:")[1].split(":")[0])
    assert 3 <= line <= 4


def test_yaml_tab_error_names_the_line(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("train:\n  epochs: 3\n\tlr: 1\n")
    with pytest.raises(LimaError, match=rf"{p}:3"):
        load_recipe(p)


def test_recipe_must_be_a_mapping(tmp_path):
    p = tmp_path / "list.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(LimaError, match="mapping"):
        load_recipe(p)


def test_empty_recipe_file_is_the_defaults(tmp_path):
    p = tmp_path / "empty.yaml"
    p.write_text("# nothing\n")
    assert load_recipe(p) == Recipe()


def test_missing_recipe_suggests(tmp_path):
    with pytest.raises(LimaError) as e:
        load_recipe(str(tmp_path / "nope.yaml"))
    assert "not found" in str(e.value)


# ------------------------------------------------------------------ shipped recipes


@needs_recipes
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_recipes_load_and_validate(path):
    # curation and ablation recipes have their own top-level dataclass; the rest are training recipes
    extra: list[str] = []
    if path.stem.startswith("curate-"):
        from lima_align.curate.config import CurateRecipe as cls

        extra = ["stackexchange.paths=[dumps]"]  # shipped curation recipes leave the inputs to the user
    elif path.stem.startswith("ablate-"):
        from lima_align.analyze.ablate import AblationRecipe as cls
    else:
        cls = Recipe
    by_path = load_recipe(path, extra, cls=cls)
    by_name = load_recipe(path.stem, extra, cls=cls)
    assert by_path == by_name
    assert isinstance(by_path, cls)
    if not hasattr(by_path, "check"):
        return
    probs = ProblemList()
    by_path.check(probs)
    assert not probs


@needs_recipes
def test_shipped_lima_recipe_matches_defaults_for_training():
    if not (RECIPES_DIR / "lima.yaml").exists():
        pytest.skip("no lima.yaml shipped")
    r = load_recipe("lima")
    assert r.train == dataclass_replace_output(Recipe().train, r.train.output_dir)
    g, d = r.generate, Recipe().generate
    assert (g.top_p, g.temperature, g.repetition_penalty, g.max_new_tokens) == \
        (d.top_p, d.temperature, d.repetition_penalty, d.max_new_tokens)


def dataclass_replace_output(train, output_dir):
    import dataclasses

    return dataclasses.replace(train, output_dir=output_dir)


@needs_recipes
def test_misspelt_shipped_recipe_name_suggests():
    name = SHIPPED[0].stem
    with pytest.raises(LimaError) as e:
        load_recipe(name[:-1] + "x")
    assert f"did you mean {name!r}?" in str(e.value)


# ------------------------------------------------------------------ config show


def _show(capsys, argv: list[str]) -> str:
    assert main(["config", "show", *argv]) == 0
    return capsys.readouterr().out


OVERRIDES = ["train.lr=2e-4", "data.train=[a.jsonl]", "train.lora.r=4", "train.max_grad_norm=null"]


def test_config_show_round_trips(tmp_path, capsys):
    base = tmp_path / "base.yaml"
    base.write_text("train:\n  epochs: 3\n")
    out = _show(capsys, [str(base), *OVERRIDES])
    assert yaml.safe_load(out)["train"]["lr"] == 2e-4
    p = tmp_path / "shown.yaml"
    p.write_text(out)
    back = load_recipe(p)
    assert back == load_recipe(base, OVERRIDES)
    assert back.train.epochs == 3 and back.train.lr == 2e-4 and back.train.lora.r == 4
    assert back.train.max_grad_norm is None and back.data.train == ["a.jsonl"]


def test_config_show_overrides_without_a_recipe(tmp_path, capsys):
    p = tmp_path / "shown.yaml"
    p.write_text(_show(capsys, OVERRIDES))
    assert load_recipe(p) == load_recipe(None, OVERRIDES)


def test_config_show_defaults_round_trip(tmp_path, capsys):
    p = tmp_path / "defaults.yaml"
    p.write_text(_show(capsys, []))
    assert load_recipe(p) == Recipe()
    assert yaml.safe_load(dump_recipe(Recipe())) == recipe_to_dict(Recipe())


@needs_recipes
@pytest.mark.parametrize("path", TRAINING, ids=lambda p: p.stem)
def test_config_show_shipped_round_trips(tmp_path, capsys, path):
    p = tmp_path / "shown.yaml"
    p.write_text(_show(capsys, [path.stem]))
    assert load_recipe(p) == load_recipe(path)


def test_config_show_fields(capsys):
    out = _show(capsys, ["--fields"])
    assert "train.lora.target_modules" in out and "LIMA: 1e-5" in out


def test_config_show_bad_override_returns_2(tmp_path, capsys):
    base = tmp_path / "base.yaml"
    base.write_text("{}\n")
    assert main(["config", "show", str(base), "train.lrr=1", "train.method=lroa"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 2 problems:")
    assert "did you mean 'train.lr'?" in err and "did you mean 'lora'?" in err


def test_empty_section_means_defaults(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("train:\n  # everything default\ngenerate:\n  top_p: 0.9\n")
    assert load_recipe(p) == Recipe()


def test_override_replaces_a_mapping_field_but_merges_sections(tmp_path):
    from lima_align.curate.config import CurateRecipe

    p = tmp_path / "c.yaml"
    p.write_text("stackexchange: {paths: [d]}\nselect: {quotas: {wikihow: 5, 'stackexchange:stem': 3}, n: 9}\n")
    r = load_recipe(p, ["select.quotas={reddit: 2}"], cls=CurateRecipe)
    assert r.select.quotas == {"reddit": 2}  # replaced, not merged into the recipe's mapping
    assert r.select.n == 9 and r.stackexchange.paths == ["d"]  # sibling keys of the section survive
