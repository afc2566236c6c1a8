"""Token distribution shift (`lima-align analyze shift`): which tokens of an aligned answer did alignment change?

Following Lin et al. (2023, "The Unlocking Spell on Base LLMs"): take an aligned model's answer, run
the *base* model over exactly the same context (the aligned model's turn format, prompt ids followed by
the answer's ids) in one teacher-forced forward pass, and read off how the base model ranked each
answer token among its next-token candidates.

    rank = 1 + the number of vocabulary entries whose logit is strictly higher than the token's

so a token tied for the top counts as rank 1. Positions are then

    unshifted: rank 1      marginal: rank 2-3      shifted: rank > 3

The logits are the model's raw next-token scores: no temperature, repetition penalty or banned tokens,
so the ranks describe the two distributions, not a decoding setting. The answer is the token ids the
aligned model generated (the record's "output_ids", written by `lima-align generate`); a record without
them, or whose ids do not decode to its text with this tokenizer, is tokenised again from its text
(without BOS), and the summary counts how many answers were. The end-of-turn token is not counted,
because the base model was never taught it. Both models must share one vocabulary, or a rank would
compare different tokens.

A full fine-tune may add a token (a new end-of-turn token) that the prompt context then holds. The base
model has no embedding for it (or only an untrained padding row), so whatever stood in its place would be
a guess: such tokens are left out of the base model's context, which keeps the conversation text the
base model can read; the records and the summary count them ("context_dropped").

Per-answer records go to `<output>.records.jsonl` as they are computed (a rerun skips the answers
already there); the summary (`{"kind": "shift", ...}`) is what `lima-align report` draws.

Answers the aligned model generates here are greedy with no repetition penalty by default, so each token
is the aligned model's own first choice and every shifted position is a real disagreement between the
two models. Sampled answers (LIMA's temperature 0.7, top-p 0.9, penalty 1.2) also contain tokens the
aligned model itself ranks low: measure that floor by passing the aligned model as --base too.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checkpoint import turns_for
from ..errors import LimaError
from ..jsonl import JsonlAppender, done_keys, read_jsonl, write_text_atomic
from ..logprobs import batches, keep_logits, right_padded

CLASSES = ("unshifted", "marginal", "shifted")
N_BINS = 10
TOP_K = 20


def rank_class(rank: int) -> str:
    return "unshifted" if rank == 1 else "marginal" if rank <= 3 else "shifted"


def records_path(output: str | Path) -> Path:
    out = Path(output)
    return out.with_name(out.stem + ".records.jsonl")


# ----------------------------------------------------------------- ranks


def token_ranks(model: Any, pairs: list[tuple[list[int], list[int]]], *, pad_id: int = 0,
                batch_tokens: int = 1024) -> list[tuple[list[int], list[int]]]:
    """For each (context ids, answer ids): the model's rank of every answer token given everything before
    it, and the model's own top-1 token at that position. Rows are right-padded, so positions stay those
    of an unpadded pass; the logits kept start at the shortest context in the batch."""
    import torch

    out: list[tuple[list[int], list[int]]] = [([], []) for _ in pairs]
    lengths = [len(c) + len(a) for c, a in pairs]
    dev = next(model.parameters()).device
    with torch.no_grad():
        for idx in batches(lengths, batch_tokens):
            idx = [i for i in idx if pairs[i][1]]
            if not idx:
                continue
            ids, mask = right_padded([pairs[i][0] + pairs[i][1] for i in idx], pad_id)
            width = ids.shape[1]
            first = min(len(pairs[i][0]) for i in idx) - 1  # position predicting the earliest answer token
            keep = width - first
            logits = keep_logits(model, ids.to(dev), mask.to(dev), keep).float()
            for r, i in enumerate(idx):
                ctx, ans = pairs[i]
                start = len(ctx) - 1 - first
                rows = logits[r, start:start + len(ans)]
                target = torch.tensor(ans, device=rows.device)
                chosen = rows.gather(1, target[:, None])
                ranks = 1 + (rows > chosen).sum(-1)
                out[i] = (ranks.tolist(), rows.argmax(-1).tolist())
            del logits
    return out


# ----------------------------------------------------------------- summary


@dataclass
class ShiftSources:
    base: str
    aligned: str  # a label: the aligned model or the generations file


def summarize_shift(records: list[dict[str, Any]], sources: ShiftSources, *, n_bins: int = N_BINS,
                    top_k: int = TOP_K, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Shares of each class (token-weighted, with a bootstrap interval over answers), by relative position
    in the answer, and the tokens most often shifted."""
    import numpy as np

    counts = Counter()
    per_answer = np.zeros((len(records), 3))
    bins = [Counter() for _ in range(n_bins)]
    by_token: dict[str, Counter] = defaultdict(Counter)
    examples: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for k, r in enumerate(records):
        n = len(r["ranks"])
        for i, (rank, tok, top) in enumerate(zip(r["ranks"], r["tokens"], r["base_top"], strict=True)):
            c = rank_class(rank)
            counts[c] += 1
            per_answer[k, CLASSES.index(c)] += 1
            bins[min(n_bins - 1, i * n_bins // n)][c] += 1
            by_token[tok][c] += 1
            if c == "shifted" and len(examples[tok]) < 3:
                before = "".join(r["tokens"][max(0, i - 8):i])
                examples[tok].append({"prompt_id": r.get("prompt_id"), "before": before, "base_top": top,
                                      "rank": rank})
    total = sum(counts.values())
    shares = {c: (counts[c] / total if total else None) for c in CLASSES}
    ci = _bootstrap_shares(per_answer, n_boot, seed)
    position = []
    for b, cnt in enumerate(bins):
        n = sum(cnt.values())
        position.append({"bin": [b / n_bins, (b + 1) / n_bins], "tokens": n,
                         **{c: (cnt[c] / n if n else None) for c in CLASSES}})
    ranked = sorted(by_token.items(), key=lambda kv: (-kv[1]["shifted"], -sum(kv[1].values()), kv[0]))
    top = [{"token": t, "shifted": c["shifted"], "marginal": c["marginal"], "occurrences": sum(c.values()),
            "share_shifted": c["shifted"] / sum(c.values()), "examples": examples.get(t, [])}
           for t, c in ranked[:top_k] if c["shifted"]]
    return {"kind": "shift", "base": sources.base, "aligned": sources.aligned, "answers": len(records),
            "tokens": total, "counts": {c: counts[c] for c in CLASSES},
            "shares": {c: {"value": shares[c], "ci": ci[c]} for c in CLASSES},
            "by_position": position, "top_shifted": top,
            "answer_ids": {"generated": sum(r.get("answer_ids") == "generated" for r in records),
                           "retokenised": sum(r.get("answer_ids") != "generated" for r in records)},
            "context_dropped": sum(r.get("context_dropped", 0) for r in records),
            "definitions": {"rank": "1 + number of vocabulary tokens with a strictly higher base-model logit",
                            "unshifted": "rank 1", "marginal": "rank 2-3", "shifted": "rank > 3",
                            "interval": f"95% percentile bootstrap over answers ({n_boot} resamples, seed {seed})"}}


def _bootstrap_shares(per_answer: Any, n_boot: int, seed: int) -> dict[str, list[float | None]]:
    import numpy as np

    if len(per_answer) < 2 or per_answer.sum() == 0:
        return {c: [None, None] for c in CLASSES}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(per_answer), size=(n_boot, len(per_answer)))
    sums = per_answer[idx].sum(axis=1)  # (n_boot, 3)
    tot = sums.sum(axis=1, keepdims=True)
    share = np.divide(sums, tot, out=np.zeros_like(sums), where=tot > 0)
    lo, hi = np.percentile(share, [2.5, 97.5], axis=0)
    return {c: [float(lo[j]), float(hi[j])] for j, c in enumerate(CLASSES)}


# ----------------------------------------------------------------- the job


def same_vocabulary(base_tok: Any, aligned_tok: Any) -> None:
    """The aligned tokenizer may add tokens (a new end-of-turn token) but must not change existing ones."""
    base_vocab, aligned_vocab = base_tok.get_vocab(), aligned_tok.get_vocab()
    changed = [t for t, i in base_vocab.items() if aligned_vocab.get(t) != i]
    if changed:
        raise LimaError(f"the base and aligned models use different tokenizers ({len(changed)} of "
                        f"{len(base_vocab)} base tokens differ, e.g. {changed[:3]!r}), so token ranks cannot be "
                        "compared", where="--base / --aligned-model",
                        fix="compare an aligned model with the base it was fine-tuned from")


def aligned_format(aligned_model: str, base_tok: Any) -> Any:
    """The aligned model's tokenizer and turn format, read from its folder without loading its weights
    (the same rules as generate.load_for_generation)."""
    from ..config import TurnsConfig
    from ..models import load_tokenizer, resolve_model_path
    from ..turns import TurnFormat

    path = Path(resolve_model_path(aligned_model))
    tok = load_tokenizer(str(path)) if (path / "tokenizer_config.json").exists() else base_tok
    return TurnFormat(tok, turns_for(path, TurnsConfig()), for_training=False)


def analyze_shift(base: str, output: str | Path, *, generations: str | Path | None = None,
                  aligned_model: str | None = None, prompts: str = "seed:test", limit: int | None = None,
                  max_new_tokens: int = 512, temperature: float = 0.0, repetition_penalty: float = 1.0,
                  turns_format: str = "plain", eot: str = "eos", dtype: str = "float32",
                  batch_tokens: int = 1024, n_boot: int = 2000, log: Any = print) -> Path:
    """Rank every aligned answer token under the base model; write per-answer records and the summary."""
    from tqdm.auto import tqdm

    from ..config import GenerateConfig, ModelConfig, TurnsConfig
    from ..generate import generate_file, load_for_generation
    from ..models import load_model
    from ..records import Message, read_generations
    from ..turns import TurnFormat

    if generations is None and aligned_model is None:
        raise LimaError("nothing to analyse", fix="give --aligned GENERATIONS.jsonl or --aligned-model MODEL (or both)")
    output = Path(output)
    if aligned_model and generations is None:
        lm, fmt = load_for_generation(ModelConfig(name=aligned_model, dtype=dtype), TurnsConfig())
        generations = output.with_name(output.stem + ".generations.jsonl")
        g = GenerateConfig(prompts=prompts, output=str(generations), limit=limit, max_new_tokens=max_new_tokens,
                           temperature=temperature, repetition_penalty=repetition_penalty, model_label=aligned_model)
        generate_file(ModelConfig(name=aligned_model), TurnsConfig(), g, lm_fmt=(lm, fmt), log=log)
        del lm
    base_lm = load_model(base, dtype=dtype)
    if aligned_model:
        fmt = aligned_format(aligned_model, base_lm.tokenizer)
        aligned_tok = fmt.tok
        same_vocabulary(base_lm.tokenizer, aligned_tok)
    else:
        aligned_tok = base_lm.tokenizer
        fmt = TurnFormat(aligned_tok, TurnsConfig(format=turns_format, eot=eot), for_training=False)
    gens = read_generations(generations)
    rec_path = records_path(output)
    done = done_keys(rec_path, lambda r: r.get("key"))
    todo = [g for g in gens if answer_key(g) not in done]
    # ids past the base tokenizer are tokens the aligned model added; embedding rows past it are padding
    known = min(len(base_lm.tokenizer), base_lm.model.get_output_embeddings().weight.shape[0])
    context = getattr(base_lm.model.config, "max_position_embeddings", 8192)
    log(f"shift: {len(gens)} answers ({len(gens) - len(todo)} already done); {fmt.describe()}")
    bar = tqdm(total=len(gens), initial=len(gens) - len(todo), desc="shift", unit="answer", dynamic_ncols=True)
    pad = base_lm.tokenizer.pad_token_id or 0
    retokenised = dropped = 0
    with JsonlAppender(rec_path) as w:
        for s in range(0, len(todo), 16):  # 16 answers per durable write
            chunk = todo[s:s + 16]
            pairs, extra = [], []
            for g in chunk:
                full = fmt.encode_prompt([Message(m["role"], m["content"]) for m in g["messages"]])
                ctx = [t for t in full if t < known]
                ans = generated_ids(g, aligned_tok)
                how = "generated" if ans is not None else "retokenised"
                if ans is None:
                    ans = aligned_tok(g["output"], add_special_tokens=False)["input_ids"]
                bad = [t for t in ans if t >= known]
                if bad:
                    raise LimaError(f"answer {g['prompt_id']!r} uses token ids the base model does not have "
                                    f"({bad[:3]})", where=str(generations),
                                    fix="use the base model the aligned model was fine-tuned from")
                pairs.append((ctx, ans[: max(0, context - len(ctx))]))
                extra.append({"answer_ids": how, "context_dropped": len(full) - len(ctx)})
                retokenised += how == "retokenised"
                dropped += len(full) - len(ctx)
            ranks = token_ranks(base_lm.model, pairs, pad_id=pad, batch_tokens=batch_tokens)
            w.write_many({**_record(g, p, r, aligned_tok), **x}
                         for g, p, r, x in zip(chunk, pairs, ranks, extra, strict=True))
            bar.update(len(chunk))
    bar.close()
    if retokenised:
        log(f"shift: {retokenised} of {len(todo)} answers tokenised again from their text (their records carry no "
            "output_ids from this tokenizer; `lima-align generate` writes them)")
    if dropped:
        log(f"shift: {dropped} context tokens the base model does not have (added by fine-tuning, e.g. a new "
            "end-of-turn token) left out of its context")
    # only this run's answers: a records file reused with another generations file keeps its old lines
    wanted = {answer_key(g) for g in gens}
    records = list({r["key"]: r for _, r in read_jsonl(rec_path) if r.get("key") in wanted}.values())
    label = aligned_model or str(generations)
    summary = summarize_shift(records, ShiftSources(base, label), n_boot=n_boot)
    summary["records"] = str(rec_path)
    write_text_atomic(output, json.dumps(summary, indent=2, ensure_ascii=False))
    return output


def generated_ids(g: dict[str, Any], tok: Any) -> list[int] | None:
    """The record's generated token ids, if it has them and they are this tokenizer's ids for its text
    (ids from another tokenizer, or a text edited after generation, would rank the wrong tokens)."""
    ids = g.get("output_ids")
    if not isinstance(ids, list) or not all(isinstance(t, int) and 0 <= t < len(tok) for t in ids):
        return None
    return ids if tok.decode(ids, skip_special_tokens=True).strip() == g["output"] else None


def answer_key(g: dict[str, Any]) -> str:
    """Resume key: the record id and a digest of its prompt and answer, so an edited or different answer
    under the same id is analysed again rather than taken from an old line."""
    import hashlib

    body = json.dumps([g.get("messages"), g.get("output")], ensure_ascii=False, sort_keys=True)
    return f"{g.get('id', g['prompt_id'])}:{hashlib.sha256(body.encode()).hexdigest()[:16]}"


def _record(g: dict[str, Any], pair: tuple[list[int], list[int]], ranks: tuple[list[int], list[int]],
            tok: Any) -> dict[str, Any]:
    ctx, ans = pair
    return {"id": g.get("id", g["prompt_id"]), "key": answer_key(g), "prompt_id": g["prompt_id"],
            "model": g.get("model"),
            "context_tokens": len(ctx), "ranks": ranks[0], "tokens": [tok.decode([t]) for t in ans],
            "base_top": [tok.decode([t]) for t in ranks[1]]}
