#!/usr/bin/env python
"""Training-throughput benchmark for lima-align, run by hand (see benchmarks/README.md).

Prints three figures, and writes them as JSON with --json-out:

(a) padding efficiency (real tokens / tokens computed) of several batch layouts, on the token
    lengths of the LIMA-derived training set encoded with lima-align's real turn format;
(b) training tokens/s of lima-align's step against TRL's SFTTrainer and a plain padded PyTorch
    loop, on the same model, examples, batch size and precision;
(c) what applying the output layer only at trained positions gains over applying it everywhere.

    python benchmarks/train_throughput.py                      # tiny random Gemma 3, under a minute
    python benchmarks/train_throughput.py --model embedded --steps 5 --json-out bench.json

Everything runs in fp32: on CPUs without native bf16, autocast makes a step tens of times slower
(see lima_align.models.bf16_is_fast), which would measure the emulation, not the training loop.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from lima_align.config import Recipe
from lima_align.models import LoadedModel, load_model
from lima_align.packing import collate, first_fit_decreasing, padding_efficiency, plan_steps, rows_for_rank
from lima_align.records import read_conversations
from lima_align.loss import TrainedPositionLoss, decoder, output_layer, token_loss_sum
from lima_align.train import build_model, param_groups, prepare_data
from lima_align.turns import IGNORE, Encoded, TurnFormat

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / ".." / "shared" / "data" / "lima" / "derived_train_fastchat_1k" / "fastchat_lima_1k.json"
# The derived set wraps every instruction in an Alpaca-style preamble that LIMA's data does not have.
ALPACA_PREFIX = ("Below is an instruction that describes a task. Write a response that appropriately completes "
                 "the request. ### Instruction: ")
LIMA_BATCH = 32
ROW_TOKENS = 2048
TARGET_EFFICIENCY = 0.97
LAYOUT_SEEDS = 5  # random layouts are averaged over a few shuffles so one lucky draw does not decide


# ----------------------------------------------------------------- model and data


def tiny_model_dir(out: Path) -> Path:
    """The 2-layer random Gemma 3 the tests use; imported so there is one definition of it."""
    spec = importlib.util.spec_from_file_location("lima_align_tests_conftest", REPO / "tests" / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.build_model(out, "gemma3")


def load_conversations(path: Path) -> list:
    if not path.exists():
        sys.exit(f"training set not found: {path} (pass --data)")
    convs = read_conversations(path, purpose="train")
    for c in convs:
        for m in c.messages:
            if m.role == "user" and m.content.startswith(ALPACA_PREFIX):
                m.content = m.content[len(ALPACA_PREFIX):]
    return convs


def pick_examples(encoded: list[Encoded], need: int, max_len: int, seed: int) -> tuple[list[Encoded], int]:
    """`need` examples of at most max_len tokens; if too few are that short, longer ones are trimmed."""
    order = list(range(len(encoded)))
    random.Random(seed).shuffle(order)
    short = [encoded[i] for i in order if len(encoded[i].input_ids) <= max_len]
    trimmed = []
    for i in order:
        if len(short) + len(trimmed) >= need:
            break
        e = encoded[i]
        if len(e.input_ids) > max_len:
            cut = Encoded(e.input_ids[:max_len], e.labels[:max_len])
            if cut.labels[1:].count(IGNORE) < len(cut.labels) - 1:  # something left to train on
                trimmed.append(cut)
    picked = (short + trimmed)[:need]
    if len(picked) < need:
        sys.exit(f"only {len(picked)} usable examples for {need} needed; lower --steps/--batch or raise --max-len")
    return picked, max(0, need - len(short))


# ----------------------------------------------------------------- (a) padding efficiency


def padded_efficiency(lengths: list[int], order: list[int], batch: int) -> float:
    rows = [[lengths[i] for i in order[s:s + batch]] for s in range(0, len(order), batch)]
    return padding_efficiency(rows, [len(r) * max(r) for r in rows])


def layout_report(encoded: list[Encoded], filler: int, seed: int, epochs: int) -> dict[str, Any]:
    lengths = [len(e.input_ids) for e in encoded]
    n, real = len(lengths), sum(lengths)

    rand = []
    for s in range(LAYOUT_SEEDS):
        order = list(range(n))
        random.Random(s).shuffle(order)
        rand.append(padded_efficiency(lengths, order, LIMA_BATCH))

    # Group-by-length is transformers' own sampler function, called rather than re-implemented, so
    # this is the layout `train_sampling_strategy="group_by_length"` really produces.
    from transformers.trainer_pt_utils import get_length_grouped_indices

    grouped = []
    for s in range(LAYOUT_SEEDS):
        order = get_length_grouped_indices(lengths, LIMA_BATCH, generator=torch.Generator().manual_seed(s))
        grouped.append(padded_efficiency(lengths, order, LIMA_BATCH))

    ffd_rows = first_fit_decreasing(dict(enumerate(lengths)), ROW_TOKENS)
    ffd = padding_efficiency([[lengths[i] for i in r] for r in ffd_rows], [ROW_TOKENS] * len(ffd_rows))

    # lima-align's layout, rebuilt from the training loop's own calls; the computed count is read off
    # the collated rows (batch dimension 1, no padding) rather than assumed.
    computed = rows = pairs_real = pairs_dense = 0
    for epoch in range(epochs):
        for step in plan_steps(n, LIMA_BATCH, epoch, seed):
            for row in rows_for_rank(step, lengths, ROW_TOKENS, 1, 0):
                width = len(collate(row, encoded, filler)["input_ids"])
                computed += width
                rows += 1
                # Attention is the one place packing still computes waste: a dense kernel with
                # the block-diagonal mask (SDPA on CPU) scores every pair of the row.
                pairs_real += sum(lengths[i] ** 2 for i in row.examples)
                pairs_dense += width ** 2
    real_all = real * epochs
    return {
        "examples": n, "real_tokens": real, "median_len": sorted(lengths)[n // 2], "max_len": max(lengths),
        "batch": LIMA_BATCH, "row_tokens": ROW_TOKENS,
        "random_padded": round(statistics.mean(rand), 4),
        "group_by_length_padded": round(statistics.mean(grouped), 4),
        "ffd_whole_set": round(ffd, 4),
        "ffd_whole_set_rows": len(ffd_rows),
        "lima_align": round(real_all / computed, 4),
        "lima_align_row_fill": round(real_all / (rows * ROW_TOKENS), 4),
        "lima_align_rows_per_epoch": rows / epochs,
        "lima_align_attention_pair_efficiency": round(pairs_real / pairs_dense, 4),
        "lima_align_epochs_measured": epochs,
        "target": TARGET_EFFICIENCY,
        "meets_target": real_all / computed >= TARGET_EFFICIENCY,
    }


# ----------------------------------------------------------------- (b), (c) training steps


class AllPositionLoss(TrainedPositionLoss):
    """lima-align's loss with the output layer applied at every position, then masked: the usual way."""

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, targets: torch.Tensor,
                weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = decoder(self.lm)(input_ids=input_ids, position_ids=position_ids, attention_mask=None,
                                  use_cache=False).last_hidden_state
        logits = output_layer(self.lm)(hidden).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE,
                                           reduction="sum")
        return loss * weight.squeeze(), (targets != IGNORE).sum()


class NoRecomputeLoss(TrainedPositionLoss):
    """lima-align's loss with token_loss_sum's chunking threshold lifted, so nothing is recomputed.

    For a 262k-word vocabulary the default threshold is 256 positions; above it every chunk's
    logits are recomputed in backward. Measured for information: it prices that recomputation.
    """

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, targets: torch.Tensor,
                weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = decoder(self.lm)(input_ids=input_ids, position_ids=position_ids, attention_mask=None,
                                  use_cache=False).last_hidden_state
        sel = targets != IGNORE
        loss = token_loss_sum(hidden[sel], output_layer(self.lm), targets[sel], self.softcap, chunk_elems=1 << 62)
        return loss * weight.squeeze(), sel.sum()


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    t = recipe.train
    return torch.optim.AdamW(param_groups(model, t.weight_decay), lr=t.lr, betas=(t.adam_beta1, t.adam_beta2))


def lima_step_fn(model: nn.Module, wrapper: type, recipe: Recipe, fmt: TurnFormat,
                 examples: list[Encoded]) -> Callable[[list[int]], float]:
    """One optimizer step exactly as train() lays it out, minus accelerate (a no-op on one CPU)."""
    wrapped = wrapper(model)
    opt = make_optimizer(model, recipe)
    lengths = [len(e.input_ids) for e in examples]

    def step(batch: list[int]) -> float:
        trained_total = sum(examples[i].n_trained for i in batch)
        loss_sum = 0.0
        for row in rows_for_rank(batch, lengths, recipe.train.micro_batch_tokens, 1, 0):
            t = {k: torch.tensor([v]) for k, v in collate(row, examples, fmt.eot_id).items()}
            t["weight"] = t["weight"].float()
            ls, _ = wrapped(**t)
            (ls / trained_total).backward()
            loss_sum += ls.item()
        nn.utils.clip_grad_norm_(wrapped.parameters(), recipe.train.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss_sum / trained_total

    return step


def plain_step_fn(model: nn.Module, recipe: Recipe, pad_id: int,
                  examples: list[Encoded]) -> Callable[[list[int]], float]:
    """The textbook loop: right-padded batch, model(labels=...) computes logits everywhere."""
    opt = make_optimizer(model, recipe)

    def step(batch: list[int]) -> float:
        width = max(len(examples[i].input_ids) for i in batch)
        ids, mask, labels = [], [], []
        for i in batch:
            e, pad = examples[i], width - len(examples[i].input_ids)
            ids.append(e.input_ids + [pad_id] * pad)
            mask.append([1] * len(e.input_ids) + [0] * pad)
            labels.append(e.labels + [IGNORE] * pad)
        out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), labels=torch.tensor(labels),
                    use_cache=False)
        out.loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), recipe.train.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss.item()

    return step


Step = Callable[[list[int]], float]


def timed_step(step: Step, batch: list[int], record: dict[str, list], seed: int) -> None:
    # Step-keyed randomness, as train() does: interleaved contenders draw the same dropout masks.
    torch.manual_seed(seed * 1_000_003 + len(record["durations"]))
    t = time.perf_counter()
    record["losses"].append(step(batch))
    record["durations"].append(time.perf_counter() - t)


def rotated(names: list[str], k: int) -> list[str]:
    # No contender always runs right after the same neighbour (TRL's logging, a freed tensor).
    k %= max(1, len(names))
    return names[k:] + names[:k]


def summarise(name: str, record: dict[str, list], batches: list[list[int]], examples: list[Encoded],
              warmup: int) -> dict[str, Any]:
    timed = batches[warmup:]
    step_s = record["durations"][warmup:]
    seconds = sum(step_s)
    tokens = sum(len(examples[i].input_ids) for b in timed for i in b)
    trained = sum(examples[i].n_trained for b in timed for i in b)
    # A burst of other work on the machine lands in one step; the median step rate shrugs it off.
    step_rates = [sum(len(examples[i].input_ids) for i in b) / s for b, s in zip(timed, step_s)]
    return {"name": name, "steps": len(timed), "seconds": round(seconds, 3), "tokens": tokens,
            "trained_tokens": trained, "tokens_per_s": round(tokens / seconds, 1),
            "median_step_tokens_per_s": round(statistics.median(step_rates), 1),
            "step_seconds": [round(x, 3) for x in step_s],
            "losses": [None if x is None else round(float(x), 4) for x in record["losses"]],
            **({"settings": record["settings"]} if "settings" in record else {})}


def trl_run(model: nn.Module, fmt: TurnFormat, examples: list[Encoded], batches: list[list[int]], batch: int,
            max_len: int, grad_ckpt: bool, workdir: Path,
            between: Callable[[int], None] | None = None) -> dict[str, list]:
    """TRL's SFTTrainer on the same examples in the same batches; its own optimizer, scheduler and loss.

    `between(k)` runs after TRL's step k, outside TRL's clock: that is how the other contenders'
    steps are interleaved with TRL's own training loop.
    """
    import datasets
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    datasets.disable_progress_bars()
    order = [i for b in batches for i in b]
    # Pre-tokenised, so TRL trains on exactly lima-align's tokens; completion_mask marks the
    # assistant tokens, the form TRL's completion-only loss reads.
    ds = datasets.Dataset.from_dict({
        "input_ids": [examples[i].input_ids for i in order],
        "completion_mask": [[int(l != IGNORE) for l in examples[i].labels] for i in order]})

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.record: dict[str, list] = {"durations": [], "losses": []}
            self.resume = time.perf_counter()

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.resume = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            # From the end of the previous step (or of the interleaved work) to the end of this one,
            # so TRL's batch loading, collation and logging count as part of its step.
            self.record["durations"].append(time.perf_counter() - self.resume)
            if between is not None:
                between(len(self.record["durations"]) - 1)
            self.resume = time.perf_counter()

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                self.record["losses"].append(logs["loss"])

    cfg = SFTConfig(
        output_dir=str(workdir),
        per_device_train_batch_size=batch,
        max_steps=len(batches),
        max_length=max_len,
        completion_only_loss=True,
        # Same precision as the others; TRL defaults to bf16, emulated (very slow) on this kind of CPU.
        bf16=False,
        # TRL defaults to recomputing activations; lima-align does not by default, so the two would
        # not be doing the same work (--trl-gradient-checkpointing measures TRL's default).
        gradient_checkpointing=grad_ckpt,
        # Fixed batches in dataset order, so every step sees the examples lima-align's step did.
        train_sampling_strategy="sequential",
        use_cpu=True,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
    )
    clock = Clock()
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=fmt.tok, callbacks=[clock])
    trainer.remove_callback(PrinterCallback)  # its per-step log lines would bury the summary
    trainer.train()
    opt = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    record = clock.record
    record["losses"] += [None] * (len(batches) - len(record["losses"]))
    record["settings"] = {"optimizer": type(opt).__name__, "optim": str(cfg.optim),
                          "learning_rate": cfg.learning_rate, "weight_decay": cfg.weight_decay,
                          "lr_scheduler": str(cfg.lr_scheduler_type), "max_grad_norm": cfg.max_grad_norm,
                          "gradient_checkpointing": cfg.gradient_checkpointing, "loss_type": cfg.loss_type}
    return record


# ----------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny",
                   help="'tiny' (2-layer random Gemma 3 built in-process), 'embedded' (Gemma 3 270M), or a model folder")
    p.add_argument("--method", choices=["full", "lora"], default="lora")
    p.add_argument("--steps", type=int, default=3, help="timed optimizer steps (after --warmup untimed ones)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (allocator, lazy init)")
    p.add_argument("--batch", type=int, default=4, help="examples per optimizer step in (b) and (c)")
    p.add_argument("--max-len", type=int, default=256, help="longest example used in (b) and (c), in tokens")
    p.add_argument("--skip-trl", action="store_true", help="leave out the TRL baseline")
    p.add_argument("--trl-gradient-checkpointing", action="store_true",
                   help="run TRL with its own default (gradient checkpointing on) instead of matching lima-align")
    p.add_argument("--residual-dropout-top", type=float,
                   help="override the recipe's residual dropout (0 makes the first-step losses of all contenders "
                        "comparable: they see the same weights and tokens, and only dropout masks differ)")
    p.add_argument("--skip-no-recompute", action="store_true",
                   help="leave out the extra run of lima-align's step without output-layer recomputation")
    p.add_argument("--sequential", action="store_true",
                   help="run the contenders one after another, each freed before the next (less memory; "
                        "by default they take turns step by step, which needs every model in memory at once)")
    p.add_argument("--skip-padding", action="store_true", help="leave out (a)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ShareGPT-format LIMA-derived training set")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out", type=Path)
    args = p.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        p.error("--warmup and --steps must be at least 1")
    return args


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    t0 = time.perf_counter()
    load_before = load_average()
    if load_before is not None and load_before > 0.5:
        # Other work on the same cores skews every figure below (OpenMP threads spin-wait on each
        # other, so a busy core can slow a step many times over), and not equally for each contender.
        print(f"warning: load average is {load_before:.2f} before starting; the timings will be noisy")

    tmp = tempfile.TemporaryDirectory(prefix="lima-bench-")
    source = str(tiny_model_dir(Path(tmp.name) / "tiny")) if args.model == "tiny" else args.model

    def fresh_base() -> LoadedModel:
        # build_model wraps and resizes the model in place, so every contender gets its own copy.
        return load_model(source, dtype="float32")

    recipe = Recipe()
    recipe.train.method = args.method
    recipe.train.precision = "fp32"
    recipe.train.seed = args.seed
    if args.residual_dropout_top is not None:
        recipe.train.residual_dropout_top = args.residual_dropout_top
    first: LoadedModel | None = fresh_base()
    fmt = TurnFormat(first.tokenizer, recipe.turns, method=args.method)
    data = prepare_data(recipe, fmt, load_conversations(args.data))

    result: dict[str, Any] = {
        "config": {"model": args.model, "model_path": first.path, "method": args.method, "batch": args.batch,
                   "max_len": args.max_len, "steps": args.steps, "warmup": args.warmup, "precision": "fp32",
                   "threads": args.threads, "turn_format": fmt.describe(),
                   "gradient_checkpointing": False, "trl_gradient_checkpointing": args.trl_gradient_checkpointing,
                   "residual_dropout_top": recipe.train.residual_dropout_top,
                   "schedule": "sequential" if args.sequential else "interleaved"},
        "machine": {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "transformers": transformers.__version__, "python": platform.python_version()},
        "data": {"path": str(args.data), **data.report},
    }

    if not args.skip_padding:
        pad = layout_report(data.encoded, fmt.eot_id, args.seed, recipe.train.epochs)
        result["padding"] = pad
        print(f"\n(a) padding efficiency = real tokens / tokens computed "
              f"({pad['examples']} examples, median {pad['median_len']} tokens, trimmed to 2048)")
        print(f"  random batches of {LIMA_BATCH}, padded to longest   {pad['random_padded']:.3f}")
        print(f"  group-by-length batches of {LIMA_BATCH} (transformers) {pad['group_by_length_padded']:.3f}")
        print(f"  FFD packing of the whole set into {ROW_TOKENS}-token rows {pad['ffd_whole_set']:.3f}  "
              f"({pad['ffd_whole_set_rows']} rows)")
        print(f"  lima-align (steps of {LIMA_BATCH}, unpadded packed rows) {pad['lima_align']:.3f}  "
              f"(target >= {TARGET_EFFICIENCY}: {'met' if pad['meets_target'] else 'NOT met'}; rows filled "
              f"{pad['lima_align_row_fill']:.3f}, {pad['lima_align_rows_per_epoch']:.1f} rows/epoch)")
        print(f"  (attention pairs inside one example / pairs a dense masked kernel scores in lima-align's "
              f"rows: {pad['lima_align_attention_pair_efficiency']:.3f})")

    need = (args.warmup + args.steps) * args.batch
    examples, n_trimmed = pick_examples(data.encoded, need, args.max_len, args.seed)
    batches = [list(range(s, s + args.batch)) for s in range(0, need, args.batch)]
    result["examples"] = {"count": need, "trimmed_to_max_len": n_trimmed,
                          "tokens": sum(len(e.input_ids) for e in examples),
                          "trained_tokens": sum(e.n_trained for e in examples),
                          "mean_len": round(statistics.mean(len(e.input_ids) for e in examples), 1),
                          "padded_batch_efficiency": round(padded_efficiency(
                              [len(e.input_ids) for e in examples], list(range(need)), args.batch), 4)}

    def built() -> nn.Module:
        nonlocal first
        base = first if first is not None else fresh_base()
        first = None
        torch.manual_seed(args.seed)  # identical LoRA initialisation for every contender
        return build_model(recipe, fmt, base)

    # name -> makes the contender's step function from a freshly built model
    makers: dict[str, Callable[[nn.Module], Step]] = {
        "lima_align": lambda m: lima_step_fn(m, TrainedPositionLoss, recipe, fmt, examples),
        "lima_align_all_positions": lambda m: lima_step_fn(m, AllPositionLoss, recipe, fmt, examples),
        "lima_align_no_recompute": lambda m: lima_step_fn(m, NoRecomputeLoss, recipe, fmt, examples),
        "plain_padded_full_vocab": lambda m: plain_step_fn(m, recipe, fmt.tok.pad_token_id, examples),
    }
    if args.skip_no_recompute:
        del makers["lima_align_no_recompute"]
    use_trl = not args.skip_trl
    if use_trl:
        try:
            import trl
        except ImportError:
            sys.exit("TRL is not installed: pip install trl (or pass --skip-trl)")
        result["machine"]["trl"] = trl.__version__

    def run_trl(model: nn.Module, between: Callable[[int], None] | None) -> dict[str, list]:
        return trl_run(model, fmt, examples, batches, args.batch, args.max_len, args.trl_gradient_checkpointing,
                       Path(tmp.name) / "trl", between)

    print(f"\n(b)/(c) training throughput: {args.model}, {args.method}, fp32, {args.threads} threads; "
          f"{args.steps} timed steps of {args.batch} examples (<= {args.max_len} tokens, "
          f"{result['examples']['mean_len']} on average; padded batches {result['examples']['padded_batch_efficiency']:.2f} "
          f"real) after {args.warmup} warm-up; "
          f"{'sequential' if args.sequential else 'interleaved step by step'}", flush=True)
    records: dict[str, dict[str, list]] = {}
    if args.sequential:
        for name, make in makers.items():
            step = make(built())
            records[name] = {"durations": [], "losses": []}
            for b in batches:
                timed_step(step, b, records[name], args.seed)
            del step
            gc.collect()
        if use_trl:
            records["trl_sft_trainer"] = run_trl(built(), None)
    else:
        # Every contender lives side by side and they take turns, one optimizer step each: work
        # from elsewhere on the machine then lands on all of them alike instead of on whichever
        # happened to be running at the time.
        steps = {name: make(built()) for name, make in makers.items()}
        names = list(steps)
        records = {name: {"durations": [], "losses": []} for name in names}

        def others(k: int) -> None:
            for name in rotated(names, k):
                timed_step(steps[name], batches[k], records[name], args.seed)

        if use_trl:
            records["trl_sft_trainer"] = run_trl(built(), others)
        else:
            for k in range(len(batches)):
                others(k)

    runs = {name: summarise(name, rec, batches, examples, args.warmup) for name, rec in records.items()}
    for name, r in runs.items():
        print(f"  {name:<26} {r['tokens_per_s']:>9.1f} tokens/s  (median step {r['median_step_tokens_per_s']:.1f}; "
              f"{r['seconds']:.2f} s for {r['steps']} steps; losses {r['losses']})", flush=True)

    lima = runs["lima_align"]["tokens_per_s"]
    result["throughput"] = {
        "runs": runs,
        "lima_over_plain": round(lima / runs["plain_padded_full_vocab"]["tokens_per_s"], 3),
        "lima_over_trl": round(lima / runs["trl_sft_trainer"]["tokens_per_s"], 3) if "trl_sft_trainer" in runs else None,
    }
    result["output_layer"] = {
        "trained_positions_tokens_per_s": lima,
        "all_positions_tokens_per_s": runs["lima_align_all_positions"]["tokens_per_s"],
        "gain": round(lima / runs["lima_align_all_positions"]["tokens_per_s"], 3),
    }
    if "lima_align_no_recompute" in runs:
        nr = runs["lima_align_no_recompute"]["tokens_per_s"]
        result["output_layer"]["trained_positions_no_recompute_tokens_per_s"] = nr
        result["output_layer"]["gain_without_recompute"] = round(
            nr / runs["lima_align_all_positions"]["tokens_per_s"], 3)
    tp = result["throughput"]
    print("\n(b) lima-align / plain padded loop:  "
          f"{tp['lima_over_plain']:.2f}x" + (f"   lima-align / TRL SFTTrainer: {tp['lima_over_trl']:.2f}x"
                                               if tp["lima_over_trl"] is not None else "   (TRL skipped)"))
    ol = result["output_layer"]
    print(f"(c) output layer at trained positions only / at every position: {ol['gain']:.2f}x"
          + (f"   (without token_loss_sum's recomputation: {ol['gain_without_recompute']:.2f}x)"
             if "gain_without_recompute" in ol else ""))
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    result["machine"]["load_average_before"] = load_before
    result["machine"]["load_average_after"] = load_average()
    print(f"\ntotal {result['wall_seconds']} s")
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json_out}")
    tmp.cleanup()
    return result


if __name__ == "__main__":
    main()
