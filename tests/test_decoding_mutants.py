"""Decoding settings that mutation testing (benchmarks/mutation.py) found unchecked."""

from __future__ import annotations

from lima_align.config import GenerateConfig
from lima_align.decoding import Decoding, banned_tokens, ids_covering


def test_decoding_takes_every_setting_from_the_config():
    g = GenerateConfig(max_new_tokens=7, temperature=0.3, top_p=0.5, repetition_penalty=1.1, seed=4,
                       repetition_penalty_scope="all")
    assert Decoding.from_config(g) == Decoding(7, 0.3, 0.5, 1.1, 4, "all")


class _Added:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class _Tok:
    """A tokenizer as banned_tokens sees one: special ids, the added-token table, a length."""

    all_special_ids = [0, 1, None, 10]  # None: an unset special token; 10: past the vocabulary
    added_tokens_decoder = {5: _Added(special=True), 6: _Added(special=False), 7: _Added()}

    def __len__(self):
        return 10


class _PlainTok:
    all_special_ids = [3]

    def __len__(self):
        return 10


def test_banned_tokens_are_the_special_ones_in_the_vocabulary_but_the_allowed():
    # 5 is marked special only in the added-token table (as Gemma's <unused*> tokens are); 6 and 7 are
    # ordinary added text; None and 10 name no token of this vocabulary; 1 is an allowed end marker
    assert banned_tokens(_Tok(), [1]) == [0, 5]
    assert banned_tokens(_PlainTok(), []) == [3]  # a tokenizer without an added-token table


class _LengthTok:
    """Decodes token i to i characters: token 0 is a special token, empty once skipped."""

    def decode(self, ids, skip_special_tokens=False):
        return "".join("x" * i for i in ids)


def test_ids_covering_is_the_shortest_prefix_reaching_each_length():
    ids = [3, 0, 1, 4, 2, 0, 5]
    tok = _LengthTok()
    text_len = [len(tok.decode(ids[:k])) for k in range(len(ids) + 1)]
    for n in range(text_len[-1] + 1):
        shortest = min(k for k in range(len(ids) + 1) if text_len[k] >= n)
        assert ids_covering(tok, ids, n) == ids[:shortest], n
    assert ids_covering(tok, ids, 0) == []  # the model began the next turn at once: no answer tokens
