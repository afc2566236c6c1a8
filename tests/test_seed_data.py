"""The shipped seed set meets the requirements it was written to (validity, size, spread, no duplicates)."""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter

import pytest

from lima_align.errors import LimaError
from lima_align.records import Conversation
from lima_align.dataset_specs import SEED_DIR, SPLITS, is_seed, load_dataset, spec_paths

SOURCE = "lima-align-seed"


@pytest.fixture(scope="module")
def splits() -> dict[str, list[Conversation]]:
    return {
        "train": load_dataset("seed", purpose="train"),
        "dialogues": load_dataset("seed:dialogues", purpose="train"),
        "dev": load_dataset("seed:dev", purpose="prompt"),
        "test": load_dataset("seed:test", purpose="prompt"),
    }


def everything(splits) -> list[tuple[str, Conversation]]:
    return [(name, c) for name, convs in splits.items() for c in convs]


def answer_words(c: Conversation) -> int:
    return sum(len(m.content.split()) for m in c.messages if m.role == "assistant")


def user_turns(c: Conversation) -> int:
    return sum(m.role == "user" for m in c.messages)


# ------------------------------------------------------------------ loading and validity


def test_seed_specs_resolve():
    assert is_seed("seed") and is_seed("seed:test") and not is_seed("data/train.jsonl")
    for spec in SPLITS:
        assert all(p.exists() and p.parent == SEED_DIR for p in spec_paths(spec))
    with pytest.raises(LimaError, match="unknown seed split"):
        spec_paths("seed:nope")


def test_seed_all_is_train_plus_dialogues(splits):
    all_ = load_dataset("seed:all", purpose="train")
    assert [c.id for c in all_] == [c.id for c in splits["train"] + splits["dialogues"]]


def test_training_splits_end_with_assistant(splits):
    for name in ("train", "dialogues"):
        for c in splits[name]:
            assert c.messages[-1].role == "assistant", c.id
            assert c.messages[0].role == "user", c.id


def test_dev_and_test_are_single_user_prompts(splits):
    for name in ("dev", "test"):
        for c in splits[name]:
            assert [m.role for m in c.messages] == ["user"], c.id
            assert c.messages[0].content.strip(), c.id
    with pytest.raises(LimaError):
        load_dataset("seed:test", purpose="train")


def test_ids_unique_across_all_splits(splits):
    ids = Counter(c.id for _, c in everything(splits))
    assert len(ids) >= 250 + 30 + 50 + 100
    assert [i for i, n in ids.items() if n > 1] == []


def test_source_and_meta(splits):
    for name, c in everything(splits):
        assert c.source == SOURCE, (name, c.id)
        assert isinstance(c.meta.get("domain"), str) and c.meta["domain"], (name, c.id)
        assert isinstance(c.meta.get("kind"), str) and c.meta["kind"], (name, c.id)


# ------------------------------------------------------------------ size and spread


def test_single_turn_training_set(splits):
    train = splits["train"]
    assert len(train) >= 250
    assert all(user_turns(c) == 1 for c in train)
    domains = Counter(c.meta["domain"] for c in train)
    assert len(domains) >= 15, domains


def test_kinds(splits):
    kinds = Counter(c.meta["kind"] for c in splits["train"])
    assert kinds["refusal"] >= 13, kinds
    assert kinds["format"] >= 8, kinds


def test_length_spread(splits):
    words = [answer_words(c) for c in splits["train"]]
    assert sum(w < 60 for w in words) >= 10
    assert sum(150 <= w <= 400 for w in words) > len(words) / 2
    assert sum(w > 400 for w in words) >= 10


def test_dialogues(splits):
    dlg = splits["dialogues"]
    assert len(dlg) == 30
    for c in dlg:
        assert user_turns(c) >= 3, c.id
        assert c.meta["kind"] == "dialogue", c.id


def test_dev_and_test_sizes(splits):
    assert len(splits["dev"]) == 50
    test = splits["test"]
    assert len(test) >= 100
    assert sum(c.meta["kind"] == "sensitive" for c in test) >= 10


def test_test_has_domains_unseen_in_training(splits):
    seen = {c.meta["domain"] for c in splits["train"] + splits["dialogues"]}
    unseen = {c.meta["domain"] for c in splits["test"]} - seen
    assert unseen, "the test split should probe some domains absent from training"


# ------------------------------------------------------------------ duplicates


def normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def shingles(text: str, n: int = 5) -> frozenset[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    if len(words) < n:
        return frozenset([tuple(words)])
    return frozenset(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def test_helpers_detect_duplicates():
    a = "How do I boil an egg so that the yolk stays soft and runny?"
    assert normalise(a) == normalise("how do I boil an egg, so that the yolk stays soft AND runny!")
    assert jaccard(shingles(a), shingles(a + " Thanks!")) >= 0.3
    assert jaccard(shingles(a), shingles("Write a sonnet about the sea at night in winter.")) < 0.3


def test_no_exact_duplicate_prompts(splits):
    firsts = Counter(normalise(c.prompt) for _, c in everything(splits))
    assert [t[:60] for t, n in firsts.items() if n > 1] == []


def test_no_near_duplicate_prompts(splits):
    items = [(f"{name}/{c.id}", shingles(c.prompt)) for name, c in everything(splits)]
    close = [(a, b, round(jaccard(sa, sb), 2)) for (a, sa), (b, sb) in itertools.combinations(items, 2)
             if jaccard(sa, sb) >= 0.3]
    assert close == []


# ------------------------------------------------------------------ format answers


def extract_json(answer: str):
    fenced = re.findall(r"```json[^\n]*\n(.*?)```", answer, re.S)
    if fenced:
        return [json.loads(block) for block in fenced]
    text = answer.strip()
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    assert starts, "no JSON in the answer"
    start = min(starts)
    end = max(text.rfind("}"), text.rfind("]")) + 1
    return [json.loads(text[start:end])]


def test_json_format_answers_parse(splits):
    checked = 0
    for c in splits["train"] + splits["dialogues"]:
        if c.meta["kind"] != "format" or "json" not in c.prompt.lower():
            continue
        answer = next(m.content for m in c.messages if m.role == "assistant")
        try:
            parsed = extract_json(answer)
        except (json.JSONDecodeError, AssertionError) as e:
            pytest.fail(f"{c.id}: the JSON in its answer does not parse: {e}")
        assert parsed and all(p is not None for p in parsed), c.id
        checked += 1
    assert checked >= 1, "expected at least one JSON format example"
