"""`lima-align serve` under hostile or careless clients: huge histories."""

from __future__ import annotations

import copy
import random
from types import SimpleNamespace

import pytest

from lima_align.config import TurnsConfig
from lima_align.generate import trim_history
from lima_align.records import Message
from lima_align.turns import TurnFormat
from test_serve import tiny_generator


@pytest.fixture(scope="module")
def gen(tiny_llama):
    return tiny_generator(tiny_llama)


def old_trim_history(gen, messages, reserve):
    """The trimming serve did before: render the whole prompt again after every dropped pair."""
    dropped = 0
    system = [m for m in messages[:1] if m.role == "system"]
    body = messages[len(system):]
    while len(body) > 1 and len(gen.prompt_ids(system + body)) + reserve > gen.context:
        body = body[2:]
        dropped += 2
    return system + body, dropped


def conversation(rng, turns, system):
    words = "the quick brown fox jumps over lazy dog egg boil water gravity poem sea".split()
    text = lambda: " ".join(rng.choice(words) for _ in range(rng.choice([1, 2, 5, 20, 60])))  # noqa: E731
    messages = [Message("system", text())] if system else []
    return messages + [Message("user" if i % 2 == 0 else "assistant", text()) for i in range(turns)]


# ----------------------------------------------------------------- trimming


@pytest.mark.parametrize("template", [False, True])
def test_trimming_drops_the_same_turns_as_dropping_pairs_one_by_one(gen, template):
    tok = copy.deepcopy(gen.tok)
    if template:  # a chat template that strips whitespace: a turn can add fewer tokens than its text has
        tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] | trim }}</s>{% endfor %}"
                             "{% if add_generation_prompt %}<assistant>{% endif %}")
    fmt = TurnFormat(tok, TurnsConfig(format="template" if template else "plain", eot="eos"), for_training=False)
    g = SimpleNamespace(tok=tok, prompt_ids=fmt.encode_prompt, context=0)  # what trimming uses of a Generator
    rng = random.Random(0)
    cases = 0
    for _ in range(60):
        messages = conversation(rng, rng.choice([1, 3, 5, 9, 21, 41]), system=rng.random() < 0.5)
        if template and rng.random() < 0.5:
            messages[0] = Message(messages[0].role, " " * 400 + messages[0].content)
        g.context = rng.choice([64, 128, 256, 512])
        reserve = rng.choice([0, 16, 100])
        new, old = trim_history(g, messages, reserve), old_trim_history(g, messages, reserve)
        assert new == old, (g.context, reserve, len(messages))
        cases += old[1] > 0
    assert cases > 20  # most cases really trimmed something


def test_trimming_renders_the_prompt_a_few_times_not_once_per_dropped_pair(gen, monkeypatch):
    messages = conversation(random.Random(1), 4001, system=True)
    renders = [0]
    real = gen.fmt.encode_prompt

    def counted(m):
        renders[0] += 1
        return real(m)

    monkeypatch.setattr(gen.fmt, "encode_prompt", counted)
    kept, dropped = trim_history(gen, messages, reserve=24)
    assert dropped > 3900 and kept[0].role == "system" and kept[-1] == messages[-1]
    assert renders[0] < 30  # dropping pairs one by one rendered it ~2,000 times
