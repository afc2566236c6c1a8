"""Turn-format behaviour that mutation testing (benchmarks/mutation.py) found unchecked: the exact plain
format, what describe() says for each end-of-turn choice, which token a chat template ends a turn with,
template masks for every loss_on, the where/what/fix of each error, BOS detection and the token cache."""

from __future__ import annotations

import json

import pytest
from tokenizers import AddedToken, processors

from lima_align.checkpoint import META_FILE as CHECKPOINT_META
from lima_align.config import TrainConfig, TurnsConfig
from lima_align.errors import LimaError
from lima_align.models import load_tokenizer
from lima_align.records import Conversation, Message
from lima_align.turns import IGNORE, TurnFormat, checkpoint_method, training_method

CONV = Conversation("c1", [Message("user", "How do I boil an egg?"), Message("assistant", "Nine minutes."),
                           Message("user", "And soft?"), Message("assistant", "Six minutes.")])
PLAIN = ("<bos>User:\nHow do I boil an egg?<eos>\nAssistant:\nNine minutes.<eos>\n"
         "User:\nAnd soft?<eos>\nAssistant:\nSix minutes.<eos>")

# A ChatML-like template whose markers are special tokens (added by `templated`).
MARKERS = ("<|end|>", "<|assistant|>", "<|user|>")
BASIC = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
         "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.fixture
def tok(tiny_gemma):
    return load_tokenizer(str(tiny_gemma))


def templated(tok, template: str, special=MARKERS, plain_added=()):
    tok.chat_template = template
    if special:
        tok.add_special_tokens({"additional_special_tokens": list(special)})
    if plain_added:
        tok.add_tokens(list(plain_added))  # added to the vocabulary but not flagged special
    return tok


def problem(excinfo):
    [p] = excinfo.value.problems
    return p.where, p.what, p.fix


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


# ------------------------------------------------------------ the plain format, exactly


def test_plain_format_is_the_documented_text_built_piece_by_piece(tok):
    fmt = TurnFormat(tok, TurnsConfig(format="plain", eot="eos"), method="lora")
    enc = fmt.encode(CONV)
    assert tok.decode(enc.input_ids) == PLAIN
    eos = tok.eos_token_id
    expected = [tok.bos_token_id]
    for i, m in enumerate(CONV.messages):
        expected += ids(tok, ("" if i == 0 else "\n") + ("User" if m.role == "user" else "Assistant") + ":\n")
        expected += ids(tok, m.content) + [eos]
    assert enc.input_ids == expected


def test_a_list_of_messages_encodes_like_the_conversation(tok):
    fmt = TurnFormat(tok, TurnsConfig(format="plain", eot="eos"), method="lora")
    assert fmt.encode(CONV.messages) == fmt.encode(CONV)


def test_show_mask_exact_for_each_loss_on(tok):
    fmt = TurnFormat(tok, TurnsConfig(format="plain", eot="eos"), method="lora")
    assert fmt.show_mask(CONV) == ("<bos>User:\nHow do I boil an egg?<eos>\nAssistant:\n[[Nine minutes.<eos>]]\n"
                                   "User:\nAnd soft?<eos>\nAssistant:\n[[Six minutes.<eos>]]")
    assert fmt.show_mask(CONV, "last_assistant") == PLAIN.replace("Six minutes.<eos>", "[[Six minutes.<eos>]]")
    assert fmt.show_mask(CONV, "all") == f"[[{PLAIN}]]"
    enc = fmt.encode(CONV, "all")
    assert enc.labels == enc.input_ids  # BOS included: labels are the ids wherever loss is on


def test_a_conversation_without_an_assistant_turn_trains_nothing(tok):
    fmt = TurnFormat(tok, TurnsConfig(format="plain", eot="eos"), method="lora")
    for loss_on in ("assistant", "last_assistant"):
        enc = fmt.encode([Message("user", "How do I boil an egg?")], loss_on)
        assert enc.labels == [IGNORE] * len(enc.input_ids)


def test_a_prompt_without_messages_is_bos_and_the_assistant_header(tok):
    fmt = TurnFormat(tok, TurnsConfig(format="plain", eot="eos"), method="lora")
    assert tok.decode(fmt.encode_prompt([])) == "<bos>Assistant:\n"


def test_the_conversations_own_system_message_replaces_the_configured_one(tok):
    fmt = TurnFormat(tok, TurnsConfig(format="plain", eot="eos", system="Be brief."), method="lora")
    own = [Message("system", "Be kind."), Message("user", "Hi")]
    assert tok.decode(fmt.encode_prompt(own)) == "<bos>System:\nBe kind.<eos>\nUser:\nHi<eos>\nAssistant:\n"
    assert tok.decode(fmt.encode_prompt(own[1:])) == "<bos>System:\nBe brief.<eos>\nUser:\nHi<eos>\nAssistant:\n"


def test_no_bos_when_the_tokenizer_does_not_start_texts_with_it(tok):
    # A tokenizer that names a BOS token but never adds it (as many non-Llama tokenizers do).
    tok.backend_tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    assert tok.bos_token_id is not None and tok("x")["input_ids"][0] != tok.bos_token_id
    fmt = TurnFormat(tok, TurnsConfig(format="plain", eot="eos"), method="lora")
    assert tok.decode(fmt.encode_prompt([Message("user", "Hi")])) == "User:\nHi<eos>\nAssistant:\n"


def test_a_repeated_text_is_tokenised_once_and_the_cache_fills_to_its_size(tok, monkeypatch):
    import lima_align.turns as turns

    monkeypatch.setattr(turns, "SEG_CACHE_SIZE", 8)
    fmt = TurnFormat(tok, TurnsConfig(format="plain", eot="eos"), method="lora")
    seen = []
    real = fmt._text_ids
    monkeypatch.setattr(fmt, "_text_ids", lambda text: seen.append(text) or real(text))
    for i in range(20):
        fmt.encode_prompt([Message("user", f"Question {i}?")])
    assert seen.count("\nAssistant:\n") == 1 and seen.count("User:\n") == 1  # headers stay cached
    assert len(fmt._seg_cache) == 8


# ------------------------------------------------------------ which end of turn, and what describe() says


@pytest.mark.parametrize("method, eot, reason", [
    ("lora", "auto", "EOS, the model's own pretrained end-of-sequence token, not a new one: LoRA freezes embeddings, "
     "so its row stays as pretrained and the adapters learn when to emit it "
     "(set turns.eot to a token to train a dedicated row)"),
    ("lora", "eos", "EOS, the model's own pretrained end-of-sequence token, not a new one: LoRA freezes embeddings, "
     "so its row stays as pretrained and the adapters learn when to emit it (turns.eot=eos)"),
    ("frozen", "auto", "EOS, the model's own pretrained end-of-sequence token, not a new one: the embedding matrix "
     "stays as pretrained (train.freeze_embeddings) and the fine-tuned layers learn when to emit it "
     "(set turns.eot to a token to train a dedicated row)"),
    ("frozen", "eos", "EOS, the model's own pretrained end-of-sequence token, not a new one: the embedding matrix "
     "stays as pretrained (train.freeze_embeddings) and the fine-tuned layers learn when to emit it (turns.eot=eos)"),
    ("full", "eos", "EOS, the model's own end-of-sequence token, its row trained further by full fine-tuning "
     "(turns.eot=eos)"),
    ("full", "auto", "'<|eot|>', a new token added to the vocabulary, trained by full fine-tuning"),
    ("lora", "new", "'<|eot|>', a new token added to the vocabulary, its embedding row trained alongside the LoRA "
     "adapters"),
])
def test_what_training_does_to_the_end_of_turn_is_said_exactly(tok, method, eot, reason):
    fmt = TurnFormat(tok, TurnsConfig(format="plain", eot=eot), method=method)
    assert fmt.reason == reason
    is_eos = reason.startswith("EOS")
    assert (fmt.eot_id == tok.eos_token_id) == is_eos
    assert fmt.new_token == (None if is_eos else "<|eot|>")
    assert fmt.train_eot_row == (method == "lora" and not is_eos)


def test_training_without_a_method_is_full_fine_tuning(tok):
    fmt = TurnFormat(tok, TurnsConfig(format="plain", eot="new"))
    assert fmt.method == "full"
    assert fmt.reason == "'<|eot|>', a new token added to the vocabulary, trained by full fine-tuning"


def test_describe_names_the_token_and_its_id(tok):
    fmt = TurnFormat(tok, TurnsConfig(format="plain", eot="new"), method="full")
    new_id = tok.convert_tokens_to_ids("<|eot|>")
    assert fmt.describe() == (f"turn format 'plain'; end of turn = '<|eot|>' (id {new_id}): '<|eot|>', a new token "
                              "added to the vocabulary, trained by full fine-tuning")
    assert fmt.stop_ids == sorted([new_id, tok.eos_token_id])


def test_the_models_own_end_of_turn_token_is_preferred_and_its_training_said(tok):
    tok.add_special_tokens({"additional_special_tokens": ["<end_of_turn>"]})
    full = TurnFormat(tok, TurnsConfig(format="plain", eot="auto"), method="full")
    assert full.eot_id == tok.convert_tokens_to_ids("<end_of_turn>") and full.new_token is None
    assert full.reason == "'<end_of_turn>', the model's own end-of-turn token, trained by full fine-tuning"
    # Generating with a model no lima-align run trained: nothing is claimed about training.
    loaded = TurnFormat(tok, TurnsConfig(format="plain", eot="auto"), for_training=False)
    assert loaded.reason == "'<end_of_turn>', the model's own end-of-turn token"


def test_an_existing_token_named_as_the_end_of_turn(tok):
    tok.add_special_tokens({"additional_special_tokens": ["<|end|>"]})
    fmt = TurnFormat(tok, TurnsConfig(format="plain", eot="<|end|>"), method="full")
    assert fmt.new_token is None and not fmt.train_eot_row
    assert fmt.reason == "'<|end|>', an existing token, trained by full fine-tuning"
    # Without a checkpoint record the token is only what turns.eot named.
    loaded = TurnFormat(tok, TurnsConfig(format="plain", eot="<|end|>"), for_training=False)
    assert loaded.method is None and loaded.reason == "'<|end|>', as turns.eot names it"


def test_an_end_of_turn_missing_from_a_loaded_tokenizer_is_an_error(tok):
    with pytest.raises(LimaError) as e:
        TurnFormat(tok, TurnsConfig(format="plain", eot="<|end|>"), for_training=False)
    assert problem(e) == ("turns.eot", "end-of-turn token '<|end|>' is not in this tokenizer",
                          "generate with the tokenizer saved in the run's checkpoint")


def test_an_end_of_turn_that_is_not_one_token_is_an_error(tok):
    # A BPE vocabulary entry with the byte-level space mark: in the vocabulary, but its text is several tokens.
    name = next(t for t in sorted(tok.get_vocab()) if t.startswith("\u0120") and len(t) > 2)
    with pytest.raises(LimaError) as e:
        TurnFormat(tok, TurnsConfig(format="plain", eot=name), method="full")
    where, what, fix = problem(e)
    assert (where, fix) == ("turns.eot", "use a special token, 'new', or 'eos'")
    assert what == f"end-of-turn {name!r} is not a single token in this tokenizer (got {ids(tok, name)})"


def test_training_method_of_a_train_config():
    assert training_method(TrainConfig(method="lora")) == "lora"
    assert training_method(TrainConfig(method="full")) == "full"
    assert training_method(TrainConfig(method="full", freeze_embeddings=True)) == "frozen"


def test_checkpoint_method_needs_a_tokenizer_loaded_from_a_checkpoint(tok, tmp_path, monkeypatch):
    assert checkpoint_method(object()) is None  # no name_or_path at all
    # A tokenizer with no folder says nothing, even when the working directory is a checkpoint.
    (tmp_path / CHECKPOINT_META).write_text(json.dumps({"method": "lora", "turns": {"format": "plain",
                                                                                      "eot": "<eos>"}}))
    monkeypatch.chdir(tmp_path)
    assert checkpoint_method(tok) is None
    tok.name_or_path = ""
    assert checkpoint_method(tok) is None
    tok.name_or_path = str(tmp_path)
    assert checkpoint_method(tok) == "lora"


# ------------------------------------------------------------ chat templates: the end-of-turn token


def test_the_templates_end_of_turn_is_the_special_token_after_the_assistant_text(tok):
    # The assistant header is special too and comes right before the text: it is not the end of turn.
    strict = ("{% for m in messages %}{% if m['role'] == 'user' %}<|user|>{{ m['content'] }}"
              "{% elif m['role'] == 'assistant' %}<|assistant|>{{ m['content'] }}<|end|>"
              "{% else %}{{ raise_exception('roles must be user or assistant') }}{% endif %}{% endfor %}"
              "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    fmt = TurnFormat(templated(tok, strict), TurnsConfig(format="auto"))
    end = tok.convert_tokens_to_ids("<|end|>")
    assert fmt.kind == "template" and fmt.eot_id == end and fmt.stop_ids == sorted([end, tok.eos_token_id])
    assert fmt.describe() == (f"turn format 'template'; end of turn = '<|end|>' (id {end}): "
                              "the chat template's own end-of-turn token")


def test_special_tokens_before_the_reply_are_not_the_end_of_turn(tok):
    # ChatML with an empty thinking block before each reply (as Qwen3 renders one): <|im_start|>, <think> and
    # </think> come before the reply; the end of turn is the first special token after it.
    think = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['role'] == 'assistant' %}"
             "<think>\n\n</think>\n\n{% endif %}{{ m['content'] }}<|im_end|>\n{% endfor %}"
             "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n\n</think>\n\n{% endif %}")
    fmt = TurnFormat(templated(tok, think, special=("<|im_start|>", "<|im_end|>", "<think>", "</think>")),
                     TurnsConfig(format="auto"))
    assert fmt.eot_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert "<|im_start|>assistant\n<think>\n\n</think>\n\n[[Six minutes.<|im_end|>" in fmt.show_mask(CONV)


def test_a_template_end_of_turn_under_lora_keeps_its_pretrained_row(tok):
    fmt = TurnFormat(templated(tok, BASIC), TurnsConfig(format="template"), method="lora")
    assert fmt.reason == "the chat template's own end-of-turn token; LoRA leaves its embedding row as pretrained"
    assert not fmt.train_eot_row and fmt.new_token is None


def test_an_added_token_not_flagged_special_still_ends_the_templates_turn(tok):
    fmt = TurnFormat(templated(tok, BASIC, special=(), plain_added=("<|end|>",)), TurnsConfig(format="auto"))
    assert "<|end|>" not in tok.all_special_tokens
    assert fmt.eot_id == tok.convert_tokens_to_ids("<|end|>")


def test_a_template_that_ends_turns_with_plain_text_stops_at_eos(tok):
    fmt = TurnFormat(templated(tok, "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n\n{% endfor %}",
                               special=()), TurnsConfig(format="auto"))
    assert fmt.eot_id == tok.eos_token_id and fmt.stop_ids == [tok.eos_token_id]


def test_a_template_that_starts_with_the_assistant_text(tok):
    only_replies = ("{% for m in messages %}{% if m['role'] == 'assistant' %}{{ m['content'] }}<|end|>{% endif %}"
                    "{% endfor %}")
    fmt = TurnFormat(templated(tok, only_replies), TurnsConfig(format="auto"))
    assert fmt.eot_id == tok.convert_tokens_to_ids("<|end|>")


def test_template_requested_without_one_names_the_setting_and_the_fix(tok):
    with pytest.raises(LimaError) as e:
        TurnFormat(tok, TurnsConfig(format="template"))
    assert problem(e) == ("turns.format", "turns.format is 'template' but this tokenizer has no chat template",
                          "use turns.format=plain")


# ------------------------------------------------------------ chat templates: ids and masks


def test_template_ids_and_masks_for_each_loss_on(tok):
    fmt = TurnFormat(templated(tok, BASIC), TurnsConfig(format="auto"))
    dicts = [m.to_dict() for m in CONV.messages]
    own = list(tok.apply_chat_template(dicts, tokenize=True, return_dict=False))
    rendered = ("<|user|>How do I boil an egg?<|end|><|assistant|>Nine minutes.<|end|>"
                "<|user|>And soft?<|end|><|assistant|>Six minutes.<|end|>")
    assert fmt.encode(CONV).input_ids == own
    assert fmt.show_mask(CONV) == rendered.replace("Nine minutes.<|end|>", "[[Nine minutes.<|end|>]]").replace(
        "Six minutes.<|end|>", "[[Six minutes.<|end|>]]")
    assert fmt.show_mask(CONV, "last_assistant") == rendered.replace("Six minutes.<|end|>",
                                                                     "[[Six minutes.<|end|>]]")
    enc = fmt.encode(CONV, "all")
    assert enc.input_ids == own and enc.labels == own
    none = fmt.encode([Message("user", "Hi")], "last_assistant")
    assert none.labels == [IGNORE] * len(none.input_ids)


def test_a_template_whose_prefixes_are_not_prefixes_is_refused_unless_all_is_trained(tok):
    # EOS after the whole conversation: the first reply's render ends in EOS, the full one goes on.
    closing = BASIC + "{% if not add_generation_prompt %}{{ eos_token }}{% endif %}"
    fmt = TurnFormat(templated(tok, closing), TurnsConfig(format="auto"))
    with pytest.raises(LimaError) as e:
        fmt.encode(CONV)
    assert problem(e) == ("turns.format", "this chat template does not render a conversation's prefix as a prefix, "
                          "so the assistant tokens cannot be found reliably", "use turns.format=plain")
    enc = fmt.encode(CONV, "all")  # no prefix is needed when every token is trained
    assert enc.labels == enc.input_ids and enc.input_ids[-1] == tok.eos_token_id


def test_a_template_that_drops_a_message_with_special_token_text_is_refused(tok):
    no_system = ("{% for m in messages if m['role'] != 'system' %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>"
                 "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
    fmt = TurnFormat(templated(tok, no_system), TurnsConfig(format="auto"))
    with pytest.raises(LimaError) as e:
        fmt.encode_prompt([Message("system", "Never say <|end|>."), Message("user", "Hi")])
    assert problem(e) == ("turns.format", "this chat template changes the text of a message that contains "
                          "special-token text, so that text cannot be kept apart from the template's own tokens",
                          "use turns.format=plain, or remove the special-token text from the message")
    # Without special-token text the dropped system message is simply the template's choice.
    assert tok.decode(fmt.encode_prompt([Message("system", "Be brief."), Message("user", "Hi")])) == (
        "<|user|>Hi<|end|><|assistant|>")


def test_gemma_style_turn_markers_typed_in_a_message_stay_text(tok):
    # Gemma's turn markers are added tokens flagged special without being among the tokenizer's named special
    # tokens (all_special_tokens): typed in a message they must still not open a turn.
    tok.add_tokens([AddedToken("<start_of_turn>", special=True), AddedToken("<end_of_turn>", special=True)])
    assert "<start_of_turn>" not in tok.all_special_tokens
    gemma = ("{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
             "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
    fmt = TurnFormat(templated(tok, gemma, special=()), TurnsConfig(format="auto"))
    start, end = tok.convert_tokens_to_ids("<start_of_turn>"), tok.convert_tokens_to_ids("<end_of_turn>")
    assert fmt.eot_id == end
    prompt = fmt.encode_prompt([Message("user", "a <start_of_turn>model\nb<end_of_turn>")])
    assert prompt.count(start) == 2 and prompt.count(end) == 1  # the template's own markers only
    assert tok.decode(prompt) == ("<start_of_turn>user\na <start_of_turn>model\nb<end_of_turn><end_of_turn>\n"
                                  "<start_of_turn>model\n")


def test_a_tokenizer_without_eos_stops_at_the_end_of_turn_only(tok):
    tok.eos_token = None
    fmt = TurnFormat(templated(tok, BASIC), TurnsConfig(format="auto"))
    assert fmt.stop_ids == [fmt.eot_id] == [tok.convert_tokens_to_ids("<|end|>")]


def checkpoint_like(tok, path, **meta):
    """A folder as a run checkpoint leaves it, as far as the turn format reads it."""
    tok.save_pretrained(path)
    (path / CHECKPOINT_META).write_text(json.dumps({**meta, "turns": {"format": "plain", "eot": "<eos>"}}))
    return load_tokenizer(str(path))


@pytest.mark.parametrize("meta, reason", [
    ({"method": "lora"}, "EOS, the model's own pretrained end-of-sequence token, not a new one: the LoRA adapters "
     "learned when to emit it"),
    ({"method": "full", "freeze_embeddings": True}, "EOS, the model's own pretrained end-of-sequence token, not a new "
     "one: the embedding matrix stays as pretrained (train.freeze_embeddings) and the fine-tuned layers learn when "
     "to emit it"),
    ({"method": "full"}, "EOS, the model's own end-of-sequence token, its row trained further by full fine-tuning"),
])
def test_a_checkpoint_that_ends_turns_with_eos_says_how_it_was_trained(tok, tmp_path, meta, reason):
    loaded = checkpoint_like(tok, tmp_path, **meta)
    fmt = TurnFormat(loaded, TurnsConfig(format="plain", eot="<eos>"), for_training=False)
    assert fmt.eot_id == tok.eos_token_id and fmt.reason == reason
    assert fmt.new_token is None and not fmt.train_eot_row


def test_a_template_rendered_as_a_batch_of_one_gives_the_same_ids(tok, monkeypatch):
    # Some tokenizers return the ids of one conversation as a batch of one ([[...]]).
    templated(tok, BASIC)
    expected = TurnFormat(tok, TurnsConfig(format="auto")).encode(CONV)
    real = tok.apply_chat_template

    def batched(conversation, **kw):
        out = real(conversation, **kw)
        return [list(out["input_ids"])] if kw.get("tokenize", True) else out

    monkeypatch.setattr(tok, "apply_chat_template", batched)
    fmt = TurnFormat(tok, TurnsConfig(format="auto"))
    assert fmt.eot_id == tok.convert_tokens_to_ids("<|end|>")
    assert fmt.encode(CONV) == expected
