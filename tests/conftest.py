"""Tiny models and tokenizers built in-process: no network, a few seconds for the whole set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CORPUS = """The quick brown fox jumps over the lazy dog. How do I boil an egg? Put it in boiling water
for nine minutes, then cool it. Explain gravity to a child: things with mass pull on each other.
Write a poem about the sea. Waves fold and unfold under a grey sky. Here is a list: one, two, three.
Sure! Here are three ideas for a birthday party. Python code: print("hello") def add(a, b): return a + b
User: Assistant: System: What is the capital of Italy? Rome is the capital of Italy.""" * 4


def build_tokenizer(out: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<eos>", "<bos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator([CORPUS], trainer)
    # Like Gemma's and Llama's tokenizers, start every text with BOS.
    bos = tk.token_to_id("<bos>")
    tk.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                                      special_tokens=[("<bos>", bos)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")
    tok.save_pretrained(out)
    return tok


def build_model(out: Path, kind: str = "gemma3", seed: int = 0) -> Path:
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out)
    torch.manual_seed(seed)
    common = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=1, head_dim=16, max_position_embeddings=512,
                  pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    if kind == "gemma3":
        # A sliding window shorter than a packed row, so packing is tested against it too.
        cfg = Gemma3TextConfig(**common, sliding_window=16, layer_types=["sliding_attention", "full_attention"],
                               query_pre_attn_scalar=16)
        model = Gemma3ForCausalLM(cfg)
    else:
        model = LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=False))
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_gemma(tmp_path_factory) -> Path:
    return build_model(tmp_path_factory.mktemp("tiny-gemma3"), "gemma3")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return build_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


EXAMPLES = [
    ("How do I boil an egg?", "Put it in boiling water for nine minutes, then cool it."),
    ("Explain gravity to a child.", "Things with mass pull on each other."),
    ("Write a poem about the sea.", "Waves fold and unfold under a grey sky."),
    ("What is the capital of Italy?", "Rome is the capital of Italy."),
    ("Give me three ideas for a party.", "Sure! Here are three ideas: one, two, three."),
    ("Show me Python code to add numbers.", "def add(a, b): return a + b"),
    ("Say hello in Python.", 'print("hello")'),
    ("Describe the fox.", "The quick brown fox jumps over the lazy dog."),
]


def write_examples(path: Path, n: int = 8, dialogue: bool = False) -> Path:
    with path.open("w") as f:
        for i in range(n):
            u, a = EXAMPLES[i % len(EXAMPLES)]
            msgs = [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
            if dialogue:
                u2, a2 = EXAMPLES[(i + 1) % len(EXAMPLES)]
                msgs += [{"role": "user", "content": u2}, {"role": "assistant", "content": a2}]
            f.write(json.dumps({"id": f"ex-{i}", "source": "test", "messages": msgs, "meta": {}}) + "\n")
    return path


@pytest.fixture
def examples_file(tmp_path) -> Path:
    return write_examples(tmp_path / "train.jsonl")
