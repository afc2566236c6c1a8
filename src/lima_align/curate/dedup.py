"""Exact and near-duplicate removal over candidate records, keeping the first occurrence.

Exact: the prompt and response, lower-cased with whitespace collapsed, hashed with sha256.
Near: MinHash signatures over word 3-shingles, indexed in a MinHashLSH; a record whose estimated
Jaccard similarity to an earlier kept record reaches `threshold` is dropped. LSH only proposes
candidates (banding has false positives), so each candidate is checked against the estimate, and
the earliest matching record (in input order) is named as the one it duplicates. MinHash uses
CRC32 with seeded permutations, so the result depends only on the
input order and the seed.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..config import setting
from ..errors import ProblemList

SHINGLE = 3  # words per shingle: short enough that a few edited words change few shingles


@dataclass
class DedupConfig:
    exact: bool = setting(True, "drop records whose normalised prompt + response equal an earlier record's")
    near: bool = setting(True, "drop near-duplicates (MinHash + LSH over word 3-shingles)")
    threshold: float = setting(0.8, "estimated Jaccard similarity of word shingles at or above which a record "
                               "is a near-duplicate of an earlier one")
    num_perm: int = setting(128, "MinHash permutations (more: a finer similarity estimate, slower)")

    def check(self, problems: ProblemList, prefix: str = "") -> None:
        if not 0.0 < self.threshold <= 1.0:
            problems.add(f"{prefix}threshold", f"must be in (0, 1], got {self.threshold}")
        if self.num_perm < 16:
            problems.add(f"{prefix}num_perm", f"must be >= 16, got {self.num_perm}",
                         "128 is a good default; fewer permutations make the estimate too coarse")


# ------------------------------------------------------------------ record text (shared by select/embed)


def _messages(record: dict[str, Any]) -> list[dict[str, Any]]:
    msgs = record.get("messages")
    return [m for m in msgs if isinstance(m, dict)] if isinstance(msgs, list) else []


def prompt_of(record: dict[str, Any]) -> str:
    """The first user turn."""
    return next((str(m.get("content", "")) for m in _messages(record) if m.get("role") == "user"), "")


def response_of(record: dict[str, Any]) -> str:
    """The last assistant turn (the answer a selection strategy cares about)."""
    return next((str(m.get("content", "")) for m in reversed(_messages(record)) if m.get("role") == "assistant"), "")


def record_text(record: dict[str, Any]) -> str:
    """Every turn's text, in order: what deduplication and embeddings look at."""
    return "\n\n".join(str(m.get("content", "")) for m in _messages(record) if m.get("role") != "system")


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def record_id(record: dict[str, Any], index: int) -> str:
    rid = record.get("id")
    return str(rid) if rid is not None else f"#{index}"


_WORD = re.compile(r"\w+", re.UNICODE)


def shingles(text: str) -> set[str]:
    words = _WORD.findall(text.lower())
    if len(words) < SHINGLE:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)}


# ------------------------------------------------------------------ dedup


def banded_index(lsh_class: Any, threshold: float, num_perm: int) -> Any:
    """An LSH index for `threshold`, or for the highest threshold below it that datasketch can band.

    datasketch refuses thresholds that need fewer than two bands (0.99 at 128 permutations, 0.9 at 16).
    The index only proposes candidates, each then checked against the threshold itself, so a lower
    index threshold costs some checks and loses no duplicate.
    """
    t = threshold
    while True:
        try:
            return lsh_class(threshold=t, num_perm=num_perm)
        except ValueError:
            if t <= 0.05:
                raise
            t -= 0.05


def dedup(records: list[dict[str, Any]], cfg: DedupConfig, *, seed: int = 0) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return (kept, dropped); each dropped item is {"id", "reason", "duplicate_of"}. Input order is kept."""
    kept: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    seen_exact: dict[str, str] = {}
    lsh = None
    order: dict[str, int] = {}  # LSH key -> input index, to name the earliest match
    ids: dict[str, str] = {}
    sigs: dict[str, Any] = {}
    if cfg.near:
        from datasketch import MinHash, MinHashLSH

        lsh = banded_index(MinHashLSH, cfg.threshold, cfg.num_perm)
        # One set of seeded permutations for all records (datasketch would redraw them per MinHash),
        # and CRC32 as the base hash: deterministic, and a C call instead of sha1 + unpacking per shingle.
        base = MinHash(num_perm=cfg.num_perm, seed=seed + 1)
        scheme = {"scheme": base.scheme} if hasattr(base, "scheme") else {}  # datasketch >= 2 asks for it
    from tqdm import tqdm

    for i, rec in enumerate(tqdm(records, desc="dedup", unit="rec", disable=len(records) < 5000)):
        rid = record_id(rec, i)
        text = normalise(record_text(rec))
        if cfg.exact:
            h = text_hash(text)
            if h in seen_exact:
                dropped.append({"id": rid, "reason": "exact_duplicate", "duplicate_of": seen_exact[h]})
                continue
            seen_exact[h] = rid
        sh = shingles(text) if lsh is not None else set()
        if sh:  # a record with no words at all is left to the exact check
            m = MinHash(num_perm=cfg.num_perm, hashfunc=zlib.crc32, permutations=base.permutations, **scheme)
            m.update_batch([s.encode("utf-8") for s in sorted(sh)])
            matches = [k for k in lsh.query(m) if sigs[k].jaccard(m) >= cfg.threshold]
            if matches:
                first = min(matches, key=lambda k: order[k])
                dropped.append({"id": rid, "reason": "near_duplicate", "duplicate_of": ids[first]})
                continue
            key = str(i)  # LSH keys must be unique even where record ids are not
            lsh.insert(key, m)
            sigs[key], order[key], ids[key] = m, i, rid
        kept.append(rec)
    return kept, dropped


def count_reasons(dropped: list[dict[str, Any]]) -> dict[str, int]:
    """{"exact_duplicate": n, "near_duplicate": m}: what the manifest reports."""
    counts = Counter(d["reason"] for d in dropped)
    return {"exact_duplicate": counts.get("exact_duplicate", 0), "near_duplicate": counts.get("near_duplicate", 0)}
