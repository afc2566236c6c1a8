"""Existing datasets as candidates: our JSONL, LIMA's format, Alpaca, ShareGPT, seed splits, and
Hugging Face datasets by name (needs the hub; rows must be in one of the supported formats)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import LimaError, ProblemList
from ..records import Conversation, parse_record
from ..seed import load_dataset
from .config import DatasetsConfig
from .rules import RuleCounts

SOURCE = "dataset"


def _record(conv: Conversation, name: str, cfg: DatasetsConfig) -> dict[str, Any]:
    meta = dict(conv.meta)
    meta.update({"source": SOURCE, "group": f"{SOURCE}:{name}", "stratum": name,
                 "domain": meta.get("domain", "dataset"), "dataset": name, "original_id": conv.id,
                 "license": meta.get("license", cfg.license)})
    return {"id": f"{SOURCE}:{name}:{conv.id}", "source": conv.source or SOURCE,
            "messages": [m.to_dict() for m in conv.messages], "meta": meta}


def _hub_rows(name: str, split: str) -> Iterator[dict[str, Any]]:
    try:
        import datasets
    except ImportError:
        raise LimaError("reading hub datasets needs the `datasets` package", where="datasets.hub",
                        fix="pip install datasets") from None
    try:
        ds = datasets.load_dataset(name, split=split, streaming=True)
    except Exception as e:  # noqa: BLE001 - connection errors, unknown names, gated repos all land here
        raise LimaError(f"cannot load {name!r} (split {split!r}) from the Hugging Face hub: "
                        f"{type(e).__name__}: {str(e)[:300]}", where="datasets.hub",
                        fix="check the name and your network (HF_HUB_OFFLINE=1 uses only the local cache), or "
                        "download the dataset and give it in datasets.paths") from None
    yield from ds


def dataset_records(cfg: DatasetsConfig, counts: RuleCounts) -> Iterator[dict[str, Any]]:
    for spec in cfg.paths:
        name = spec.replace(":", "-") if not Path(spec).exists() else Path(spec).stem
        for conv in load_dataset(spec, purpose="train"):  # validates the whole file, every problem at once
            counts.seen[SOURCE] += 1
            counts.kept[SOURCE] += 1
            yield _record(conv, name, cfg)
    for hub_name in cfg.hub:
        name = hub_name.replace("/", "-")
        problems = ProblemList()
        for i, row in enumerate(_hub_rows(hub_name, cfg.hub_split)):
            counts.seen[SOURCE] += 1
            conv = parse_record(dict(row), f"{hub_name}[{i}]", "auto", f"{name}-{i}", problems)
            if problems:
                problems.raise_if_any()
            counts.kept[SOURCE] += 1
            yield _record(conv, name, cfg)
