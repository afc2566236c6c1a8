"""Stats behaviour that mutation testing (benchmarks/mutation.py) found unchecked: swapping a pairwise
judgment's two sides (flip) moves every side-bound field and nothing else."""

from __future__ import annotations

from lima_align.stats import flip


def test_flip_swaps_models_outputs_verdicts_and_vote_orders():
    r = {"prompt_id": "p1", "judge": "j", "model_a": "A", "model_b": "B", "output_a": "ya", "output_b": "yb",
         "verdict": "a", "votes": [{"order": "ab", "verdict": "a", "raw": "x"},
                                   {"order": "ba", "verdict": "tie"},
                                   {"order": "ab", "verdict": None}]}
    assert flip(r) == {
        "prompt_id": "p1", "judge": "j", "model_a": "B", "model_b": "A", "output_a": "yb", "output_b": "ya",
        "verdict": "b", "votes": [{"order": "ba", "verdict": "b", "raw": "x"},
                                  {"order": "ab", "verdict": "tie"},
                                  {"order": "ba", "verdict": None}]}
    assert flip(flip(r)) == r
    assert r["model_a"] == "A" and r["votes"][0]["order"] == "ab"  # the record itself is left as it was


def test_flip_of_a_record_without_votes_or_verdict():
    r = {"model_a": "A", "model_b": "B", "output_a": "ya", "output_b": "yb"}
    assert flip(r) == {"model_a": "B", "model_b": "A", "output_a": "yb", "output_b": "ya", "verdict": None,
                       "votes": []}
