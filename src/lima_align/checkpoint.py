"""What a training run leaves behind for the stages after it: checkpoint metadata and `done.json`.

A run folder holds `checkpoints/epoch-NN/` (model weights or a LoRA adapter, its tokenizer and
`lima_align_checkpoint.json`) and, once the last step is saved, `done.json`. Everything that writes
or reads these files goes through this module, so the turn format a checkpoint answers in is decided
by one rule (`turns_for`) for generate, chat, serve, vLLM, `analyze shift` and `select`.

`lima_align_checkpoint.json`:
    {"base_model": the model the run started from, "method": "full" | "lora",
     "freeze_embeddings": bool (full fine-tuning that kept the embedding matrix),
     "turns": {"format": "plain" | "template", "eot": the end-of-turn token itself, "system": str | null},
     "epoch", "step", "loss"}
Only "turns" (with "format" and "eot") is needed to read one; checkpoints from before
"freeze_embeddings" existed read as not frozen.

`done.json`: {"final_checkpoint": path of the last epoch's checkpoint, "steps": optimizer steps}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .config import TurnsConfig
from .errors import LimaError, Problem
from .jsonl import json_error, write_text_atomic

META_FILE = "lima_align_checkpoint.json"
DONE_FILE = "done.json"
METHODS = ("full", "lora")
FORMATS = ("plain", "template")
REWRITE_FIX = "train the run again (--restart), or copy this file from an intact checkpoint of the same run"


@dataclass
class CheckpointMeta:
    turns: TurnsConfig  # as trained: format resolved, eot the token itself
    base_model: str | None = None
    method: str | None = None
    freeze_embeddings: bool = False
    epoch: int | None = None
    step: int | None = None
    loss: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys we do not know, kept on a rewrite

    def to_dict(self) -> dict[str, Any]:
        return {"base_model": self.base_model, "method": self.method, "freeze_embeddings": self.freeze_embeddings,
                "turns": {"format": self.turns.format, "eot": self.turns.eot, "system": self.turns.system},
                **{k: v for k, v in (("epoch", self.epoch), ("step", self.step), ("loss", self.loss)) if v is not None},
                **self.extra}

    @property
    def trained_method(self) -> str | None:
        """'full', 'frozen' (full with the embedding matrix kept) or 'lora'; None when not recorded."""
        if self.method == "full" and self.freeze_embeddings:
            return "frozen"
        return self.method


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def meta_from_dict(d: Any, where: str) -> CheckpointMeta:
    """The one validator of checkpoint metadata: every problem with `d` listed at once, as LimaError."""
    if not isinstance(d, dict):
        raise LimaError(Problem(where, f"must hold a JSON object, not {type(d).__name__}", REWRITE_FIX))
    problems: list[Problem] = []

    def bad(key: str, what: str) -> None:
        problems.append(Problem(f"{where} {key}", what, REWRITE_FIX))

    t = d.get("turns")
    if not isinstance(t, dict):
        bad("turns", "missing (the turn format the checkpoint was trained with)" if t is None else "must be an object")
        t = {}
    else:
        if t.get("format") not in FORMATS:
            bad("turns.format", f"must be one of {', '.join(FORMATS)}, not {t.get('format')!r}")
        if not isinstance(t.get("eot"), str) or not t.get("eot"):
            bad("turns.eot", f"must be the end-of-turn token (a non-empty string), not {t.get('eot')!r}")
        if t.get("system") is not None and not isinstance(t.get("system"), str):
            bad("turns.system", "must be a string or null")
    if d.get("base_model") is not None and not isinstance(d["base_model"], str):
        bad("base_model", "must be a model name or path (a string)")
    if d.get("method") is not None and d["method"] not in METHODS:
        bad("method", f"must be one of {', '.join(METHODS)}, not {d['method']!r}")
    if not isinstance(d.get("freeze_embeddings", False), bool):
        bad("freeze_embeddings", "must be true or false")
    for key in ("epoch", "step"):
        if d.get(key) is not None and not _is_int(d[key]):
            bad(key, "must be a whole number")
    if d.get("loss") is not None and (isinstance(d["loss"], bool) or not isinstance(d["loss"], (int, float))):
        bad("loss", "must be a number")
    if problems:
        raise LimaError(problems)
    known = {"turns", "base_model", "method", "freeze_embeddings", "epoch", "step", "loss"}
    return CheckpointMeta(turns=TurnsConfig(format=t["format"], eot=t["eot"], system=t.get("system")),
                          base_model=d.get("base_model"), method=d.get("method"),
                          freeze_embeddings=bool(d.get("freeze_embeddings", False)), epoch=d.get("epoch"),
                          step=d.get("step"), loss=d.get("loss"),
                          extra={k: v for k, v in d.items() if k not in known})


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LimaError(Problem(str(path), f"cannot read it ({getattr(e, 'strerror', None) or e})",
                                "check its permissions")) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise LimaError(Problem(f"{path}:{e.lineno}", json_error(e), REWRITE_FIX)) from None


def is_checkpoint(folder: str | Path) -> bool:
    """True when `folder` was saved by a lima-align run (it holds checkpoint metadata)."""
    return (Path(folder) / META_FILE).is_file()


def write_meta(folder: str | Path, meta: CheckpointMeta) -> Path:
    path = Path(folder) / META_FILE
    path.write_text(json.dumps(meta.to_dict(), indent=2))
    return path


def read_meta(folder: str | Path) -> CheckpointMeta | None:
    """The metadata of a run checkpoint; None for a folder that is not one (a base model, a hub name)."""
    path = Path(folder) / META_FILE
    if not path.is_file():
        return None
    return meta_from_dict(_read_json(path), str(path))


def require_meta(folder: str | Path) -> CheckpointMeta:
    """read_meta for a folder that must be a run checkpoint."""
    meta = read_meta(folder)
    if meta is None:
        raise LimaError(Problem(str(folder), f"is not a lima-align checkpoint (no {META_FILE})",
                                "give a run's checkpoints/epoch-NN folder"))
    return meta


def turns_for(folder: str | Path, requested: TurnsConfig) -> TurnsConfig:
    """The turn settings to answer with: a run checkpoint's own (whatever was requested), else the
    requested ones, where eot 'auto' means EOS: a model we did not train has no end-of-turn token of its own."""
    meta = read_meta(folder)
    if meta is not None:
        return meta.turns
    if requested.eot == "auto":
        return TurnsConfig(format=requested.format, eot="eos", system=requested.system)
    return requested


def turns_to_continue(folder: str | Path, requested: TurnsConfig) -> TurnsConfig:
    """The turn settings to train with from `folder`: under format 'auto', a run checkpoint keeps the format it
    was trained in. Its saved tokenizer carries a chat template written from that format (hf_folder.py), so
    'auto' would otherwise switch a plain-format checkpoint to template mode when training goes on from it."""
    meta = read_meta(folder)
    if meta is None or requested.format != "auto":
        return requested
    return replace(requested, format=meta.turns.format)


def trained_method(folder: str | Path) -> str | None:
    """'full', 'frozen' or 'lora' for a run checkpoint; None for anything else, and for metadata that does
    not say (this only describes the end of turn, so a broken file is left to the loaders to report)."""
    try:
        meta = read_meta(folder)
    except LimaError:
        return None
    return meta.trained_method if meta is not None else None


# ----------------------------------------------------------------- a run's checkpoints


def checkpoint_path(run: str | Path, epoch: int) -> Path:
    return Path(run) / "checkpoints" / f"epoch-{epoch:02d}"


def list_checkpoints(run: str | Path) -> list[Path]:
    """A run's saved checkpoints, oldest epoch first (folders still being written have no metadata yet)."""
    return sorted(p for p in (Path(run) / "checkpoints").glob("epoch-*") if is_checkpoint(p))


def epoch_of(ckpt: str | Path) -> int:
    meta = require_meta(ckpt)
    if meta.epoch is None:
        raise LimaError(Problem(str(Path(ckpt) / META_FILE), "does not say which epoch it holds", REWRITE_FIX))
    return meta.epoch


# ----------------------------------------------------------------- done.json


@dataclass
class Done:
    final_checkpoint: str
    steps: int | None = None


def write_done(run: str | Path, final: str | Path, steps: int) -> Path:
    return write_text_atomic(Path(run) / DONE_FILE, json.dumps({"final_checkpoint": str(final), "steps": steps},
                                                                indent=2))


def is_done(run: str | Path) -> bool:
    return (Path(run) / DONE_FILE).exists()


def read_done(run: str | Path) -> Done | None:
    """A finished run's record; None while the run is not finished."""
    path = Path(run) / DONE_FILE
    if not path.exists():
        return None
    d = _read_json(path)
    fix = "train the run again (--restart)"
    if not isinstance(d, dict) or not isinstance(d.get("final_checkpoint"), str):
        raise LimaError(Problem(f"{path} final_checkpoint", "missing (the path of the run's last checkpoint)", fix))
    if d.get("steps") is not None and not _is_int(d["steps"]):
        raise LimaError(Problem(f"{path} steps", "must be a whole number", fix))
    return Done(d["final_checkpoint"], d.get("steps"))


def final_checkpoint(run: str | Path, *, what: str = "", fix: str = "train it first") -> str:
    """The last checkpoint of a finished run, or LimaError saying the run is not finished."""
    done = read_done(run)
    if done is None:
        raise LimaError(Problem(str(run), f"no finished {what + ' ' if what else ''}run here (no {DONE_FILE})", fix))
    return done.final_checkpoint
