"""The judge kinds have one owner (judge_kinds.KINDS): every command that lets a user name a judge offers
exactly those kinds, the ablation recipe accepts exactly those, and make_judges builds each one."""

from __future__ import annotations

import argparse
import typing

import pytest

from lima_align.analyze.ablate import AblationRecipe, JudgeSettings
from lima_align.cli import make_parser
from lima_align.config import load_recipe
from lima_align.errors import LimaError
from lima_align.judges import Judge, can_rate
from lima_align.judge_kinds import KINDS, JudgeKind, JudgeSpec, KindName, kind_names, make_judges

COMPARING = [("judge", "pairwise"), ("judge", "conversations"), ("dialogue", "eval"), ("select",)]
RATING = [("judge", "absolute"), ("judge", "turns")]


def judge_choices(*command: str) -> list[str]:
    parser: argparse.ArgumentParser = make_parser()
    for name in command:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    (flag,) = [a for a in parser._actions if "--judge" in a.option_strings]
    return list(flag.choices)


def full_spec(*kinds: str) -> JudgeSpec:
    return JudgeSpec(kinds=kinds, api_base="http://127.0.0.1:9/v1", api_models=("m",))


def test_every_command_offers_exactly_the_registered_kinds():
    assert len(KINDS) >= 2
    for command in COMPARING:
        assert judge_choices(*command) == list(KINDS), command
    # rating one answer: only the kinds that can, and at least one can
    assert kind_names(rates=True) and all(KINDS[k].can_rate for k in kind_names(rates=True))
    assert [k for k in KINDS if not KINDS[k].can_rate]  # the length baseline, so the filter is exercised
    for command in RATING:
        assert judge_choices(*command) == kind_names(rates=True), command


@pytest.mark.parametrize("kind", list(KINDS))
def test_ablation_recipe_accepts_each_kind_and_make_judges_builds_it(kind):
    settings = load_recipe(None, [f"kind={kind}"], cls=JudgeSettings)
    assert settings.kind == kind
    (judge,) = make_judges(full_spec(kind))
    assert isinstance(judge, KINDS[kind].cls) and isinstance(judge.name, str)
    assert can_rate(judge) == KINDS[kind].can_rate == judge.can_rate


def test_ablation_recipe_refuses_a_kind_not_registered_and_checks_what_a_kind_needs():
    with pytest.raises(LimaError, match="judge.kind"):
        load_recipe(None, ["judge.kind=nosuchjudge"], cls=AblationRecipe)
    needy = [k for k in KINDS if KINDS[k].needs]
    for kind in needy:
        with pytest.raises(LimaError) as e:
            load_recipe(None, [f"judge.kind={kind}", "judge.mode=pairwise"], cls=AblationRecipe)
        assert any("judge." in p.where and "needs" in p.what for p in e.value.problems)


def test_make_judges_keeps_the_order_asked_and_refuses_what_it_cannot_build():
    judges = make_judges(JudgeSpec(kinds=("longest", "api"), api_base="http://127.0.0.1:9/v1", api_models=("a", "b")))
    assert [type(j).__name__ for j in judges] == ["LongestJudge", "ApiJudge", "ApiJudge"]
    with pytest.raises(LimaError, match="unknown judge kind"):
        make_judges(JudgeSpec(kinds=("nosuchjudge",)))
    with pytest.raises(LimaError, match="needs api_base and api_models"):
        make_judges(JudgeSpec(kinds=("api",)))


def test_can_rate_is_part_of_the_judge_protocol():
    assert "can_rate" in Judge.__annotations__
    assert all(isinstance(kind.cls.can_rate, bool) for kind in KINDS.values())


def test_a_new_kind_reaches_every_flag_and_the_recipe_type_follows_the_registry(monkeypatch):
    """The flags read KINDS when the parser is built; the recipe type is KINDS' names (fixed at import)."""
    assert typing.get_args(KindName) == tuple(KINDS)
    assert typing.get_type_hints(JudgeSettings)["kind"] == KindName

    class Shortest:
        name, price, can_rate = "shortest", None, False

    monkeypatch.setitem(KINDS, "shortest", JudgeKind(Shortest, lambda spec: [Shortest()], "shorter wins", "the "
                                                     "'shortest' judge"))
    for command in COMPARING:
        assert "shortest" in judge_choices(*command), command
    for command in RATING:
        assert "shortest" not in judge_choices(*command), command
    assert [type(j) for j in make_judges(JudgeSpec(kinds=("shortest",)))] == [Shortest]
