"""What makes a checkpoint folder a complete Hugging Face model outside lima-align.

Besides the weights and `lima_align_checkpoint.json` (checkpoint.py), a checkpoint or an exported
model holds:

* a tokenizer whose chat template renders our turn format: for the plain format a Jinja template
  written here that produces `User:\\n...<EOT>\\nAssistant:\\n` (system text and BOS as training
  had them); for the template format the tokenizer's own template, with the recipe's default
  system text put in front when a conversation has none (as `TurnFormat` does);
* `generation_config.json` whose `eos_token_id` lists the end-of-turn token and EOS, with LIMA's
  decoding (decoding.py) as defaults and the special tokens lima-align never samples suppressed;
* a model card, `README.md` (model_card.py).

Without these, `transformers`, vLLM or llama.cpp prompt a plain-format model with no template at all
and let it run past the end of its turn.

The template renders text and the tokenizer then reads the whole text at once, while training
tokenised each piece on its own; `check_template` compares the two on probe conversations, and the
card says whether they agreed. Special-token text typed inside a message is the one known
difference: lima-align keeps it as text, `apply_chat_template` reads it as the token.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import GenerateConfig
from .decoding import Decoding, banned_tokens
from .records import Message
from .turns import LABELS, TurnFormat

# Conversations the template is checked on: several turns, with and without a system message.
PROBES: list[list[Message]] = [
    [Message("user", "How do I boil an egg?")],
    [Message("user", "Write a poem about the sea."), Message("assistant", "Waves fold and unfold."),
     Message("user", "Now a shorter one, please.")],
    [Message("system", "Answer briefly."), Message("user", "What is the capital of Italy?"),
     Message("assistant", "Rome."), Message("user", "And of France?")],
]


def _lit(text: str) -> str:
    """A Jinja string literal for text (quotes, backslashes and newlines escaped, the rest kept)."""
    return json.dumps(text, ensure_ascii=False)


def starts_with_bos(tok: Any) -> bool:
    """Whether the tokenizer begins a text with BOS (TurnFormat's plain format then does too)."""
    bos = tok.bos_token_id
    return bos is not None and tok("x", add_special_tokens=True)["input_ids"][:1] == [bos]


def plain_template(tok: Any, eot: str, system: str | None) -> str:
    """Jinja for the plain format: each turn `Label:\\n{content}{eot}`, turns joined by a newline."""
    labels = "{" + ", ".join(f"{_lit(k)}: {_lit(v)}" for k, v in LABELS.items()) + "}"
    bos = _lit(tok.bos_token) if starts_with_bos(tok) else '""'
    lines = [
        "{#- lima-align plain turn format: User:/Assistant: turns, each ended by the end-of-turn token -#}",
        f"{{%- set eot = {_lit(eot)} -%}}",
        f"{{%- set labels = {labels} -%}}",
        '{%- set ns = namespace(sep="") -%}',
        f"{{{{- {bos} -}}}}",
    ]
    if system is not None:
        lines += ['{%- if not messages or messages[0]["role"] != "system" -%}',
                  f'{{{{- "System:\\n" + {_lit(system)} + eot -}}}}',
                  '{%- set ns.sep = "\\n" -%}',
                  "{%- endif -%}"]
    lines += [
        "{%- for message in messages -%}",
        '{%- if message["role"] not in labels -%}'
        '{{- raise_exception("role must be system, user or assistant, not " + message["role"]) -}}{%- endif -%}',
        '{%- if message["content"] is not string -%}'
        '{{- raise_exception("message content must be text") -}}{%- endif -%}',
        '{{- ns.sep + labels[message["role"]] + ":\\n" + message["content"] + eot -}}',
        '{%- set ns.sep = "\\n" -%}',
        "{%- endfor -%}",
        '{%- if add_generation_prompt -%}{{- ns.sep + "Assistant:\\n" -}}{%- endif -%}',
    ]
    return "\n".join(lines)


def with_default_system(template: str, system: str) -> str:
    """The tokenizer's own template, given `system` as the first message when a conversation has none."""
    head = ('{%- if not messages or messages[0]["role"] != "system" -%}'
            f'{{%- set messages = [{{"role": "system", "content": {_lit(system)}}}] + messages -%}}'
            "{%- endif -%}\n")
    return head + template


def chat_template_for(fmt: TurnFormat) -> str:
    """The chat template that renders `fmt`'s prompts."""
    if fmt.kind == "plain":
        return plain_template(fmt.tok, fmt.tok.convert_ids_to_tokens(fmt.eot_id), fmt.system)
    template = fmt.tok.chat_template
    return with_default_system(template, fmt.system) if fmt.system and isinstance(template, str) else template


def check_template(fmt: TurnFormat, template: str) -> list[str]:
    """Probe conversations whose template ids differ from lima-align's (empty: the template is exact).
    A probe lima-align itself cannot render (a template that refuses system messages) is skipped."""
    cases = []
    for p in PROBES:
        for conv, gen in ((p, True), (p + [Message("assistant", "Sure.")], False)):
            try:
                cases.append((conv, gen, fmt.encode_prompt(conv) if gen else fmt.encode(conv).input_ids))
            except Exception:  # noqa: BLE001 - whatever the base template raises, it raised in training too
                continue
    tok = fmt.tok
    old = tok.chat_template
    tok.chat_template = template
    bad = []
    try:
        for conv, gen, expected in cases:
            try:
                got = _ids(tok.apply_chat_template([m.to_dict() for m in conv], add_generation_prompt=gen,
                                                   tokenize=True))
            except Exception:  # noqa: BLE001 - a template that fails where training did not is a mismatch
                got = None
            if got != expected:
                bad.append(" / ".join(m.role for m in conv) + (" + generation prompt" if gen else ""))
    finally:
        tok.chat_template = old
    return bad


def _ids(x: Any) -> list[int]:
    if hasattr(x, "keys"):
        x = x["input_ids"]
    return list(x[0] if x and isinstance(x[0], list) else x)


def save_tokenizer(folder: str | Path, fmt: TurnFormat) -> tuple[str, list[str]]:
    """Save fmt's tokenizer with the chat template that renders its format; returns the template and the
    probe conversations it renders differently from lima-align (normally none)."""
    template = chat_template_for(fmt)
    mismatches = check_template(fmt, template)
    tok = fmt.tok
    old = tok.chat_template
    tok.chat_template = template  # on the caller's tokenizer only while saving
    try:
        tok.save_pretrained(folder)
    finally:
        tok.chat_template = old
    return template, mismatches


def write_generation_config(folder: str | Path, fmt: TurnFormat, model_config: Any = None) -> dict[str, Any]:
    """generation_config.json: stop at the end of turn or EOS, LIMA's sampling, special tokens suppressed."""
    from transformers import GenerationConfig

    folder = Path(folder)
    if (folder / "generation_config.json").is_file():
        gc = GenerationConfig.from_pretrained(folder)
    elif model_config is not None:
        gc = GenerationConfig.from_model_config(model_config)
    else:
        gc = GenerationConfig()
    dec = Decoding.from_config(GenerateConfig())
    tok = fmt.tok
    gc.eos_token_id = list(fmt.stop_ids)
    gc.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    gc.bos_token_id = tok.bos_token_id
    gc.do_sample = dec.temperature > 0
    gc.temperature, gc.top_p, gc.repetition_penalty = dec.temperature, dec.top_p, dec.repetition_penalty
    gc.max_new_tokens = dec.max_new_tokens
    gc.suppress_tokens = banned_tokens(tok, fmt.stop_ids) or None
    gc._from_model_config = False  # else generate may rebuild it from config.json and drop these
    gc.save_pretrained(folder)
    return gc.to_diff_dict()



def write_hf_files(folder: str | Path, fmt: TurnFormat, *, base: str, method: str | None, recipe_yaml: str | None,
                   data: str, adapter: bool, model_config: Any = None, title: str = "", note: str = "") -> list[str]:
    """Tokenizer with its chat template, generation_config.json and README.md in `folder` (weights already
    there); returns the probe conversations the template renders differently (normally none)."""
    from .model_card import card_text

    folder = Path(folder)
    template, mismatches = save_tokenizer(folder, fmt)
    write_generation_config(folder, fmt, model_config)
    card = card_text(title=title or folder.name, base=base, method=method, kind=fmt.kind,
                     eot=fmt.tok.convert_ids_to_tokens(fmt.eot_id), stop_ids=list(fmt.stop_ids), tok=fmt.tok,
                     template=template, mismatches=mismatches, data=data, recipe_yaml=recipe_yaml, adapter=adapter,
                     note=note)
    (folder / "README.md").write_text(card, encoding="utf-8")
    return mismatches


def save_checkpoint_files(folder: str | Path, fmt: TurnFormat, recipe: Any, base: str, lm: Any) -> list[str]:
    """What train.py saves next to a checkpoint's weights: tokenizer, generation config and model card."""
    from .config import dump_recipe
    from .model_card import data_section

    folder = Path(folder)
    name = folder.name.removesuffix(".tmp")
    specs = list(recipe.data.train) + [m.dataset for m in recipe.data.mix]
    return write_hf_files(folder, fmt, base=base, method=recipe.train.method, recipe_yaml=dump_recipe(recipe),
                          data=data_section(specs), adapter=recipe.train.method == "lora",
                          model_config=getattr(lm, "config", None), title=f"{folder.parent.parent.name} {name}")
