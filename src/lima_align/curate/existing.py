"""Existing datasets as candidates: our JSONL, LIMA's format, Alpaca, ShareGPT, seed splits, and
Hugging Face datasets by name (needs the hub; rows must be in one of the supported formats)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import setting
from ..dataset_specs import load_dataset, spec_paths
from ..errors import LimaError, ProblemList
from ..records import Conversation, parse_record
from .rules import RuleCounts, SourceRun

SOURCE = "dataset"


@dataclass
class DatasetsConfig:
    paths: list[str] = setting([], "datasets in any supported format (ours, LIMA, Alpaca, ShareGPT) or seed splits")
    hub: list[str] = setting([], "Hugging Face dataset names (needs the hub; rows in a supported format)")
    hub_split: str = setting("train", "split read from each hub dataset")
    license: str = setting("as in the source dataset", "licence written into records that carry none")


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


def read(cfg: DatasetsConfig, run: SourceRun) -> Iterator[dict[str, Any]]:
    """This source's candidate records (the signature every source shares, see sources.py)."""
    return dataset_records(cfg, run.counts)


def input_files(cfg: DatasetsConfig) -> list[Path]:
    """The dataset files read (seed splits resolved), for the manifest's hashes; hub datasets have none."""
    out = []
    for spec in cfg.paths:
        for p in spec_paths(spec):
            if not p.is_file():
                raise LimaError(f"dataset not found: {p}", where="datasets.paths",
                                fix="give a dataset file (ours, LIMA, Alpaca or ShareGPT format) or a seed split")
            out.append(p)
    return out
