"""The rating scales and verdict vocabularies have one owner (verdicts.py): every command's --scale choices,
the annotation app's form values and the ablation's Fail/Pass/Excellent points come from it."""

from __future__ import annotations

import argparse

from lima_align import verdicts
from lima_align.analyze.ablate import FPE_POINTS
from lima_align.annotate.studies import SCALES as FORM_SCALES
from lima_align.cli import make_parser
from lima_align.judge_text import parse_score


def scale_choices(parser: argparse.ArgumentParser, *path: str) -> list[str]:
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return list(next(a for a in parser._actions if "--scale" in a.option_strings).choices)


def test_every_scale_flag_offers_the_owned_scales():
    p = make_parser()
    for path in (("judge", "absolute"), ("annotate", "create-study"), ("select",)):
        assert scale_choices(p, *path) == list(verdicts.SCALES), path


def test_derived_vocabularies_follow_the_owner():
    assert FORM_SCALES == {k: tuple(str(v) for v in vs) for k, vs in verdicts.SCALES.items()}
    assert FPE_POINTS == {"fail": 1, "pass": 2, "excellent": 3}
    assert verdicts.ORDERS == ("ab", "ba") and verdicts.VERDICTS == ("a", "tie", "b")


def test_judges_parse_each_scale_into_its_values():
    assert parse_score("Rating: excellent", "fail_pass_excellent") in verdicts.SCALES["fail_pass_excellent"]
    assert parse_score("Score: 5", "helpfulness_6") in verdicts.SCALES["helpfulness_6"]
