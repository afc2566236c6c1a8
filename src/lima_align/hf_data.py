"""Datasets read through the `datasets` library: `hf:ORG/NAME[:SPLIT]` from the Hugging Face hub (or
its local cache), and folders written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`
(`FOLDER` or `FOLDER:SPLIT`).

Rows go through the same format readers and checks as a JSONL file (records.py): our `messages`,
LIMA, Alpaca or ShareGPT columns, every problem reported at once with the row's index. `datasets` is
imported only when such a dataset is named, and is not a dependency of lima-align.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import LimaError
from .records import Conversation, Purpose, conversations_from_rows

PREFIX = "hf:"
DEFAULT_SPLIT = "train"


def _saved_folder(path: Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in ("dataset_info.json", "dataset_dict.json"))


def saved_folder_spec(spec: str) -> tuple[Path, str | None] | None:
    """(folder, split or None) when `spec` names a save_to_disk folder, else None."""
    if _saved_folder(Path(spec)):
        return Path(spec), None
    folder, sep, split = spec.rpartition(":")
    if sep and split and "/" not in split and _saved_folder(Path(folder)):
        return Path(folder), split
    return None


def is_hf_spec(spec: str) -> bool:
    """Whether `spec` is read through `datasets` (cheap: nothing is imported or downloaded)."""
    return (spec.startswith(PREFIX) and not Path(spec).exists()) or saved_folder_spec(spec) is not None


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise LimaError("reading Hugging Face datasets needs the `datasets` package, which is not installed",
                        fix="pip install datasets") from None
    return datasets


def _hub(spec: str) -> Any:
    name, _, split = spec[len(PREFIX):].partition(":")
    split = split or DEFAULT_SPLIT
    if not name.strip():
        raise LimaError("no dataset name after 'hf:'", where=spec, fix="write hf:ORG/NAME or hf:ORG/NAME:SPLIT")
    datasets = _datasets()
    try:
        return datasets.load_dataset(name, split=split)
    except Exception as e:  # noqa: BLE001 - no network, unknown names, gated repos and missing splits all land here
        how = ("HF_HUB_OFFLINE is set, so only datasets already in the local cache load: unset it where the hub is "
               "reachable" if _offline(datasets) else "check the name, the split and your network")
        raise LimaError(f"cannot load {name!r} (split {split!r}) from the Hugging Face hub: {type(e).__name__}: "
                        f"{str(e).strip()[:300]}", where=spec,
                        fix=f"{how}; or, on a machine that reaches the hub, save it with "
                        "datasets.load_dataset(...).save_to_disk(FOLDER) and give FOLDER") from None


def _offline(datasets: Any) -> bool:
    return bool(getattr(getattr(datasets, "config", None), "HF_HUB_OFFLINE", False))


def _from_disk(folder: Path, split: str | None, spec: str) -> Any:
    datasets = _datasets()
    try:
        ds = datasets.load_from_disk(str(folder))
    except Exception as e:  # noqa: BLE001 - a damaged or foreign folder
        raise LimaError(f"cannot read the saved dataset: {type(e).__name__}: {str(e).strip()[:300]}", where=spec,
                        fix="give a folder written by Dataset.save_to_disk or DatasetDict.save_to_disk") from None
    if isinstance(ds, datasets.DatasetDict):
        splits = list(ds)
        if split is None:
            split = DEFAULT_SPLIT if DEFAULT_SPLIT in splits or len(splits) != 1 else splits[0]
        if split not in splits:
            raise LimaError(f"the saved dataset has no split {split!r} (it has {', '.join(splits)})", where=spec,
                            fix=f"name one: {folder}:{splits[0]}")
        return ds[split]
    if split is not None:
        raise LimaError(f"the saved dataset is a single split; there is no split {split!r} to choose", where=spec,
                        fix=f"give the folder alone: {folder}")
    return ds


def load_hf(spec: str, *, fmt: str = "auto", purpose: Purpose = "any") -> list[Conversation]:
    """Every row of a `hf:` or save_to_disk dataset as a validated Conversation."""
    saved = saved_folder_spec(spec)
    ds = _from_disk(*saved, spec) if saved else _hub(spec)
    stem = saved[0].name if saved else spec[len(PREFIX):].split(":")[0].replace("/", "-")
    rows = ((f"{spec}[{i}]", f"{stem}-{i}", dict(row)) for i, row in enumerate(ds))
    return conversations_from_rows(rows, spec, fmt=fmt, purpose=purpose)
