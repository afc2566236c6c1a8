"""In-context alignment baseline (`lima-align generate --method icl`): a base model, no training.

URIAL-style (Lin et al. 2023): the base model answers with a fixed system text and a few stylistic
example exchanges in front of every prompt. Its answers go into an ordinary generations file (model
label "<model>+icl", "meta": {"method": "icl", ...}), so judging and the report treat it as one more
model: the zero-training floor a fine-tune has to beat.

The prompt uses the plain format's role labels but separates turns with a blank line instead of an
end-of-turn token, because a base model has never learned one:

    <bos>System:
    {system}

    User:
    {example question}

    Assistant:
    {example answer}

    ...
    User:
    {the prompt}

    Assistant:

A base model that finishes its answer usually carries on with the pattern and writes the next
"User:" turn itself; generation stops there (the Generator's "\\nUser:" stop string for the plain
format, or EOS) and the answer is cut before it.

Examples file (JSON): {"system": str, "examples": [{"user": str, "assistant": str}, ...]}; the
shipped one is src/lima_align/data/icl/default.json.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LimaError, ProblemList
from ..jsonl import json_error, read_text
from ..generate import Generator, answer_prompts
from ..records import Message

DEFAULT_EXAMPLES = Path(__file__).resolve().parent.parent / "data" / "icl" / "default.json"
LABELS = {"system": "System", "user": "User", "assistant": "Assistant"}


@dataclass
class IclPrompt:
    system: str
    examples: list[tuple[str, str]]
    path: str
    sha256: str

    def text(self, messages: list[Message]) -> str:
        """The whole prompt as text, ending with the assistant header the model continues from."""
        turns = [Message("system", self.system)] if self.system else []
        # A prompt's own system text replaces ours (two system turns would read as a contradiction).
        if messages and messages[0].role == "system":
            turns = [messages[0]]
            messages = messages[1:]
        for u, a in self.examples:
            turns += [Message("user", u), Message("assistant", a)]
        turns += messages
        return "".join(f"{LABELS[m.role]}:\n{m.content.strip()}\n\n" for m in turns) + "Assistant:\n"


def load_icl(path: str | Path | None = None) -> IclPrompt:
    path = Path(path or DEFAULT_EXAMPLES)
    text = read_text(path)
    data = text.encode("utf-8")  # the examples' hash is of the file's bytes
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise LimaError(json_error(e), where=f"{path}:{e.lineno}",
                        fix='write {"system": "...", "examples": [{"user": "...", "assistant": "..."}]}') from None
    problems = ProblemList()
    if not isinstance(obj, dict):
        raise LimaError("expected a JSON object", where=str(path), fix='write {"system": ..., "examples": [...]}')
    system = obj.get("system", "")
    if not isinstance(system, str):
        problems.add(f"{path} system", "must be a string", "write the system text, or leave it out")
    examples = obj.get("examples")
    pairs: list[tuple[str, str]] = []
    if not isinstance(examples, list) or not examples:
        problems.add(f"{path} examples", "must be a non-empty list", 'e.g. [{"user": "...", "assistant": "..."}]')
    else:
        for i, ex in enumerate(examples):
            if not (isinstance(ex, dict) and all(isinstance(ex.get(k), str) and ex[k].strip()
                                                 for k in ("user", "assistant"))):
                problems.add(f"{path} examples[{i}]", "needs non-empty 'user' and 'assistant' strings")
                continue
            if "\nUser:" in "\n" + ex["assistant"]:
                problems.add(f"{path} examples[{i}].assistant", "contains a line starting 'User:', where "
                             "generation stops", "reword that line")
            pairs.append((ex["user"], ex["assistant"]))
    problems.raise_if_any()
    return IclPrompt(system or "", pairs, str(path), hashlib.sha256(data).hexdigest())


class IclGenerator(Generator):
    """The ordinary Generator (batching, decoding, the "\\nUser:" stop) with the in-context prompt."""

    def __init__(self, lm: Any, fmt: Any, decoding: Any, icl: IclPrompt):
        super().__init__(lm, fmt, decoding)
        self.icl = icl

    def prompt_ids(self, messages: list[Message]) -> list[int]:
        # The prompt is all text (turns end with a blank line): "<eos>" typed in a message stays text.
        return self.tok(self.icl.text(messages), split_special_tokens=True)["input_ids"]


def load_base(model_cfg: Any) -> tuple[Any, Any]:
    """The model as pretrained, with the plain turn format (so the "User:" stop string applies) and EOS."""
    from ..config import TurnsConfig
    from ..generate import resolve_dtype
    from ..models import load_model
    from ..turns import TurnFormat

    lm = load_model(model_cfg.name, dtype=resolve_dtype(model_cfg.dtype), revision=model_cfg.revision,
                    cache_dir=model_cfg.cache_dir)
    if lm.tokenizer.pad_token_id is None:
        lm.tokenizer.pad_token = lm.tokenizer.eos_token
    return lm, TurnFormat(lm.tokenizer, TurnsConfig(format="plain", eot="eos"), for_training=False)


def generate_icl_file(model_cfg: Any, g: Any, *, examples: str | Path | None = None,
                      lm_fmt: tuple[Any, Any] | None = None, log: Any = print) -> Path:
    """Answer every prompt in g.prompts in context, appending to g.output (resumable, like generate_file)."""
    from ..decoding import Decoding

    icl = load_icl(examples)
    label = g.model_label or f"{Path(model_cfg.name).name}+icl"

    def start() -> IclGenerator:
        lm, fmt = lm_fmt or load_base(model_cfg)
        return IclGenerator(lm, fmt, Decoding.from_config(g), icl)

    meta = {"method": "icl", "icl": {"file": icl.path, "sha256": icl.sha256, "examples": len(icl.examples)}}
    return answer_prompts(g, label, start, step=g.batch_size, meta=meta, where=f"--icl-examples {icl.path}",
                          added=f" with the {len(icl.examples)} in-context examples",
                          fix="use fewer or shorter examples (--icl-examples FILE)", log=log)
