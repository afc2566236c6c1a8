"""The model card (`README.md`) of a checkpoint or an exported model: base, data with hashes, recipe,
how to prompt it in plain transformers, and where its decoding differs from lima-align's."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from .decoding import ROLE_STOP, Decoding
from .config import GenerateConfig

DATA_START, DATA_END = "<!-- lima-align data -->", "<!-- /lima-align data -->"


def _sha256_files(paths: list[Path], root: Path | None = None) -> str:
    """sha256 of one file's bytes, or for a folder's files of each relative name and its bytes in name order."""
    h = hashlib.sha256()
    for p in paths:
        if root is not None:
            h.update(str(p.relative_to(root)).encode() + b"\0")
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def data_rows(specs: list[str]) -> list[tuple[str, str, str]]:
    """(dataset as the recipe names it, the file(s) read, sha256) for each training dataset."""
    from .hf_data import is_hf_spec, saved_folder_spec
    from .dataset_specs import spec_paths

    rows = []
    for spec in specs:
        try:
            saved = saved_folder_spec(spec)
            if saved is not None:
                files = sorted(p for p in saved[0].rglob("*") if p.is_file())
                rows.append((spec, f"{saved[0]} (datasets.save_to_disk folder, {len(files)} files)",
                             _sha256_files(files, saved[0])))
            elif is_hf_spec(spec):
                rows.append((spec, "Hugging Face Hub (read through `datasets`)", "not recorded"))
            else:
                for p in spec_paths(spec):
                    rows.append((spec, p.name if spec.startswith("seed") else str(p), _sha256_files([p])))
        except Exception as e:  # noqa: BLE001 - a card never stops a checkpoint from being saved
            rows.append((spec, f"could not be read when this card was written ({type(e).__name__})", "unknown"))
    return rows


def data_section(specs: list[str]) -> str:
    lines = [DATA_START, "| dataset | file | sha256 |", "|---|---|---|"]
    lines += [f"| `{s}` | {f} | `{h}` |" for s, f, h in data_rows(specs)]
    return "\n".join(lines + [DATA_END])


def data_section_of(card: Path) -> str | None:
    """The data table of an earlier card (an export keeps the hashes taken when the checkpoint was saved)."""
    if not card.is_file():
        return None
    m = re.search(re.escape(DATA_START) + ".*?" + re.escape(DATA_END), card.read_text(encoding="utf-8"), re.S)
    return m.group(0) if m else None


def _example(tok: Any, template: str) -> str:
    old = tok.chat_template
    tok.chat_template = template
    try:
        return tok.apply_chat_template([{"role": "user", "content": "How do I boil an egg?"},
                                        {"role": "assistant", "content": "Put it in boiling water."},
                                        {"role": "user", "content": "For how long?"}],
                                       tokenize=False, add_generation_prompt=True)
    finally:
        tok.chat_template = old


def base_note(base: str) -> str:
    """' (what it is)' for a base lima-align prepared itself (the embedded Gemma: its source and GGUF hash)."""
    try:
        info = json.loads((Path(base) / "lima_align_model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    if not isinstance(info, dict):
        return ""
    parts = [str(info[k]) for k in ("note", "source") if info.get(k)]
    if info.get("gguf_sha256"):
        parts.append(f"GGUF sha256 `{info['gguf_sha256']}`")
    return f" ({'; '.join(parts)})" if parts else ""


def card_text(*, title: str, base: str, method: str | None, kind: str, eot: str, stop_ids: list[int],
              tok: Any, template: str, mismatches: list[str], data: str, recipe_yaml: str | None,
              adapter: bool, note: str = "") -> str:
    dec = Decoding.from_config(GenerateConfig())
    how = {"lora": "LoRA adapters", "full": "full fine-tuning"}.get(method or "", method or "unknown method")
    hub_base = not base.startswith((".", "/", "~")) and base.count("/") <= 1
    front = ["---", "library_name: " + ("peft" if adapter else "transformers"), "pipeline_tag: text-generation",
             "tags:", "- lima-align", "- sft"]
    if hub_base and base != "embedded":
        front.insert(1, f"base_model: {base}")
    exact = ("On test conversations (several turns, with and without a system message) `apply_chat_template` "
             "gives exactly the token ids lima-align trained on and prompts with." if not mismatches else
             "**The template's token ids differ from lima-align's** for: " + ", ".join(mismatches) +
             ". Prompt through `lima-align generate` / `serve` for exact prompts.")
    stop_note = (f"The plain format has no role token, so a model may begin the user's next turn itself: also pass "
                 f"`stop_strings=[{json.dumps(ROLE_STOP)}], tokenizer=tok` to `generate` (lima-align cuts the answer "
                 f"there)." if kind == "plain" else "")
    lines = front + ["---", "", f"# {title}", "",
                     f"Fine-tuned from `{base}`{base_note(base)} with [lima-align](https://pypi.org/project/"
                     f"lima-align/) ({how}), following LIMA's recipe (Zhou et al., 2023).", ""]
    if note:
        lines += [note, ""]
    if adapter:
        lines += ["This folder holds a LoRA adapter. `lima-align export THIS_FOLDER --output DIR` writes the "
                  "adapter merged into the base weights as a standalone model. Loaded as it is "
                  "(`AutoModelForCausalLM.from_pretrained` with peft installed), transformers takes the generation "
                  "config from the base model, which does not stop at the end of turn: pass "
                  "`generation_config=GenerationConfig.from_pretrained(THIS_FOLDER)` to `generate`.", ""]
    lines += ["## How to prompt it", "",
              f"Turn format `{kind}`; every turn ends with the end-of-turn token `{eot}`. The tokenizer's chat "
              f"template renders it, for example:", "", "```text", _example(tok, template), "```", "", exact,
              "A message's text is only text in lima-align: special-token text typed in a message (such as "
              f"`{eot}`) is read as characters there, while `apply_chat_template` reads it as the token.", "",
              "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              'tok = AutoTokenizer.from_pretrained("PATH")', 'model = AutoModelForCausalLM.from_pretrained("PATH")',
              'messages = [{"role": "user", "content": "How do I boil an egg?"}]',
              'inputs = tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, '
              'return_tensors="pt")', "out = model.generate(**inputs, max_new_tokens=512)",
              'print(tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))', "```", "",
              f"`generation_config.json` stops at token ids {stop_ids} (end of turn and EOS) and samples with "
              f"LIMA's settings: temperature {dec.temperature}, top-p {dec.top_p}, repetition penalty "
              f"{dec.repetition_penalty}, at most {dec.max_new_tokens} new tokens; special tokens other than the "
              f"end markers are suppressed, as lima-align never samples them. {stop_note}", "",
              "One difference remains: transformers (and vLLM) apply the repetition penalty to the prompt's "
              "tokens too, while LIMA and lima-align penalise only the tokens generated so far (penalising the "
              "prompt pushes the model away from the end-of-turn token that closes every user turn). For "
              "lima-align's exact decoding use `lima-align generate` / `serve`, or pass "
              "`repetition_penalty=1.0` to compare greedy answers.", "",
              "## Data", "", data, "", "## Recipe", ""]
    lines += (["```yaml", recipe_yaml.rstrip(), "```"] if recipe_yaml else ["(the run's recipe.yaml was not found)"])
    lines += ["", "## GGUF (llama.cpp, Ollama)", "",
              "Export a LoRA checkpoint first (`lima-align export`), then convert the merged folder with llama.cpp's "
              f"script: `python convert_hf_to_gguf.py DIR --outfile model.gguf --outtype bf16`. The chat template "
              f"goes into the GGUF file; if your runner does not stop at `{eot}` by itself, give it as a stop "
              f"string.", ""]
    return "\n".join(lines)
