"""Training mixtures: counts, weights, determinism, clear errors, and the realised counts in run.json."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from conftest import write_examples

from lima_align.config import load_recipe
from lima_align.errors import LimaError
from lima_align.mixture import load_training_set, mixture_report, weighted_counts


def recipe(*overrides):
    return load_recipe(None, list(overrides))


def sources(convs):
    return Counter(c.meta["mix_source"] for c in convs)


def test_weighted_counts_add_up_exactly_and_follow_the_weights():
    assert weighted_counts([1, 1, 1], 10) == [4, 3, 3]  # the remainder goes to the first of equal fractions
    assert weighted_counts([3, 1], 8) == [6, 2]
    assert sum(weighted_counts([0.2, 0.3, 0.5], 7)) == 7


def test_counts_draw_exactly_that_many_on_top_of_whole_datasets(tmp_path):
    single = write_examples(tmp_path / "single.jsonl", n=8)
    r = recipe(f"data.train=[{single}]", "data.mix=[{dataset: 'seed:dialogues', count: 5}]")
    convs = load_training_set(r.data, r.train.seed)
    assert sources(convs) == {str(single): 8, "seed:dialogues": 5}
    dialogues = [c for c in convs if c.meta["mix_source"] == "seed:dialogues"]
    assert all(sum(m.role == "user" for m in c.messages) >= 3 for c in dialogues)


def test_an_entry_with_neither_count_nor_weight_is_used_whole(tmp_path):
    r = recipe("data.train=[]", "data.mix=[{dataset: 'seed:dialogues'}]")
    assert len(load_training_set(r.data, 0)) == 30


def test_weights_share_mix_total(tmp_path):
    a = write_examples(tmp_path / "a.jsonl", n=8)
    b = write_examples(tmp_path / "b.jsonl", n=8)
    r = recipe("data.train=[]", f"data.mix=[{{dataset: {a}, weight: 3}}, {{dataset: {b}, weight: 1}}]",
               "data.mix_total=8")
    assert sources(load_training_set(r.data, 0)) == {str(a): 6, str(b): 2}


def test_draws_are_deterministic_seeded_and_independent_of_other_entries(tmp_path):
    one = recipe("data.train=[]", "data.mix=[{dataset: seed, count: 10}]")
    two = recipe("data.train=[]", "data.mix=[{dataset: seed, count: 10}, {dataset: 'seed:dialogues', count: 3}]")
    ids = lambda r, seed: [c.id for c in load_training_set(r.data, seed) if c.meta["mix_source"] == "seed"]
    assert ids(one, 0) == ids(one, 0)
    assert ids(one, 0) != ids(one, 1)
    # Adding the dialogues does not change which single-turn examples are drawn (the two recipes' contract).
    assert ids(one, 0) == ids(two, 0)


def test_the_two_dialogue_recipes_differ_only_in_the_dialogues():
    single, dialogues = load_recipe("single-turn"), load_recipe("with-dialogues")
    a, b = load_training_set(single.data, single.train.seed), load_training_set(dialogues.data, dialogues.train.seed)
    assert sources(a) == {"seed": 40} and sources(b) == {"seed": 40, "seed:dialogues": 30}
    assert [c.id for c in a] == [c.id for c in b if c.meta["mix_source"] == "seed"]
    da, db = vars(single.data), vars(dialogues.data)
    assert {k for k in da if da[k] != db[k]} == {"mix"}
    assert single.train.output_dir != dialogues.train.output_dir


@pytest.mark.parametrize("overrides, message", [
    (["data.train=[]", "data.mix=[{dataset: seed, count: 5, weight: 1}]"], "has both count and weight"),
    (["data.train=[]", "data.mix=[{dataset: seed, weight: 1}]"], "data.mix_total: is needed"),
    (["data.mix_total=5"], "no data.mix entry has a weight"),
    (["data.train=[]", "data.mix=[{dataset: seed, count: 0}]"], "must be > 0"),
    (["data.train=[seed]", "data.mix=[{dataset: seed, count: 5}]"], "listed twice"),
    (["data.mix=[seed@30]"], "expected a section"),
    (["data.train=[]", "data.mix=[{dataset: seed, cuont: 5}]"], "did you mean 'data.mix[0].count'"),
    (["data.train=[]"], "no training datasets"),
])
def test_bad_mixtures_are_refused_when_the_recipe_loads(overrides, message):
    with pytest.raises(LimaError, match=re.escape(message)):
        recipe(*overrides)


def test_asking_for_more_than_a_dataset_holds_names_the_entry_and_the_size():
    r = recipe("data.train=[]", "data.mix=[{dataset: 'seed:dialogues', count: 31}]")
    with pytest.raises(LimaError) as e:
        load_training_set(r.data, 0)
    assert "data.mix[0]" in str(e.value) and "holds 30 examples" in str(e.value) and "at most 30" in str(e.value)


def test_mixture_report_counts_drawn_and_trained():
    r = recipe("data.train=[]", "data.mix=[{dataset: seed, count: 4}, {dataset: 'seed:dialogues', count: 2}]")
    convs = load_training_set(r.data, 0)
    rep = mixture_report(convs, convs[:3] + convs[-1:])
    assert rep == {"seed": {"drawn": 4, "trained": 3}, "seed:dialogues": {"drawn": 2, "trained": 1}}


def test_training_records_the_realised_mixture_in_run_json(tiny_gemma, tmp_path):
    from lima_align.train import train

    single = write_examples(tmp_path / "single.jsonl", n=6)
    multi = write_examples(tmp_path / "multi.jsonl", n=6, dialogue=True)
    r = load_recipe(None, [f"model.name={tiny_gemma}", "data.train=[]", f"train.output_dir={tmp_path / 'run'}",
                           f"data.mix=[{{dataset: {single}, count: 4}}, {{dataset: {multi}, count: 2}}]",
                           "data.max_seq_len=64", "train.micro_batch_tokens=128", "train.batch_size=4",
                           "train.epochs=1", "train.save_from_epoch=1", "train.save_to_epoch=1",
                           "train.precision=fp32", "train.method=lora"])
    run = train(r, log=lambda *_: None)
    data = json.loads((run / "run.json").read_text())["data"]
    assert data["mixture"] == {str(single): {"drawn": 4, "trained": 4}, str(multi): {"drawn": 2, "trained": 2}}
    assert data["examples"] == 6
