"""`generate.backend: vllm`: the same generations, produced by vLLM's batched engine.

vLLM is an optional extra (`pip install 'lima-align[vllm]'`, a CUDA GPU) and is imported only
when this backend is chosen. Everything that decides *what* is generated stays ours: prompts
are the token ids of our TurnFormat (vLLM never applies a chat template to them), and LIMA's
decoding is mapped onto SamplingParams one setting at a time (`sampling_params`), so the
records written are the same as the transformers backend's (same fields, same finish reasons).

Same as the transformers backend: temperature before top-p, only special tokens banned, and a
seed per prompt (`decoding.prompt_seed`: the decoding seed and the prompt's token ids), so a
prompt's answer does not depend on its batch or on a resume. What still differs: vLLM has its
own random number stream, so sampled texts differ from the transformers backend's (greedy ones
agree up to kernel rounding); and vLLM's repetition penalty always covers the prompt's tokens
too, so this backend runs repetition_penalty_scope "all", says so, and records it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from .checkpoint import turns_for
from .config import GenerateConfig, ModelConfig, TurnsConfig
from .errors import LimaError
from .decoding import ROLE_STOP, Decoding, Reply, banned_tokens, ids_covering, prompt_seed
from .records import Message
from .turns import TurnFormat

INSTALL_FIX = "pip install 'lima-align[vllm]' (needs a CUDA GPU), or set generate.backend=transformers"
BAN_BIAS = -100.0  # the most negative logit bias vLLM accepts: the token is never sampled


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError as e:
        raise LimaError(f"generate.backend is 'vllm' but vLLM cannot be imported ({e})",
                        where="generate.backend", fix=INSTALL_FIX) from None
    return vllm


def sampling_params(vllm: Any, d: Decoding, fmt: TurnFormat, banned: list[int], prompt_len: int,
                    context: int, seed: int) -> Any:
    """LIMA's decoding as vLLM SamplingParams (same meaning as Generator.generate's settings)."""
    greedy = d.temperature == 0
    return vllm.SamplingParams(
        n=1,
        temperature=0.0 if greedy else d.temperature,
        top_p=1.0 if greedy else d.top_p,
        # vLLM's penalty covers prompt and output tokens alike: repetition_penalty_scope "all"
        # (load() says so when the recipe asked for "generated").
        repetition_penalty=d.repetition_penalty,
        max_tokens=max(1, min(d.max_new_tokens, context - prompt_len)),
        seed=seed,
        stop_token_ids=list(fmt.stop_ids),
        stop=[ROLE_STOP] if fmt.kind == "plain" else None,
        include_stop_str_in_output=False,
        logit_bias={t: BAN_BIAS for t in banned} or None,
        skip_special_tokens=True,
    )


def reply_from_output(out: Any, fmt: TurnFormat, prompt_len: int) -> Reply:
    """One vLLM RequestOutput as our Reply, finish reasons mapped to ours (see generate.py)."""
    c = out.outputs[0]
    ids = list(c.token_ids)
    if c.finish_reason == "length":
        finish = "length"
    elif isinstance(c.stop_reason, str):  # a stop string: the model began the user's next turn
        finish = "stop"
    else:  # a stop token id (the end-of-turn token) or EOS (stop_reason None)
        finish = "eot"
    if ids and ids[-1] in fmt.stop_ids:
        ids = ids[:-1]  # the end-of-turn token is not part of the answer (as in generate.py)
    text = c.text
    cut = isinstance(c.stop_reason, str)  # the ids go on past the text, into the stop string
    if fmt.kind == "plain" and ROLE_STOP in "\n" + text:
        text, finish = ("\n" + text).split(ROLE_STOP)[0][1:], "stop" if finish != "eot" else finish
        cut = True
    answer = ids_covering(fmt.tok, ids, len(text)) if cut else ids
    return Reply(text.strip(), finish, prompt_len, len(ids), answer)


def engine_context(llm: Any) -> int:
    """The engine's context length (where it lives has moved between vLLM versions)."""
    engine = llm.llm_engine
    cfg = getattr(engine, "model_config", None) or getattr(getattr(engine, "vllm_config", None), "model_config", None)
    if cfg is None:
        raise LimaError("could not read the context length from this vLLM version", where="generate.backend",
                        fix="pip install 'vllm>=0.9'")
    return int(cfg.max_model_len)


class VllmGenerator:
    """Generator's interface (prompt_ids, generate, dec, fmt, tok, context) over a vLLM engine."""

    def __init__(self, llm: Any, tokenizer: Any, fmt: TurnFormat, decoding: Decoding, context: int, vllm: Any):
        self.llm, self.tok, self.fmt, self.dec, self.context, self.vllm = llm, tokenizer, fmt, decoding, context, vllm
        self.suppress = banned_tokens(tokenizer, fmt.stop_ids)

    @classmethod
    def load(cls, model_cfg: ModelConfig, turns_cfg: TurnsConfig, decoding: Decoding) -> tuple[VllmGenerator, str]:
        """Start the engine on a full model folder; returns (generator, model path)."""
        from .models import load_tokenizer, resolve_model_path

        vllm = import_vllm()
        path = resolve_model_path(model_cfg.name, model_cfg.cache_dir)
        if (Path(path) / "adapter_config.json").exists():
            raise LimaError(f"{path} holds a LoRA adapter; the vLLM backend loads full model folders",
                            where="model.name", fix="use generate.backend=transformers for adapters (it merges them)")
        tok = load_tokenizer(path, model_cfg.revision)
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        fmt = TurnFormat(tok, turns_for(path, turns_cfg), for_training=False)
        dtype = "auto" if model_cfg.dtype == "auto" else model_cfg.dtype
        llm = vllm.LLM(model=path, tokenizer=path, revision=model_cfg.revision, dtype=dtype,
                       seed=decoding.seed, skip_tokenizer_init=False)
        decoding = vllm_decoding(decoding)
        return cls(llm, tok, fmt, decoding, engine_context(llm), vllm), path

    def prompt_ids(self, messages: list[Message]) -> list[int]:
        return self.fmt.encode_prompt(messages)

    def generate(self, conversations: list[list[Message]], *, streamer: Any = None,
                 on_step: Any = None, encoded: list[list[int]] | None = None) -> list[Reply]:
        # Each prompt seeds itself with prompt_seed, as in the transformers backend (other streams,
        # so other texts). on_step is not called: vLLM schedules its own steps.
        prompts = encoded if encoded is not None else [self.prompt_ids(m) for m in conversations]
        params = [sampling_params(self.vllm, self.dec, self.fmt, self.suppress, len(p), self.context,
                                  prompt_seed(self.dec.seed, p)) for p in prompts]
        outs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        replies = [reply_from_output(o, self.fmt, len(p)) for o, p in zip(outs, prompts)]
        if streamer is not None:  # serve's streaming: the whole answer arrives as one piece
            import torch

            streamer.put(torch.tensor([prompts[0]]))  # a skip_prompt streamer drops its first put
            streamer.put(torch.tensor(list(outs[0].outputs[0].token_ids)))
            streamer.end()
        return replies


def vllm_decoding(d: Decoding, log: Any = print) -> Decoding:
    """The decoding vLLM will actually run: its penalty has no generated-only mode."""
    if d.repetition_penalty != 1.0 and d.repetition_penalty_scope != "all":
        log("note: vLLM's repetition penalty also covers the prompt's tokens; generating with "
            "repetition_penalty_scope=all (recorded in each generation's decoding)")
        return replace(d, repetition_penalty_scope="all")
    return d


def load_generator(model_cfg: ModelConfig, turns_cfg: TurnsConfig, g: GenerateConfig) -> tuple[VllmGenerator, str]:
    return VllmGenerator.load(model_cfg, turns_cfg, Decoding.from_config(g))
