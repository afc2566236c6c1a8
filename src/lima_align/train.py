"""`lima-align train`: supervised fine-tuning with the LIMA recipe.

One optimizer step = `batch_size` examples (LIMA: 32 at 65B, 64 for smaller models), laid out
as padding-free packed rows of at most `micro_batch_tokens` tokens (see packing.py), gradients
accumulated over the rows. The loss is the sum of token losses over the step's trained tokens
divided by their number, so it does not depend on how examples were packed or split across
processes, and the output layer is applied only at trained positions (for Gemma's 262k-word
vocabulary it is most of the compute).

fp32 master weights with bf16 autocast where the hardware has bf16 (pure-bf16 updates at
lr 1e-5 round away). Runs unchanged on one CPU, or under `accelerate launch` / `torchrun`
(DDP, FSDP). Killed runs resume from `state/` in the run folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import CheckpointMeta, checkpoint_path, is_done, turns_to_continue, write_done, write_meta
from .config import Recipe, TurnsConfig, dump_recipe, recipe_to_dict
from . import tracking
from .dropout import ResidualDropout
from .errors import LimaError
from .jsonl import JsonlAppender, check_output_folder, read_jsonl, write_jsonl_atomic, write_text_atomic
from .heap import release_freed_memory, trim_heap
from .hf_folder import save_checkpoint_files
from .loss import TrainedPositionLoss, output_layer  # noqa: F401  (output_layer: test_train reads it here)
from .models import bf16_is_fast, load_model
from .neftune import add_neftune
from .packing import collate, plan_steps, rows_for_rank
from .records import Conversation
from .training_report import write_chart
from .turns import IGNORE, Encoded, TurnFormat, training_method


# ----------------------------------------------------------------- data


@dataclasses.dataclass
class PreparedData:
    encoded: list[Encoded]
    ids: list[str]
    report: dict[str, Any]


def load_training_conversations(recipe: Recipe) -> list[Conversation]:
    from .mixture import load_training_set  # data.train whole + data.mix sampled, each example tagged

    return load_training_set(recipe.data, recipe.train.seed)


def prepare_data(recipe: Recipe, fmt: TurnFormat, convs: list[Conversation]) -> PreparedData:
    """Encode, trim to max_seq_len (as LIMA), drop examples with nothing left to train on."""
    d = recipe.data
    encoded, ids = [], []
    kept: list[Conversation] = []
    trimmed = dropped_long = dropped_empty = 0
    for c in convs:
        e = fmt.encode(c, d.loss_on)
        if d.max_example_tokens is not None and len(e.input_ids) > d.max_example_tokens:
            dropped_long += 1
            continue
        if len(e.input_ids) > d.max_seq_len:
            trimmed += 1
            e = Encoded(e.input_ids[: d.max_seq_len], e.labels[: d.max_seq_len])
        if e.labels[1:].count(IGNORE) == len(e.labels) - 1:
            dropped_empty += 1
            continue
        encoded.append(e)
        ids.append(c.id)
        kept.append(c)
    if d.max_examples is not None and len(encoded) > d.max_examples:
        # A seeded sample of the examples that passed the filters, kept in file order.
        import random

        keep = sorted(random.Random(recipe.train.seed).sample(range(len(encoded)), d.max_examples))
        encoded, ids = [encoded[i] for i in keep], [ids[i] for i in keep]
        kept = [kept[i] for i in keep]
    if not encoded:
        raise LimaError("no training examples left after encoding", where="data.train",
                        fix="check data.max_seq_len / data.max_example_tokens and that examples have assistant turns")
    lens = sorted(len(e.input_ids) for e in encoded)
    report = {"examples": len(encoded), "trimmed_to_max_seq_len": trimmed, "dropped_too_long": dropped_long,
              "dropped_nothing_to_train": dropped_empty, "tokens": sum(lens),
              "trained_tokens": sum(e.n_trained for e in encoded),
              "median_len": lens[len(lens) // 2], "max_len": lens[-1]}
    from .mixture import mixture_report

    report["mixture"] = mixture_report(convs, kept)  # examples drawn / trained per dataset
    return PreparedData(encoded, ids, report)


# ----------------------------------------------------------------- model


def eot_rows(model: nn.Module, eot_id: int) -> dict[str, list[int]]:
    """peft's `trainable_token_indices` for training the EOT under LoRA: its input embedding row,
    and its output-layer row where that is a matrix of its own (Llama). Given only the input
    embedding, peft trains the output row of tied models (Gemma) through the tie, and leaves an
    untied one at its initialisation: the model would read the token but never learn to predict it."""
    names = {id(m): n for n, m in model.named_modules()}
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    rows = {names[id(emb)]: [eot_id]}
    if head is not None and head.weight is not emb.weight:
        rows[names[id(head)]] = [eot_id]
    return rows


def build_model(recipe: Recipe, fmt: TurnFormat, base: Any) -> nn.Module:
    """Resize for a new EOT token, wrap LoRA if asked, add residual dropout hooks."""
    model = base.model
    model.config.use_cache = False
    if fmt.new_token is not None:
        model.resize_token_embeddings(len(fmt.tok), mean_resizing=True)
    if recipe.train.method == "lora":
        from peft import LoraConfig, get_peft_model

        lc = recipe.train.lora
        targets = "all-linear" if lc.target_modules == ["all-linear"] else lc.target_modules
        kwargs: dict[str, Any] = {}
        if fmt.train_eot_row:
            kwargs["trainable_token_indices"] = eot_rows(model, fmt.eot_id)
        model = get_peft_model(model, LoraConfig(r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout,
                                                 target_modules=targets, task_type="CAUSAL_LM", **kwargs))
    elif recipe.train.freeze_embeddings:
        # The vocabulary matrix stays as pretrained (tied models share it with the output layer):
        # on Gemma's 262k words that is 2/3 of the parameters, so no gradient, no AdamW state and
        # no weight-gradient matmul for it, the costliest third of the output layer's backward.
        for layer in (model.get_input_embeddings(), model.get_output_embeddings()):
            if layer is not None:
                layer.weight.requires_grad_(False)
    if recipe.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if recipe.train.method == "lora":
            model.enable_input_require_grads()
    from .distributed import apply_speed_options

    apply_speed_options(model, recipe.train.attn_implementation, recipe.train.compile)
    ResidualDropout(model, recipe.train.residual_dropout_bottom, recipe.train.residual_dropout_top)
    add_neftune(model, recipe.train.neftune_alpha)  # noise on the input embeddings, in training mode only
    model.train()
    return model


def step_seed(seed: int, step: int, rank: int) -> int:
    """The seed each process sets before an optimizer step: keyed by the step, so dropout masks are
    the same whether or not the run was resumed, and by the process, so processes working on
    different rows do not draw the same masks. One process (rank 0) keeps the value earlier runs used."""
    # 1_000_000_007 > any step count: no (step, rank) pair of a run shares a seed with another.
    return seed * 1_000_003 + step + rank * 1_000_000_007


def lr_at(step: int, total: int, recipe: Recipe) -> float:
    """Linear warmup (LIMA: none), then linear decay from lr to lr_final at the last step."""
    t = recipe.train
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    span = max(1, total - 1 - t.warmup_steps)
    frac = min(1.0, (step - t.warmup_steps) / span)
    return t.lr + (t.lr_final - t.lr) * frac


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    # Decay matrices only; norms and biases are not regularised (as in most LLM recipes).
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def resolve_precision(precision: str) -> str:
    if precision == "fp32":
        return "no"
    if precision == "bf16":
        return "bf16"
    return "bf16" if bf16_is_fast() else "no"


# ----------------------------------------------------------------- run folder


def _train_identity(recipe: Recipe) -> dict[str, Any]:
    d = recipe_to_dict(recipe)
    ident = {k: d[k] for k in ("model", "turns", "data", "train")}
    ident["train"] = {k: v for k, v in ident["train"].items() if k not in ("output_dir", "log_every_steps",
                                                                          "state_every_steps", "report_to")}
    # How the same computation is run (kernel, compilation) may change when a run resumes elsewhere.
    for k in ("compile", "attn_implementation"):
        ident["train"].pop(k, None)
    return ident


def save_checkpoint(acc: Any, wrapped: nn.Module, fmt: TurnFormat, recipe: Recipe, base_path: str,
                    path: Path, info: dict[str, Any]) -> None:
    state = acc.get_state_dict(wrapped)
    if not acc.is_main_process:
        return
    lm = acc.unwrap_model(wrapped).lm
    state = {k[len("lm."):]: v for k, v in state.items() if k.startswith("lm.")}
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    lm.save_pretrained(tmp, state_dict=state)
    save_checkpoint_files(tmp, fmt, recipe, base_path, lm)  # tokenizer + chat template, generation config, card
    eot = fmt.tok.convert_ids_to_tokens(fmt.eot_id)
    write_meta(tmp, CheckpointMeta(
        TurnsConfig(format=fmt.kind, eot=eot, system=fmt.system), base_model=base_path, method=recipe.train.method,
        freeze_embeddings=recipe.train.method == "full" and recipe.train.freeze_embeddings, **info))
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def train(recipe: Recipe, *, restart: bool = False, log: Any = print) -> Path:
    """Run (or resume) a training job; returns the run folder."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from .distributed import fresh_accelerator_state
    from .quiet import silence_library_noise

    silence_library_noise()
    t = recipe.train
    run = Path(t.output_dir)
    fresh_accelerator_state()
    acc = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=resolve_precision(t.precision),
                      **tracking.accelerator_options(t.report_to, run))
    main = acc.is_main_process

    # Everything that can fail cheaply fails before the model is loaded.
    from .distributed import check_speed_options, load_quantized

    check_speed_options(t)
    check_output_folder(run)
    convs = load_training_conversations(recipe)
    ident = _train_identity(recipe)
    if (run / "run.json").exists() and not restart:
        old = json.loads((run / "run.json").read_text()).get("identity")
        if old != ident:
            raise LimaError(f"{run} holds a run with a different recipe", where="train.output_dir",
                            fix="choose a new train.output_dir, or pass --restart to start this folder over")
    if restart and main and run.exists():
        shutil.rmtree(run)
    acc.wait_for_everyone()
    if is_done(run):
        log(f"{run} is already finished; nothing to do (pass --restart to train again)")
        return run

    set_seed(t.seed)
    if t.quantization == "4bit":  # QLoRA: frozen 4-bit base, LoRA adapters trained in fp32
        base = load_quantized(recipe.model, t.gradient_checkpointing)
    else:
        base = load_model(recipe.model.name, dtype="float32", revision=recipe.model.revision,
                          cache_dir=recipe.model.cache_dir)
    turns = turns_to_continue(base.adapter or base.path, recipe.turns)  # a checkpoint keeps its own format
    fmt = TurnFormat(base.tokenizer, turns, method=training_method(t))
    data = prepare_data(recipe, fmt, convs)
    model = build_model(recipe, fmt, base)
    wrapped = TrainedPositionLoss(model)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    opt = torch.optim.AdamW(param_groups(model, t.weight_decay), lr=t.lr, betas=(t.adam_beta1, t.adam_beta2))
    wrapped, opt = acc.prepare(wrapped, opt)

    lengths = [len(e.input_ids) for e in data.encoded]
    steps_per_epoch = math.ceil(len(data.encoded) / t.batch_size)
    total_steps = steps_per_epoch * t.epochs

    if main:
        run.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run / "recipe.yaml", dump_recipe(recipe))
        write_text_atomic(run / "run.json", json.dumps({
            "identity": ident, "base_model": base.path, "turn_format": fmt.describe(), "data": data.report,
            "trainable_parameters": n_trainable, "processes": acc.num_processes,
            "mixed_precision": acc.mixed_precision, "steps_per_epoch": steps_per_epoch,
            "total_steps": total_steps}, indent=2))
        log(fmt.describe())
        log(f"{data.report['examples']} examples, {data.report['trained_tokens']} trained tokens; "
            f"{total_steps} steps ({t.epochs} epochs x {steps_per_epoch}); {n_trainable / 1e6:.1f}M trainable "
            f"parameters; {acc.num_processes} process(es), mixed precision {acc.mixed_precision}")

    # Resume: the state folder holds weights, optimizer and the step it was written after.
    step = 0
    state_dir = run / "state"
    if (state_dir / "progress.json").exists():
        step = json.loads((state_dir / "progress.json").read_text())["step"]
        acc.load_state(str(state_dir / "accelerate"))
        if main:
            log(f"resuming after step {step} of {total_steps}")
    if main and (run / "metrics.jsonl").exists():
        # The steps after the saved state are trained again: their lines go (all of them when the run was
        # killed before its first state save, or they would be logged twice).
        metrics = [r for _, r in read_jsonl(run / "metrics.jsonl", allow_partial_tail=True)]
        write_jsonl_atomic(run / "metrics.jsonl", [r for r in metrics if r["step"] <= step])
    acc.wait_for_everyone()
    tracking.start(acc, t.report_to, recipe_to_dict(recipe), run, resumed_after=step)

    metrics_out = JsonlAppender(run / "metrics.jsonl") if main else None
    filler = fmt.eot_id
    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", disable=not main, dynamic_ncols=True)
    t_start, tokens_seen = time.time(), 0
    plan: tuple[int, list[list[int]]] = (-1, [])
    while step < total_steps:
        epoch, within = divmod(step, steps_per_epoch)
        if plan[0] != epoch:  # the epoch's seeded order, computed once per epoch
            plan = (epoch, plan_steps(len(data.encoded), t.batch_size, epoch, t.seed))
        batch = plan[1][within]
        torch.manual_seed(step_seed(t.seed, step, acc.process_index))
        rows = rows_for_rank(batch, lengths, t.micro_batch_tokens, acc.num_processes, acc.process_index)
        trained_total = sum(data.encoded[i].n_trained for i in batch)
        lr = lr_at(step, total_steps, recipe)
        for g in opt.param_groups:
            g["lr"] = lr
        loss_sum = torch.zeros((), device=acc.device)
        step_tokens = 0
        for k, row in enumerate(rows):
            cols = collate(row, data.encoded, filler)
            tensors = {key: torch.tensor([val], device=acc.device) for key, val in cols.items()}
            tensors["weight"] = tensors["weight"].float()
            sync = k == len(rows) - 1
            # DeepSpeed steps inside backward when gradients are synced: only after the last row.
            # (accelerate's own accumulate() counts a fixed number of micro-batches; ours vary.)
            acc.gradient_state._set_sync_gradients(sync)
            ctx = acc.no_sync(wrapped) if not sync else contextlib.nullcontext()
            with ctx, acc.autocast():
                ls, _ = wrapped(**tensors)
                # DDP/FSDP average gradients over processes; multiply back so the result is
                # (sum of token losses) / (trained tokens in the whole step).
                acc.backward(ls * acc.num_processes / trained_total)
            loss_sum += ls.detach()
            step_tokens += 0 if row.filler else len(cols["input_ids"])
        if t.max_grad_norm is not None:
            grad_norm = acc.clip_grad_norm_(wrapped.parameters(), t.max_grad_norm)
        else:
            grad_norm = None
        opt.step()
        opt.zero_grad(set_to_none=True)
        trim_heap()
        step += 1
        loss = (acc.reduce(loss_sum, "sum") / trained_total).item()
        tok_all = int(acc.reduce(torch.tensor(step_tokens, device=acc.device), "sum").item())
        tokens_seen += tok_all
        elapsed = time.time() - t_start
        if main:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_seen / elapsed:.0f}", epoch=epoch + 1)
            if step % t.log_every_steps == 0 or step == total_steps:
                row = {"step": step, "epoch": epoch + 1, "loss": round(loss, 5), "lr": lr,
                       "grad_norm": None if grad_norm is None else round(float(grad_norm), 4),
                       "examples": len(batch), "tokens": tok_all, "trained_tokens": trained_total,
                       "tokens_per_s": round(tokens_seen / elapsed, 1), "elapsed_s": round(elapsed, 2)}
                metrics_out.write(row)
                tracking.log_step(acc, t.report_to, row)
        end_of_epoch = step % steps_per_epoch == 0 or step == total_steps
        if end_of_epoch:
            ep = (step - 1) // steps_per_epoch + 1
            if t.save_from_epoch <= ep <= t.save_to_epoch or step == total_steps:
                save_checkpoint(acc, wrapped, fmt, recipe, base.path, checkpoint_path(run, ep),
                                {"epoch": ep, "step": step, "loss": loss})
        if step < total_steps and (end_of_epoch or step % t.state_every_steps == 0):
            _save_state(acc, state_dir, step)
    bar.close()
    if main:
        metrics_out.close()
        write_chart(run)  # training.png: loss and learning rate over every step, resumed runs included
        write_done(run, checkpoint_path(run, t.epochs), step)
        if state_dir.exists():
            shutil.rmtree(state_dir)  # optimizer state is large and no longer needed
    tracking.finish(acc)
    acc.wait_for_everyone()
    acc.free_memory()
    release_freed_memory()
    return run


def _save_state(acc: Any, state_dir: Path, step: int) -> None:
    """Write resumable state to a temporary folder, then swap it in: a kill mid-save loses nothing."""
    tmp = state_dir.with_name("state.tmp")
    if acc.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    acc.wait_for_everyone()
    # Sharded (FSDP) state is written by every rank; accelerate makes the folder on rank 0 only.
    (tmp / "accelerate").mkdir(parents=True, exist_ok=True)
    acc.save_state(str(tmp / "accelerate"))
    acc.wait_for_everyone()  # every rank has written its random state (and shards) before the swap
    if acc.is_main_process:
        (tmp / "progress.json").write_text(json.dumps({"step": step}))
        old = state_dir.with_name("state.old")
        if old.exists():  # left by a save killed while removing it; a folder cannot be renamed onto it
            shutil.rmtree(old)
        if state_dir.exists():
            os.replace(state_dir, old)
        os.replace(tmp, state_dir)
        if old.exists():
            shutil.rmtree(old)
    acc.wait_for_everyone()

