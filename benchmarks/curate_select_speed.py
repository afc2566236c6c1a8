"""Speed of curate selection pieces: facility location and k-center on fake clustered embeddings, MiniLM.

Run on a quiet machine from /work/main:
    .venv/bin/python benchmarks/curate_select_speed.py --n 10000 --k 1000 --big 50000 --texts 1000
Tiny check:  .venv/bin/python benchmarks/curate_select_speed.py --n 500 --k 50 --big 0 --texts 16
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def clustered(n: int, dim: int = 384, clusters: int = 200, seed: int = 0) -> np.ndarray:
    """Fake sentence embeddings: points around random centers (real embeddings are clustered too)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim))
    x = centers[rng.integers(clusters, size=n)] + rng.normal(0, 0.6, (n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    from lima_align.curate.dedup import DedupConfig, dedup
    from lima_align.curate.select import facility_location, kcenter

    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--big", type=int, default=50000, help="also a pool this large with the default 10K ground set")
    p.add_argument("--texts", type=int, default=1000, help="texts to embed with the bundled MiniLM (0: skip)")
    a = p.parse_args()
    res: dict[str, float] = {}
    x = clustered(a.n)
    _, res[f"facility_location_{a.n}_k{a.k}_s"] = timed(lambda: facility_location(x, a.k, seed=0))
    _, res[f"kcenter_{a.n}_k{a.k}_s"] = timed(lambda: kcenter(x, a.k, seed=0))
    if a.big:
        xb = clustered(a.big)
        _, res[f"facility_location_{a.big}_ground10000_k{a.k}_s"] = timed(lambda: facility_location(xb, a.k, seed=0))
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(5000)]
    recs = [{"id": str(i), "messages": [{"role": "user", "content": " ".join(rng.choice(words, 15))},
                                         {"role": "assistant", "content": " ".join(rng.choice(words, 250))}]}
            for i in range(a.n)]
    _, t = timed(lambda: dedup(recs, DedupConfig(), seed=0))
    res[f"dedup_records_per_s_{a.n}"] = a.n / t
    if a.texts:
        from lima_align.curate.embed import SentenceEmbedder

        emb = SentenceEmbedder()
        _, res["minilm_load_s"] = timed(lambda: emb(["warm up"]))
        texts = [" ".join(rng.choice(words, 180)) for _ in range(a.texts)]  # ~1,000 characters each
        _, t = timed(lambda: emb(texts))
        res["minilm_texts_per_s"] = a.texts / t
    print(json.dumps({k: round(v, 2) for k, v in res.items()}, indent=1))


if __name__ == "__main__":
    main()
