"""LIMA's decoding settings and what every backend shares about an answer, without torch.

`Decoding` holds the settings (LIMA's defaults), `Reply` is one answer as every backend returns
it, `ROLE_STOP` ends a plain-format answer whose model began the user's next turn, `banned_tokens`
are the special tokens never sampled, and `prompt_seed` gives each prompt its own seed (the
transformers sampler in sampler.py and vLLM both use it), so a prompt's sampled answer does not
depend on its batch or on a resume. The API client, the server's request checks and the vLLM
backend read these without importing torch; the transformers backend samples with
`sampler.LimaSampler`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

from .config import GenerateConfig

Scope = Literal["generated", "all"]
ROLE_STOP = "\nUser:"  # plain format: a base model that starts the user's next turn is done


@dataclass
class Decoding:
    max_new_tokens: int = 2048
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.2
    seed: int = 0
    # LIMA penalises tokens the model already generated; "all" also penalises the prompt's tokens
    # (transformers' and vLLM's built-in penalty), which pushes a model away from the end-of-turn
    # token that closes every user turn.
    repetition_penalty_scope: Scope = "generated"

    @classmethod
    def from_config(cls, g: GenerateConfig) -> Decoding:
        return cls(g.max_new_tokens, g.temperature, g.top_p, g.repetition_penalty, g.seed,
                   g.repetition_penalty_scope)


@dataclass
class Reply:
    text: str
    finish_reason: str
    prompt_tokens: int
    output_tokens: int
    output_ids: list[int] | None = None  # the answer's own tokens (see generate.py's docstring)


def banned_tokens(tok: Any, allowed: list[int]) -> list[int]:
    """Special tokens the model must never sample (all but the end markers in `allowed`).

    Only tokens marked special are banned. Tokenizers also list ordinary text as "added" tokens:
    Gemma's newline runs ("\\n", "\\n\\n", ...) and HTML tags are added but not special, and
    banning them kept the model from ever writing a line break.
    """
    special = set(tok.all_special_ids)
    for i, added in (getattr(tok, "added_tokens_decoder", None) or {}).items():
        if getattr(added, "special", False):
            special.add(i)
    return sorted(t for t in special - set(allowed) if t is not None and t < len(tok))


def prompt_seed(seed: int, prompt_ids: list[int]) -> int:
    """A prompt's own sampling seed: the decoding seed and the prompt's token ids, nothing else.

    A 63-bit hash of both, so every seed a recipe or a request accepts gives its own stream (a seed
    folded modulo 2**31 made 0 and 2**62 sample the same text), and it fits the signed 64-bit seed
    that torch generators and vLLM take.
    """
    key = json.dumps([seed, prompt_ids]).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") >> 1


def ids_covering(tok: Any, ids: list[int], n_chars: int) -> list[int]:
    """The shortest prefix of ids whose text reaches n_chars characters: the answer's tokens when the
    model went on to begin a "User:" turn (a token that straddles the cut stays, so no answer text is lost)."""
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(tok.decode(ids[:mid], skip_special_tokens=True)) >= n_chars:
            hi = mid
        else:
            lo = mid + 1
    return ids[:lo]
