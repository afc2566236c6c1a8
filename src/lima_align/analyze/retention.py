"""Knowledge retention (`lima-align analyze retention`): did alignment make the model forget?

Two measures, each computed for the base and the aligned model on the same token ids (the two must share
a vocabulary):

* Perplexity on held-out plain text, with no chat format: each passage is tokenised as the tokenizer
  starts a text (with BOS where it adds one) and every token after the first is scored. The reported
  perplexity is exp(total NLL / total scored tokens) over all passages (token-weighted), with a 95%
  bootstrap interval resampling passages. A passage longer than the window is scored with a sliding
  window: windows step by half their length and each token is scored once, in the first window where
  it has at least half a window of context.
* Multiple-choice accuracy by log-likelihood: the context is "Question: {question}\\nAnswer:" and each
  choice is the continuation " {choice}" (context and continuation tokenised separately and joined, so
  the scored tokens are exactly the choice's). A choice's raw score is the sum of its tokens' log-probs;
  its length-normalised score divides that by the choice's length in UTF-8 bytes, so long choices are
  not penalised for having more tokens. The prediction is the highest score (the first on a tie).
  `accuracy` uses the normalised score, `accuracy_raw` the raw one; both carry a Wilson 95% interval,
  and the aligned-minus-base difference a paired bootstrap interval over questions.

Files: texts are JSONL `{"id", "subject", "text"}` (or a .txt file, passages separated by blank lines);
questions are JSONL `{"id", "question", "choices": [...], "answer": <0-based index>, "subject"}`.
The shipped sets (src/lima_align/data/retention/) are the defaults.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..errors import LimaError, ProblemList
from ..jsonl import check_output, read_jsonl, write_text_atomic
from ..logprobs import batches, continuation_logprobs
from ..stats import wilson

DATA = Path(__file__).resolve().parent.parent / "data" / "retention"
DEFAULT_TEXTS = DATA / "passages.jsonl"
DEFAULT_MCQ = DATA / "mcq.jsonl"


# ----------------------------------------------------------------- files


def load_texts(path: str | Path | None = None) -> list[dict[str, str]]:
    path = Path(path or DEFAULT_TEXTS)
    if path.suffix == ".txt":
        if not path.exists():
            raise LimaError("file not found", where=str(path), fix="check the path")
        parts = [p.strip() for p in path.read_text(encoding="utf-8").split("\n\n")]
        return [{"id": f"{path.stem}-{i}", "subject": "text", "text": p} for i, p in enumerate(parts) if p]
    problems = ProblemList()
    out = []
    for n, r in read_jsonl(path):
        if not isinstance(r.get("text"), str) or not r["text"].strip():
            problems.add(f"{path}:{n} text", "missing or empty", 'give {"id": ..., "subject": ..., "text": "..."}')
            continue
        out.append({"id": str(r.get("id", f"{path.stem}-{n}")), "subject": str(r.get("subject", "text")),
                    "text": r["text"]})
    problems.raise_if_any()
    return out


def load_mcq(path: str | Path | None = None) -> list[dict[str, Any]]:
    path = Path(path or DEFAULT_MCQ)
    problems = ProblemList()
    out = []
    for n, r in read_jsonl(path):
        where = f"{path}:{n}"
        q, choices, ans = r.get("question"), r.get("choices"), r.get("answer")
        if not isinstance(q, str) or not q.strip():
            problems.add(f"{where} question", "missing or empty", "write the question text")
        if not (isinstance(choices, list) and len(choices) >= 2 and all(isinstance(c, str) and c.strip()
                                                                        for c in choices)):
            problems.add(f"{where} choices", "needs a list of at least two non-empty strings",
                         'e.g. "choices": ["Paris", "Rome", "Madrid", "Lisbon"]')
        elif not (isinstance(ans, int) and not isinstance(ans, bool) and 0 <= ans < len(choices)):
            problems.add(f"{where} answer", f"must be the 0-based index of the right choice, got {ans!r}",
                         f"use an integer from 0 to {len(choices) - 1}")
        out.append({"id": str(r.get("id", f"q{n}")), "question": q, "choices": choices, "answer": ans,
                    "subject": str(r.get("subject", "general"))})
    problems.raise_if_any()
    return out


# ----------------------------------------------------------------- log-probs


def windows(n: int, window: int) -> list[tuple[int, int, int]]:
    """(begin, end, first scored position) covering tokens 1..n-1 once each; steps of half a window."""
    if n <= window:
        return [(0, n, 1)]
    step = max(1, window // 2)
    out, scored = [], 1
    begin = 0
    while scored < n:
        end = min(n, begin + window)
        out.append((begin, end, scored))
        scored = end
        begin += step
        if end == n:
            break
    return out


def perplexity(model: Any, tok: Any, texts: list[dict[str, str]], *, window: int = 1024,
               batch_tokens: int = 1024) -> list[dict[str, Any]]:
    """Per passage: summed NLL and number of scored tokens."""
    items, owner = [], []
    for k, t in enumerate(texts):
        ids = tok(t["text"])["input_ids"]
        for b, e, s in windows(len(ids), window):
            items.append((ids[b:e], s - b))
            owner.append(k)
    lps = continuation_logprobs(model, items, pad_id=tok.pad_token_id or 0, batch_tokens=batch_tokens,
                                desc="perplexity")
    res = [{"id": t["id"], "subject": t["subject"], "nll": 0.0, "tokens": 0} for t in texts]
    for k, lp in zip(owner, lps, strict=True):
        res[k]["nll"] -= sum(lp)
        res[k]["tokens"] += len(lp)
    return res


def mcq_prompt(question: str) -> str:
    return f"Question: {question.strip()}\nAnswer:"


def score_mcq(model: Any, tok: Any, questions: list[dict[str, Any]], *,
              batch_tokens: int = 1024) -> list[dict[str, Any]]:
    """Per question: raw and length-normalised scores of every choice and the two predictions."""
    items, owner = [], []
    for k, q in enumerate(questions):
        ctx = tok(mcq_prompt(q["question"]))["input_ids"]
        for c in q["choices"]:
            items.append((ctx + tok(" " + c.strip(), add_special_tokens=False)["input_ids"], len(ctx)))
            owner.append(k)
    lps = continuation_logprobs(model, items, pad_id=tok.pad_token_id or 0, batch_tokens=batch_tokens,
                                desc="choices")
    raw: dict[int, list[float]] = defaultdict(list)
    for k, lp in zip(owner, lps, strict=True):
        raw[k].append(sum(lp))
    return [predict(q, raw[k]) for k, q in enumerate(questions)]


def predict(q: dict[str, Any], raw: list[float]) -> dict[str, Any]:
    norm = [s / max(1, len(c.strip().encode("utf-8"))) for s, c in zip(raw, q["choices"], strict=True)]
    pred = max(range(len(norm)), key=lambda i: (norm[i], -i))
    pred_raw = max(range(len(raw)), key=lambda i: (raw[i], -i))
    return {"id": q["id"], "subject": q["subject"], "answer": q["answer"], "pred": pred, "pred_raw": pred_raw,
            "correct": pred == q["answer"], "correct_raw": pred_raw == q["answer"],
            "raw": [round(s, 4) for s in raw], "norm": [round(s, 5) for s in norm]}


# ----------------------------------------------------------------- statistics


def _ppl_estimate(rows: list[dict[str, Any]], n_boot: int, seed: int) -> dict[str, Any]:
    import numpy as np

    nll = np.array([r["nll"] for r in rows])
    tokens = np.array([r["tokens"] for r in rows])
    if tokens.sum() == 0:
        return {"value": None, "ci": [None, None], "tokens": 0, "nll_per_token": None}
    value = float(np.exp(nll.sum() / tokens.sum()))
    ci: list[float | None] = [None, None]
    if len(rows) >= 2:
        idx = np.random.default_rng(seed).integers(0, len(rows), size=(n_boot, len(rows)))
        t = tokens[idx].sum(1)
        boot = np.exp(nll[idx].sum(1) / np.maximum(t, 1))
        ci = [float(x) for x in np.percentile(boot[t > 0], [2.5, 97.5])]
    return {"value": value, "ci": ci, "tokens": int(tokens.sum()), "nll_per_token": float(nll.sum() / tokens.sum())}


def _mcq_summary(preds: list[dict[str, Any]]) -> dict[str, Any]:
    subjects: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in preds:
        subjects[p["subject"]].append(p)

    def acc(ps: list[dict[str, Any]]) -> dict[str, Any]:
        return {"n": len(ps), "accuracy": wilson(sum(p["correct"] for p in ps), len(ps)),
                "accuracy_raw": wilson(sum(p["correct_raw"] for p in ps), len(ps))}

    return {**acc(preds), "by_subject": {s: acc(ps) for s, ps in sorted(subjects.items())}}


def _paired_difference(a: list[bool], b: list[bool], n_boot: int, seed: int) -> dict[str, Any]:
    """Aligned minus base accuracy on the same questions, with a paired bootstrap 95% interval."""
    import numpy as np

    x = np.array(b, dtype=float) - np.array(a, dtype=float)
    if len(x) == 0:
        return {"value": None, "ci": [None, None]}
    idx = np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))
    lo, hi = np.percentile(x[idx].mean(1), [2.5, 97.5])
    return {"value": float(x.mean()), "ci": [float(lo), float(hi)]}


# ----------------------------------------------------------------- the job


def evaluate_model(model: Any, tok: Any, texts: list[dict[str, str]], questions: list[dict[str, Any]], *,
                   window: int, batch_tokens: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    window = min(window, getattr(getattr(model, "config", None), "max_position_embeddings", window))
    ppl = perplexity(model, tok, texts, window=window, batch_tokens=batch_tokens) if texts else []
    preds = score_mcq(model, tok, questions, batch_tokens=batch_tokens) if questions else []
    return ppl, preds


def analyze_retention(base: str, aligned: str, output: str | Path, *, texts: str | Path | None = None,
                      mcq: str | Path | None = None, dtype: str = "float32", window: int = 1024,
                      batch_tokens: int = 1024, n_boot: int = 2000, seed: int = 0, log: Any = print) -> Path:
    """Evaluate base then aligned (one model in memory at a time) and write the `{"kind": "retention"}` summary."""
    from ..models import EMBEDDED, load_model, resolve_model_path
    from .shift import same_vocabulary

    passages, questions = load_texts(texts), load_mcq(mcq)
    check_output(output)
    for name in (base, aligned):  # a wrong second path fails now, not after the first model's evaluation
        if name != EMBEDDED:
            resolve_model_path(name)
    models, first_tok = [], None
    per_model: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    for role, name in (("base", base), ("aligned", aligned)):
        lm = load_model(name, dtype=dtype)
        if first_tok is None:
            first_tok = lm.tokenizer
        else:
            same_vocabulary(first_tok, lm.tokenizer)
        log(f"retention: {role} {name}: {len(passages)} passages, {len(questions)} questions")
        ppl, preds = evaluate_model(lm.model, lm.tokenizer, passages, questions, window=window,
                                    batch_tokens=batch_tokens)
        del lm
        per_model[role] = (ppl, preds)
        by_subject: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in ppl:
            by_subject[r["subject"]].append(r)
        models.append({"role": role, "model": name,
                       "perplexity": {**_ppl_estimate(ppl, n_boot, seed),
                                      "by_subject": {s: _ppl_estimate(rs, n_boot, seed)
                                                     for s, rs in sorted(by_subject.items())}} if ppl else None,
                       "mcq": _mcq_summary(preds) if preds else None})
    bp, ap = per_model["base"][1], per_model["aligned"][1]
    items = [{"id": b["id"], "subject": b["subject"], "answer": b["answer"],
              "base": {k: b[k] for k in ("pred", "pred_raw", "raw", "norm")},
              "aligned": {k: a[k] for k in ("pred", "pred_raw", "raw", "norm")}} for b, a in zip(bp, ap, strict=True)]
    summary = {"kind": "retention", "base": base, "aligned": aligned,
               "texts": str(texts or DEFAULT_TEXTS), "mcq": str(mcq or DEFAULT_MCQ), "models": models,
               "difference": {"accuracy": _paired_difference([p["correct"] for p in bp], [p["correct"] for p in ap],
                                                             n_boot, seed),
                              "accuracy_raw": _paired_difference([p["correct_raw"] for p in bp],
                                                                 [p["correct_raw"] for p in ap], n_boot, seed)},
               "mcq_items": items,
               "definitions": {"perplexity": "exp(total NLL / scored tokens), plain text, token-weighted over "
                                             f"passages; sliding window {window} tokens, step {window // 2}",
                               "accuracy": "argmax of sum log p(choice tokens) / UTF-8 bytes of the choice",
                               "accuracy_raw": "argmax of sum log p(choice tokens)",
                               "intervals": "accuracy: Wilson 95%; perplexity: bootstrap over passages; "
                                            f"difference: paired bootstrap over questions ({n_boot} resamples)"}}
    write_text_atomic(output, json.dumps(summary, indent=2, ensure_ascii=False))
    return Path(output)
