"""Generation backends: vLLM adapter (against a fake `vllm` module), backend errors, static KV cache."""

from __future__ import annotations

import json
import sys
import types

import pytest

from lima_align.cli import main
from lima_align.config import GenerateConfig, ModelConfig, TurnsConfig, load_recipe
from lima_align.errors import LimaError
from lima_align.decoding import prompt_seed
from lima_align.generate import ROLE_STOP, Decoding, Generator, generate_file, load_for_generation
from lima_align.records import Message


def write_prompts(path, n):
    texts = ["How do I boil an egg?", "Write a poem about the sea.", "What is the capital of Italy?",
             "Explain gravity to a child.", "Say hello in Python."]
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"p{i}", "messages": [{"role": "user", "content": texts[i % len(texts)]}]}) + "\n")
    return path


class FakeVllm(types.ModuleType):
    """Just enough of vllm's API: SamplingParams records its settings, LLM replays scripted outputs."""

    def __init__(self, tok, script):
        super().__init__("vllm")
        self.tok, self.script, self.params, self.prompts, self.llm_args = tok, script, [], [], {}
        fake = self

        class SamplingParams:
            def __init__(self, **kw):
                self.kw = kw
                fake.params.append(kw)

        class LLM:
            def __init__(self, **kw):
                fake.llm_args = kw
                self.llm_engine = types.SimpleNamespace(model_config=types.SimpleNamespace(max_model_len=512))

            def generate(self, prompts, params, use_tqdm=True):
                assert len(prompts) == len(params)
                outs = []
                for p in prompts:
                    fake.prompts.append(p["prompt_token_ids"])
                    text, ids, finish, stop_reason = fake.script(len(fake.prompts) - 1)
                    c = types.SimpleNamespace(text=text, token_ids=ids, finish_reason=finish, stop_reason=stop_reason)
                    outs.append(types.SimpleNamespace(outputs=[c]))
                return outs

        self.SamplingParams, self.LLM = SamplingParams, LLM


def test_vllm_backend_maps_decoding_and_writes_the_same_records(tiny_llama, tmp_path, monkeypatch):
    lm, fmt = load_for_generation(ModelConfig(name=str(tiny_llama), dtype="float32"), TurnsConfig(format="plain"))
    tok = lm.tokenizer
    answer = tok.encode("Rome is the capital.", add_special_tokens=False)

    def script(i):  # three endings: end-of-turn token, the plain format's stop string, the length limit
        if i % 3 == 0:
            return "Rome is the capital.", answer + [fmt.eot_id], "stop", fmt.eot_id
        if i % 3 == 1:
            return "Rome is the capital.", answer, "stop", ROLE_STOP
        return "Rome is the capital. And", answer + answer[:2], "length", None

    fake = FakeVllm(tok, script)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    prompts = write_prompts(tmp_path / "prompts.jsonl", 5)
    out = tmp_path / "gen.jsonl"
    g = GenerateConfig(prompts=str(prompts), output=str(out), backend="vllm", temperature=0.7, top_p=0.9,
                       repetition_penalty=1.2, max_new_tokens=64, seed=3, limit=3)
    generate_file(ModelConfig(name=str(tiny_llama)), TurnsConfig(format="plain"), g, log=lambda *_: None)

    # Prompts are our turn format's token ids, exactly what the transformers backend feeds its model.
    gen = Generator(lm, fmt, Decoding())
    msgs = {json.loads(x)["id"]: json.loads(x)["messages"] for x in prompts.read_text().splitlines()}
    want = sorted(gen.prompt_ids([Message(**m) for m in msgs[f"p{i}"]]) for i in range(3))
    assert sorted(fake.prompts) == want
    assert fake.llm_args["model"] == str(tiny_llama) and fake.llm_args["seed"] == 3

    p = fake.params[0]
    assert (p["temperature"], p["top_p"], p["repetition_penalty"], p["max_tokens"]) == (0.7, 0.9, 1.2, 64)
    assert p["stop_token_ids"] == fmt.stop_ids and p["stop"] == [ROLE_STOP]
    banned = set(p["logit_bias"])
    assert tok.pad_token_id in banned and tok.bos_token_id in banned and fmt.eot_id not in banned
    assert all(v <= -100 for v in p["logit_bias"].values())
    assert len({q["seed"] for q in fake.params}) == 3  # each prompt its own seed
    # ... the same seed the transformers backend gives that prompt
    assert {q["seed"] for q in fake.params} == {prompt_seed(3, w) for w in want}

    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["finish_reason"] for r in rows] == ["eot", "stop", "length"]
    assert rows[0]["output"] == "Rome is the capital."
    assert rows[0]["tokens"]["output"] == len(answer)  # the end-of-turn token is not counted
    assert rows[2]["tokens"]["output"] == len(answer) + 2
    assert rows[0]["output_ids"] == rows[1]["output_ids"] == answer  # what analyze shift ranks
    assert rows[2]["output_ids"] == answer + answer[:2]
    for r in rows:
        assert set(r) == {"id", "prompt_id", "model", "messages", "output", "finish_reason", "tokens",
                          "output_ids", "decoding", "created"}
        # vLLM's penalty covers the prompt too, and the record says so
        assert r["decoding"] == {"max_new_tokens": 64, "temperature": 0.7, "top_p": 0.9,
                                 "repetition_penalty": 1.2, "seed": 3, "repetition_penalty_scope": "all"}
        assert r["tokens"]["prompt"] in {len(w) for w in want}

    # Resume: a rerun over all five prompts answers only the two new ones.
    g.limit = None
    generate_file(ModelConfig(name=str(tiny_llama)), TurnsConfig(format="plain"), g, log=lambda *_: None)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["prompt_id"] for r in rows) == [f"p{i}" for i in range(5)]
    assert len(fake.prompts) == 5


def test_vllm_greedy_maps_to_temperature_zero(tiny_llama):
    from lima_align.vllm_backend import sampling_params

    lm, fmt = load_for_generation(ModelConfig(name=str(tiny_llama), dtype="float32"), TurnsConfig(format="plain"))
    fake = FakeVllm(lm.tokenizer, None)
    sp = sampling_params(fake, Decoding(max_new_tokens=4000, temperature=0.0, top_p=0.5), fmt, [], 100, 512, 1)
    assert sp.kw["temperature"] == 0.0 and sp.kw["top_p"] == 1.0
    assert sp.kw["max_tokens"] == 412  # capped by the context left after the prompt
    assert sp.kw["logit_bias"] is None


def test_vllm_backend_without_vllm_is_a_clear_error(tiny_llama, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    prompts = write_prompts(tmp_path / "prompts.jsonl", 1)
    rc = main(["generate", "--model", str(tiny_llama), "--prompts", str(prompts), "--output",
               str(tmp_path / "g.jsonl"), "--backend", "vllm"])
    err = capsys.readouterr().err
    assert rc == 2 and "generate.backend" in err and "pip install 'lima-align[vllm]'" in err
    assert not (tmp_path / "g.jsonl").exists()


def test_backend_and_cache_values_are_validated():
    with pytest.raises(LimaError) as e:
        load_recipe(None, ["generate.backend=vlm", "generate.cache=statik", "train.attn_implementation=flash"])
    msg = str(e.value)
    assert "'vllm'" in msg and "'static'" in msg and "train.attn_implementation" in msg


def test_static_cache_gives_the_same_greedy_output(tiny_llama, monkeypatch):
    lm, fmt = load_for_generation(ModelConfig(name=str(tiny_llama), dtype="float32"), TurnsConfig(format="plain"))
    caches = []
    real = lm.model.generate

    def spy(*args, **kwargs):
        caches.append(kwargs.get("cache_implementation"))
        return real(*args, **kwargs)

    monkeypatch.setattr(lm.model, "generate", spy)
    dec = Decoding(max_new_tokens=10, temperature=0.0, repetition_penalty=1.0)
    convs = [[Message("user", "How do I boil an egg?")], [Message("user", "Write a poem about the sea, please.")]]
    dynamic = Generator(lm, fmt, dec).generate(convs)
    static = Generator(lm, fmt, dec, cache="static").generate(convs)
    assert [r.text for r in static] == [r.text for r in dynamic]
    assert [r.output_tokens for r in static] == [r.output_tokens for r in dynamic]
    assert any(r.output_tokens > 0 for r in dynamic)
    assert caches == [None, "static"]


def test_serve_answers_through_the_vllm_backend(tiny_llama):
    from fastapi.testclient import TestClient

    from lima_align.serve import create_app
    from lima_align.vllm_backend import VllmGenerator

    lm, fmt = load_for_generation(ModelConfig(name=str(tiny_llama), dtype="float32"), TurnsConfig(format="plain"))
    ids = lm.tokenizer.encode("Rome is the capital.", add_special_tokens=False)
    fake = FakeVllm(lm.tokenizer, lambda i: ("Rome is the capital.", ids + [fmt.eot_id], "stop", fmt.eot_id))
    gen = VllmGenerator(fake.LLM(), lm.tokenizer, fmt, Decoding(max_new_tokens=32), 512, fake)
    client = TestClient(create_app(gen, "fake-vllm"))
    ask = {"model": "x", "messages": [{"role": "user", "content": "What is the capital of Italy?"}],
           "temperature": 0.2, "max_tokens": 16}
    r = client.post("/v1/chat/completions", json=ask).json()
    assert r["choices"][0]["message"]["content"] == "Rome is the capital."
    assert r["choices"][0]["finish_reason"] == "stop" and r["usage"]["completion_tokens"] == len(ids)
    assert fake.params[-1]["temperature"] == 0.2 and fake.params[-1]["max_tokens"] == 16
    with client.stream("POST", "/v1/chat/completions", json={**ask, "stream": True}) as s:
        body = "".join(s.iter_text())
    pieces = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: {")]
    streamed = "".join(p["choices"][0]["delta"].get("content", "") for p in pieces if p["choices"])
    assert streamed == "Rome is the capital." and body.rstrip().endswith("data: [DONE]")
