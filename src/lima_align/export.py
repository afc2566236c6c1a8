"""`lima-align export CHECKPOINT --output DIR`: a run checkpoint as a standalone Hugging Face model.

A LoRA checkpoint is merged into its base weights (peft `merge_and_unload`, in float32, then cast to
`--dtype`); a full fine-tune is re-saved. Either way the folder gets what hf_folder.py writes (chat
template, generation config, card) and the checkpoint's metadata, so `lima-align generate` reads it
exactly like the checkpoint. A base whose output layer shares the embedding matrix stays tied: the
file holds the matrix once.

No GGUF writer here: converting a Hugging Face folder is llama.cpp's `convert_hf_to_gguf.py` (tensor
names, tokenizer metadata, chat template per architecture); the card and the README say how.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

from .checkpoint import require_meta, write_meta
from .errors import LimaError, Problem

DTYPES = ("float32", "bfloat16", "float16")


def _check_output(out: Path, ckpt: Path) -> None:
    if out.resolve() == ckpt.resolve():
        raise LimaError(Problem(str(out), "is the checkpoint itself", "give a new folder to --output"))
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LimaError(Problem(str(out), "already exists and is not an empty folder",
                                "give a new folder to --output, or remove this one"))
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise LimaError(Problem(str(out), f"{parent} is a file, so nothing can be written below it",
                                    "give a folder path to --output"))


def _recipe_of(ckpt: Path) -> tuple[str | None, list[str]]:
    """The run's recipe.yaml text and its training dataset specs (run/checkpoints/epoch-NN/..)."""
    import yaml

    path = ckpt.parent.parent / "recipe.yaml"
    if not path.is_file():
        return None, []
    text = path.read_text(encoding="utf-8")
    try:
        data = (yaml.safe_load(text) or {}).get("data") or {}
        specs = list(data.get("train") or []) + [m.get("dataset", "") for m in data.get("mix") or []]
    except (yaml.YAMLError, AttributeError, TypeError):
        specs = []
    return text, [str(s) for s in specs]


def keep_tied(model: Any) -> bool:
    """Keep a tied base tied after merging; True when the saved model is tied. An output layer that no
    longer equals the embeddings (a merge that changed one of them) is saved untied rather than lost."""
    import torch

    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if not getattr(cfg, "tie_word_embeddings", False):
        return False
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    if out is None or inp.weight is out.weight:
        return True
    if inp.weight.shape == out.weight.shape and torch.equal(inp.weight, out.weight):
        out.weight = inp.weight
        return True
    for c in {id(model.config): model.config, id(cfg): cfg}.values():
        c.tie_word_embeddings = False
    return False


def export(checkpoint: str | Path, output: str | Path, *, dtype: str = "float32", log: Any = print) -> Path:
    """Write `checkpoint` as a standalone model folder at `output`; returns it."""
    import torch

    from .hf_folder import write_hf_files
    from .model_card import data_section, data_section_of
    from .models import load_model
    from .quiet import silence_library_noise
    from .turns import TurnFormat

    ckpt, out = Path(checkpoint), Path(output)
    meta = require_meta(ckpt)
    if dtype not in DTYPES:
        raise LimaError(Problem("--dtype", f"must be one of {', '.join(DTYPES)}, not {dtype!r}", "pick one of them"))
    _check_output(out, ckpt)
    silence_library_noise()
    lm = load_model(str(ckpt), dtype="float32")  # a LoRA adapter is merged here, in float32
    lora = lm.adapter is not None
    model = lm.model
    tied = keep_tied(model)
    model = model.to(getattr(torch, dtype))
    fmt = TurnFormat(lm.tokenizer, meta.turns, method=meta.trained_method, for_training=False)
    recipe_yaml, specs = _recipe_of(ckpt)
    data = data_section_of(ckpt / "README.md") or (data_section(specs) if specs else "(not recorded)")
    how = "the LoRA adapter merged into the base weights" if lora else "a full fine-tune, re-saved"
    note = (f"Exported by `lima-align export` from `{ckpt}`: {how}, in {dtype}"
            f"{'; input and output embeddings tied as in the base' if tied else ''}.")
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    mismatches = write_hf_files(tmp, fmt, base=meta.base_model or "unknown", method=meta.method,
                                recipe_yaml=recipe_yaml, data=data, adapter=False, model_config=model.config,
                                title=f"{ckpt.parent.parent.name} {ckpt.name}", note=note)
    write_meta(tmp, dataclasses.replace(meta, extra={**meta.extra, "exported_from": str(ckpt), "dtype": dtype}))
    if out.exists():
        out.rmdir()  # checked empty above
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    log(f"wrote {out}: {how}, {dtype}; {fmt.describe()}")
    if mismatches:
        log(f"warning: the chat template's token ids differ from lima-align's for: {', '.join(mismatches)}")
    return out


def cmd_export(args: Any) -> int:
    export(args.checkpoint, args.output, dtype=args.dtype)
    return 0


def add_commands(sub: Any) -> None:
    e = sub.add_parser("export", help="write a run checkpoint as a standalone Hugging Face model (LoRA merged)",
                       description="Write a run checkpoint as a standalone Hugging Face model folder: a LoRA "
                       "adapter merged into its base weights, with the chat template, generation config and "
                       "model card. For GGUF, convert the folder with llama.cpp's convert_hf_to_gguf.py.")
    e.add_argument("checkpoint", help="a run's checkpoints/epoch-NN folder")
    e.add_argument("--output", required=True, help="new folder to write the model to")
    e.add_argument("--dtype", choices=DTYPES, default="float32", help="weights' dtype (default float32)")
    e.set_defaults(func=cmd_export)
