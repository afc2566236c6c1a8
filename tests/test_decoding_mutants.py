"""Decoding settings that mutation testing (benchmarks/mutation.py) found unchecked."""

from __future__ import annotations

from lima_align.config import GenerateConfig
from lima_align.decoding import Decoding


def test_decoding_takes_every_setting_from_the_config():
    g = GenerateConfig(max_new_tokens=7, temperature=0.3, top_p=0.5, repetition_penalty=1.1, seed=4,
                       repetition_penalty_scope="all")
    assert Decoding.from_config(g) == Decoding(7, 0.3, 0.5, 1.1, 4, "all")
