"""Turn format: which tokens are trained, which EOT is chosen and why, template masks."""

from __future__ import annotations

import pytest

from lima_align.config import TurnsConfig
from lima_align.errors import LimaError
from lima_align.models import load_tokenizer
from lima_align.records import Conversation, Message
from lima_align.turns import IGNORE, TurnFormat

CONV = Conversation("c1", [Message("user", "How do I boil an egg?"), Message("assistant", "Nine minutes."),
                           Message("user", "And soft?"), Message("assistant", "Six minutes.")])


@pytest.fixture
def tok(tiny_gemma):
    return load_tokenizer(str(tiny_gemma))


def trained_text(fmt, enc):
    return fmt.tok.decode([t for t, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE])


def test_plain_mask_trains_every_assistant_turn_and_its_eot(tok):
    fmt = TurnFormat(tok, TurnsConfig(format="plain", eot="eos"), method="lora")
    enc = fmt.encode(CONV)
    assert enc.input_ids[0] == tok.bos_token_id
    assert trained_text(fmt, enc) == "Nine minutes.<eos>Six minutes.<eos>"
    # Everything trained is an assistant token; headers and user text are context only.
    assert "User" not in trained_text(fmt, enc) and "boil" not in trained_text(fmt, enc)
    assert enc.labels[: len(enc.labels)] != enc.input_ids


def test_last_assistant_and_all(tok):
    fmt = TurnFormat(tok, TurnsConfig(format="plain", eot="eos"), method="lora")
    assert trained_text(fmt, fmt.encode(CONV, "last_assistant")) == "Six minutes.<eos>"
    enc_all = fmt.encode(CONV, "all")
    assert enc_all.n_trained == len(enc_all.input_ids) - 1  # every token but the first is a target


def test_prompt_encoding_is_a_prefix_of_training_encoding(tok):
    # What the model sees at generation time must be exactly what it was trained on.
    fmt = TurnFormat(tok, TurnsConfig(format="plain", eot="eos"), method="lora")
    full = fmt.encode(CONV).input_ids
    prompt = fmt.encode_prompt(CONV.messages[:3])
    assert full[: len(prompt)] == prompt
    assert full[len(prompt):] == fmt._seg("Six minutes.") + [fmt.eot_id]


def test_eot_choice_full_adds_trained_token_lora_falls_back_to_eos(tok):
    lora = TurnFormat(tok, TurnsConfig(eot="auto"), method="lora")
    assert lora.eot_id == tok.eos_token_id and "EOS" in lora.describe()
    full = TurnFormat(tok, TurnsConfig(eot="auto"), method="full")
    assert full.new_token == "<|eot|>" and full.eot_id == tok.convert_tokens_to_ids("<|eot|>")
    assert "trained by full fine-tuning" in full.describe()


def test_explicit_eot_under_lora_trains_its_row(tok):
    fmt = TurnFormat(tok, TurnsConfig(eot="<|end|>"), method="lora")
    assert fmt.train_eot_row and fmt.eot_id in fmt.stop_ids
    assert "trained alongside the LoRA adapters" in fmt.describe()


def test_show_mask_marks_trained_spans(tok):
    fmt = TurnFormat(tok, TurnsConfig(format="plain", eot="eos"), method="lora")
    shown = fmt.show_mask(CONV)
    assert "[[Nine minutes.<eos>]]" in shown and "User:\nHow do I boil an egg?" in shown


def test_system_text_is_context(tok):
    fmt = TurnFormat(tok, TurnsConfig(format="plain", eot="eos", system="Be brief."), method="lora")
    enc = fmt.encode(CONV)
    assert "Be brief." in tok.decode(enc.input_ids) and "Be brief." not in trained_text(fmt, enc)


def test_template_format_masks_assistant_turns(tok):
    tok.chat_template = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    tok.add_special_tokens({"additional_special_tokens": ["<|end|>"]})
    fmt = TurnFormat(tok, TurnsConfig(format="auto"))
    assert fmt.kind == "template" and fmt.eot_id == tok.convert_tokens_to_ids("<|end|>")
    assert trained_text(fmt, fmt.encode(CONV)) == "Nine minutes.<|end|>Six minutes.<|end|>"


def test_template_requested_without_one_is_a_clear_error(tok):
    with pytest.raises(LimaError, match="no chat template"):
        TurnFormat(tok, TurnsConfig(format="template"))
