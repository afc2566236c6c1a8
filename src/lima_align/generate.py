"""`lima-align generate` and `chat`: LIMA decoding in the same turn format as training.

Defaults are LIMA's: nucleus sampling with p 0.9, temperature 0.7, repetition penalty 1.2, up
to 2,048 new tokens. Generation stops at the end-of-turn token (or EOS); special tokens other
than those are never sampled. Prompts are batched (left padding) and each finished batch is
appended to the output file, so a killed run resumes where it stopped. One output file holds one
model's answers: a file with another model's is refused (it would be appended to and its prompts skipped).

Generations file, one JSON object per line:
    {"id", "prompt_id", "model", "messages": [...prompt turns...], "output",
     "finish_reason": "eot" | "stop" | "length", "tokens": {"prompt", "output"},
     "output_ids": [...], "decoding": {...}, "created", "meta": {...}}
(records.generation_record writes them for every writer; "meta": from the in-context baseline, APIs and imports.)
"eot": the model ended its turn; "stop": (plain format) it began a new "User:" turn itself;
"length": it hit max_new_tokens. "output_ids" are the token ids the model generated for the answer (no
end-of-turn token, nothing of a "User:" turn it began): `analyze shift` ranks exactly these, since
tokenising the text again can split it differently. "tokens.output" counts every generated token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from .checkpoint import turns_for
from .config import GenerateConfig, ModelConfig, TurnsConfig
from .dataset_specs import load_dataset
from .decoding import ROLE_STOP, Decoding, Reply, banned_tokens, ids_covering
from .errors import LimaError
from .jsonl import JsonlAppender, done_keys
from .models import LoadedModel, bf16_is_fast, load_model, resolve_model_path
from .records import Conversation, Message, generation_record, read_generations  # noqa: F401  (re-exported)
from .sampler import LimaSampler, generation_kwargs
from .turns import TurnFormat

def resolve_dtype(dtype: str) -> str:
    if dtype != "auto":
        return dtype
    return "bfloat16" if bf16_is_fast() else "float32"


def load_for_generation(model_cfg: ModelConfig, turns_cfg: TurnsConfig) -> tuple[LoadedModel, TurnFormat]:
    """Load a model and the turn format it was trained with (read from a run checkpoint if there is one)."""
    lm = load_model(model_cfg.name, dtype=resolve_dtype(model_cfg.dtype), revision=model_cfg.revision,
                    cache_dir=model_cfg.cache_dir)
    turns_cfg = turns_for(lm.adapter or lm.path, turns_cfg)
    if lm.tokenizer.pad_token_id is None:
        lm.tokenizer.pad_token = lm.tokenizer.eos_token
    fmt = TurnFormat(lm.tokenizer, turns_cfg, for_training=False)
    return lm, fmt


class Generator:
    """Batched sampling with LIMA's settings for one loaded model."""

    def __init__(self, lm: LoadedModel, fmt: TurnFormat, decoding: Decoding, *, cache: str = "dynamic"):
        self.lm, self.fmt, self.dec = lm, fmt, decoding
        self.cache = cache  # "static": a preallocated KV cache (generate.cache)
        self.model = lm.model.eval()
        self.tok = lm.tokenizer
        self.suppress = banned_tokens(self.tok, fmt.stop_ids)
        self.context = getattr(self.model.config, "max_position_embeddings", 8192)

    def prompt_ids(self, messages: list[Message]) -> list[int]:
        return self.fmt.encode_prompt(messages)

    def generate(self, conversations: list[list[Message]], *, streamer: Any = None,
                 on_step: Callable[[int], None] | None = None, encoded: list[list[int]] | None = None) -> list[Reply]:
        """Answer a batch; each prompt samples from its own seeded stream (see decoding.py), so a
        prompt's answer does not depend on its batch. on_step(finished rows) is called every step.
        encoded: the conversations' prompt_ids, when the caller has them already."""
        with torch.no_grad():  # (a decorator would hide this method from mutmut: benchmarks/mutation.py)
            prompts = encoded if encoded is not None else [self.prompt_ids(m) for m in conversations]
            room = [self.context - len(p) for p in prompts]
            if min(room) >= self.dec.max_new_tokens or len(set(room)) == 1:
                return self._answer(prompts, streamer, on_step)
            # A batch's answers are capped at the room its longest prompt leaves, which would shorten the
            # others: prompts with room for max_new_tokens go together, each cramped one alone (an answer
            # does not depend on its batch, so splitting changes none of them).
            full = [i for i, r in enumerate(room) if r >= self.dec.max_new_tokens]
            groups = ([full] if full else []) + [[i] for i, r in enumerate(room) if r < self.dec.max_new_tokens]
            replies: list[Reply | None] = [None] * len(prompts)
            for g in groups:
                for i, r in zip(g, self._answer([prompts[i] for i in g], streamer, on_step)):
                    replies[i] = r
            return replies  # type: ignore[return-value]

    def _answer(self, prompts: list[list[int]], streamer: Any, on_step: Callable[[int], None] | None) -> list[Reply]:
        d = self.dec
        width = max(len(p) for p in prompts)
        max_new = max(1, min(d.max_new_tokens, self.context - width))
        pad = self.tok.pad_token_id
        dev = self.model.device
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding: every prompt ends where generation starts
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        sampler = LimaSampler(d, prompts, width, self.suppress, stop_ids=self.fmt.stop_ids, on_step=on_step)
        kwargs: dict[str, Any] = dict(max_new_tokens=max_new, eos_token_id=self.fmt.stop_ids, pad_token_id=pad,
                                      streamer=streamer, **generation_kwargs(sampler))
        if self.fmt.kind == "plain":
            kwargs.update(stop_strings=[ROLE_STOP], tokenizer=self.tok)
        if self.cache == "static":
            kwargs["cache_implementation"] = "static"
        out = self.model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), **kwargs)
        replies = []
        for i, p in enumerate(prompts):
            new = out[i, width:].tolist()
            finish = "length"
            for j, t in enumerate(new):
                if t in self.fmt.stop_ids:
                    finish, new = "eot", new[:j]
                    break
            else:
                # A row that matched the stop string early is padded to the batch's length.
                if len(new) < max_new or (new and new[-1] == pad):
                    finish = "stop"
                while new and new[-1] == pad:
                    new.pop()
            text = self.tok.decode(new, skip_special_tokens=True)
            answer = new
            if self.fmt.kind == "plain" and ROLE_STOP in "\n" + text:
                text = ("\n" + text).split(ROLE_STOP)[0][1:]
                answer = ids_covering(self.tok, new, len(text))
                finish = "stop" if finish != "eot" else finish
            replies.append(Reply(text.strip(), finish, len(p), len(new), answer))
        return replies


def generate_file(model_cfg: ModelConfig, turns_cfg: TurnsConfig, g: GenerateConfig, *,
                  lm_fmt: tuple[LoadedModel, TurnFormat] | None = None, log: Any = print) -> Path:
    """Answer every prompt in g.prompts, appending to g.output; prompt ids already there are skipped."""
    vllm = g.backend == "vllm"
    if g.model_label:
        label = g.model_label
    elif lm_fmt is not None and not vllm:
        label = lm_fmt[0].adapter or lm_fmt[0].path
    else:  # the path load_model and the vLLM engine load from, without loading anything yet
        label = resolve_model_path(model_cfg.name, model_cfg.cache_dir)

    def start() -> Any:
        if vllm:
            from .vllm_backend import load_generator

            return load_generator(model_cfg, turns_cfg, g)[0]
        lm, fmt = lm_fmt or load_for_generation(model_cfg, turns_cfg)
        return Generator(lm, fmt, Decoding.from_config(g), cache=g.cache)

    # vLLM schedules its own batches; chunks only bound the work a kill loses
    return answer_prompts(g, label, start, step=max(g.batch_size, 1024) if vllm else g.batch_size, log=log)


def answer_prompts(g: GenerateConfig, label: str, start: Callable[[], Any], *, step: int,
                   meta: dict[str, Any] | None = None, where: str | None = None, added: str = "",
                   fix: str = "shorten or leave out those prompts", log: Any = print) -> Path:
    """Answer every prompt of g.prompts not yet in g.output, appending one generations record per answer:
    the loop of every local writer (generate_file on either backend, the in-context baseline).

    label: the model the records are written under; a file holding another model's answers is refused.
    start(): the generator (prompt_ids, generate, dec, context), called only if a prompt is left to answer.
    step: prompts per durable write. meta: added to every record. where, added, fix: check_context's words.
    """
    from tqdm.auto import tqdm

    prompts = load_dataset(g.prompts, purpose="prompt")
    if g.limit is not None:
        prompts = prompts[: g.limit]
    out = Path(g.output)
    done = done_keys(out, lambda r: r.get("prompt_id"), model=label)
    todo = [p for p in prompts if p.id not in done]
    if not todo:
        log(f"{out}: all {len(prompts)} prompts already answered")
        return out
    gen = start()
    encoded = {c.id: gen.prompt_ids(c.messages) for c in todo}
    check_context({k: len(v) for k, v in encoded.items()}, gen.dec.max_new_tokens, gen.context,
                  where=where or str(g.prompts), added=added, fix=fix)
    todo.sort(key=lambda c: len(encoded[c.id]))  # similar lengths batch with little padding
    bar = tqdm(total=len(prompts), initial=len(prompts) - len(todo), desc=f"generate {Path(label).name}",
               unit="prompt", dynamic_ncols=True)
    with JsonlAppender(out) as w:
        for s in range(0, len(todo), step):
            batch = todo[s:s + step]
            replies = gen.generate([c.messages for c in batch], on_step=batch_progress(bar, len(batch)),
                                   encoded=[encoded[c.id] for c in batch])
            w.write_many(generation_record(c, r, label, gen.dec, meta=meta) for c, r in zip(batch, replies, strict=True))
            bar.n = len(prompts) - len(todo) + s + len(batch)
            bar.set_postfix_str("")
            bar.refresh()
    bar.close()
    return out


def check_context(lengths: dict[str, int], max_new_tokens: int, context: int, *, where: str,
                  added: str = "", fix: str = "shorten or leave out those prompts") -> None:
    """Refuse before generating when a prompt leaves less than max_new_tokens of the model's context.

    Such a prompt's answer would be cut at the room left (one token when the prompt fills the
    context), and answers cut short are judged as a worse model rather than refused. lengths:
    prompt id -> prompt tokens;
    added: what the counted tokens include besides the prompt (" with the 3 examples").
    """
    over = {k: n for k, n in lengths.items() if n + max_new_tokens > context}
    if not over:
        return
    longest = max(over, key=over.__getitem__)
    n = over[longest]
    room = (f"or lower max_new_tokens (generate.max_new_tokens) to at most {context - n}" if n < context
            else "the prompt alone fills the context, so fewer answer tokens cannot help")
    raise LimaError(f"{len(over)} of {len(lengths)} prompts do not fit: the longest "
                    f"({longest!r}) is {n} tokens{added}, plus max_new_tokens {max_new_tokens} makes "
                    f"{n + max_new_tokens}, more than the model's context of {context} tokens", where=where,
                    fix=f"{fix}, {room}")


def batch_progress(bar: Any, size: int) -> Callable[[int], None]:
    """A step callback that moves the bar as answers of the running batch finish, and shows the
    step, so a batch of long answers on a CPU does not look stuck at 0."""
    start, state = bar.n, {"step": 0}

    def on_step(finished: int) -> None:
        state["step"] += 1
        bar.n = start + min(finished, size)
        if state["step"] % 8 == 0:
            bar.set_postfix_str(f"token {state['step']}, {size - finished} answers running", refresh=False)
        bar.refresh()
    return on_step


# ----------------------------------------------------------------- chat


def trim_history(gen: Generator, messages: list[Message], reserve: int) -> tuple[list[Message], int]:
    """Drop the oldest exchanges until the prompt leaves `reserve` tokens free; returns (kept, dropped turns).

    Turns go two at a time (a user turn and the reply to it) until the prompt fits or one turn is
    left. Rendering the whole conversation again after every dropped pair took minutes for 40,000
    short turns, so the answer is found in linear time instead: turns are tokenised from the newest
    back, each once, until a lower bound of the kept part's length is over budget (older turns can
    never be kept), and the exact rendering is bisected over the few drops left.
    """
    system = [m for m in messages[:1] if m.role == "system"]
    body = messages[len(system):]
    budget = gen.context - reserve
    most = len(body) // 2  # dropping this many pairs leaves at most one turn

    def fits(k: int) -> bool:  # the rule of dropping pairs one by one, on the exact prompt
        return len(body) - 2 * k <= 1 or len(gen.prompt_ids(system + body[2 * k:])) <= budget

    # A turn's own tokens less two (which may merge with its neighbours) is at most what it adds.
    cut, bound, start = most, 0, len(body)
    counts = _token_counts_newest_first(gen.tok, body)
    for k in range(most, -1, -1):
        while start > 2 * k:
            start -= 1
            bound += max(0, next(counts) - 2)
        if bound > budget:
            break
        cut = k
    low, high = cut, most
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if fits(mid) else (mid + 1, high)
    # A chat template that strips whitespace can make the bound too high: confirm the cut itself.
    while 0 < low <= cut and fits(low - 1):
        low -= 1
    return system + body[2 * low:], 2 * low


def _token_counts_newest_first(tok: Any, turns: list[Message]) -> Iterator[int]:
    """Each turn's token count, newest first, tokenised in growing batches (few are usually needed)."""
    end, size = len(turns), 64
    while end > 0:
        batch = turns[max(0, end - size):end]
        ids = tok([m.content for m in batch], add_special_tokens=False)["input_ids"]
        yield from (len(x) for x in reversed(ids))
        end, size = end - len(batch), size * 2


def chat(model_cfg: ModelConfig, turns_cfg: TurnsConfig, g: GenerateConfig, *, input_fn: Any = None,
         print_fn: Any = print) -> list[Message]:
    """Multi-turn chat in the terminal. /reset clears the history, /quit (or Ctrl-D) leaves."""
    from transformers import TextStreamer

    lm, fmt = load_for_generation(model_cfg, turns_cfg)
    gen = Generator(lm, fmt, Decoding.from_config(g))
    print_fn(f"chatting with {lm.adapter or lm.path} ({fmt.describe()})\n/reset clears the history, /quit leaves")
    history: list[Message] = []
    while True:
        try:
            text = (input_fn or input)("you> ").strip()  # builtins.input looked up now, not at import
        except EOFError:
            break
        if text in ("/quit", "/exit"):
            break
        if text == "/reset":
            history = []
            print_fn("(history cleared)")
            continue
        if not text:
            continue
        history.append(Message("user", text))
        history, dropped = trim_history(gen, history, reserve=min(g.max_new_tokens, gen.context // 4))
        if dropped:
            print_fn(f"(context full: dropped the oldest {dropped} turns)")
        streaming = input_fn is None  # a real terminal: show tokens as they come
        if streaming:
            print("assistant> ", end="", flush=True)
        streamer = TextStreamer(lm.tokenizer, skip_prompt=True, skip_special_tokens=True) if streaming else None
        reply = gen.generate([history], streamer=streamer)[0]
        if not streaming:
            print_fn(f"assistant> {reply.text}")
        history.append(Message("assistant", reply.text))
    return history
