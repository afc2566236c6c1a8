#!/usr/bin/env python
"""GPU training benchmark: lima-align's real `train()` against TRL's SFTTrainer, one run, one GPU.

Reports, for the same model, LIMA training examples and batch of 32:
  * the GPU's measured bf16 matmul peak (TFLOP/s), the denominator of MFU;
  * tokens/s (real, unpadded tokens), model FLOPs utilisation and peak memory of lima-align;
  * the same for TRL's SFTTrainer, and the ratio;
  * the time the full LIMA recipe (all examples x 15 epochs) would take at the measured speed
    (or, with --full, the measured time of actually running it).

FLOPs counted as useful work, per example of L tokens with T trained tokens, per step:
  6 x (parameters outside the embedding and output layer) x L      (forward + backward matmuls)
  6 x vocab x hidden x T                                            (output layer, trained positions only)
  6 x layers x (heads x head_dim) x L^2                             (causal attention scores and values)
Recomputation from gradient checkpointing is not counted (the usual MFU convention). TRL is
credited with the same FLOPs for the same examples, though it applies the output layer everywhere.

    python benchmarks/gpu_train.py --model meta-llama/Llama-3.2-1B --json-out gpu_train.json
    python benchmarks/gpu_train.py --model /models/llama-1b --attn flash_attention_2 --full

Without a CUDA device it prints "no CUDA device; skipped" and exits 0.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / ".." / "shared" / "data" / "lima" / "derived_train_fastchat_1k" / "fastchat_lima_1k.json"
# The derived set wraps every instruction in an Alpaca-style preamble that LIMA's data does not have.
ALPACA_PREFIX = ("Below is an instruction that describes a task. Write a response that appropriately completes "
                 "the request. ### Instruction: ")
SKIP_MESSAGE = "no CUDA device; skipped"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a ~1B causal LM: a local folder or a hub id")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="LIMA training set (ShareGPT / FastChat JSON)")
    p.add_argument("--batch", type=int, default=32, help="examples per optimizer step (LIMA: 32)")
    p.add_argument("--micro-batch-tokens", type=int, default=16384, help="tokens per packed forward pass")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (allocator, kernels, compile)")
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    p.add_argument("--attn", default="sdpa", choices=["sdpa", "eager", "flash_attention_2"])
    p.add_argument("--compile", action="store_true", help="train.compile=true")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--skip-trl", action="store_true")
    p.add_argument("--trl-micro-batch", type=int, default=4, help="TRL per-device batch (x accumulation = --batch)")
    p.add_argument("--trl-padding-free", action="store_true", help="TRL's padding_free (wants flash_attention_2)")
    p.add_argument("--full", action="store_true", help="also run the whole recipe (all examples x 15 epochs)")
    p.add_argument("--peak-size", type=int, default=8192, help="matrix size of the bf16 peak microbenchmark")
    p.add_argument("--json-out", help="write every figure here")
    return p.parse_args(argv)


def bf16_peak_tflops(n: int, iters: int = 50) -> float:
    """The best sustained bf16 matmul rate of this GPU: the denominator of MFU."""
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        a @ b
    best = 0.0
    for _ in range(3):
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(iters):
            a @ b
        torch.cuda.synchronize()
        best = max(best, 2 * n ** 3 * iters / (time.perf_counter() - t) / 1e12)
    return best


def write_training_set(data: Path, out: Path) -> Path:
    """Our JSONL from the LIMA set, preamble stripped (a temp file: the data is never copied into the project)."""
    from lima_align.records import read_conversations

    with out.open("w") as f:
        for c in read_conversations(data, purpose="train"):
            for m in c.messages:
                if m.role == "user" and m.content.startswith(ALPACA_PREFIX):
                    m.content = m.content[len(ALPACA_PREFIX):]
            f.write(json.dumps(c.to_dict()) + "\n")
    return out


class FlopCounter:
    """Useful FLOPs of training on given examples (see the module doc)."""

    def __init__(self, model: Any):
        cfg = model.config
        cfg = getattr(cfg, "text_config", None) or cfg
        emb = model.get_input_embeddings().weight
        head = model.get_output_embeddings().weight
        total = sum(p.numel() for p in model.parameters())
        self.body = total - emb.numel() - (0 if head is emb else head.numel())
        self.vocab, self.hidden = head.shape
        self.layers = cfg.num_hidden_layers
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.attn_dim = cfg.num_attention_heads * head_dim

    def example(self, length: int, trained: int) -> float:
        return (6 * self.body * length + 6 * self.vocab * self.hidden * trained
                + 6 * self.layers * self.attn_dim * length ** 2)


def lima_recipe(args: argparse.Namespace, train_file: Path, out: Path, examples: int | None, epochs: int) -> Any:
    from lima_align.config import load_recipe

    over = [f"model.name={args.model}", f"data.train=[{train_file}]", f"train.output_dir={out}",
            f"train.batch_size={args.batch}", f"train.epochs={epochs}", "train.precision=bf16",
            f"train.micro_batch_tokens={args.micro_batch_tokens}", f"train.attn_implementation={args.attn}",
            f"train.compile={str(args.compile).lower()}", "train.residual_dropout_top=0.2",
            f"train.gradient_checkpointing={str(args.gradient_checkpointing).lower()}",
            f"train.save_from_epoch={epochs}", f"train.save_to_epoch={epochs}", "train.state_every_steps=100000",
            "train.log_every_steps=1"]
    if examples is not None:
        over.append(f"data.max_examples={examples}")
    return load_recipe("lima", over)


def step_examples(recipe: Any, steps: int) -> tuple[list[list[tuple[int, int]]], Any]:
    """(length, trained) of every example of the first `steps` steps, exactly as train() lays them out."""
    from lima_align.models import load_tokenizer, resolve_model_path
    from lima_align.packing import plan_steps
    from lima_align.train import load_training_conversations, prepare_data
    from lima_align.turns import TurnFormat

    tok = load_tokenizer(resolve_model_path(recipe.model.name))
    fmt = TurnFormat(tok, recipe.turns, method=recipe.train.method)
    data = prepare_data(recipe, fmt, load_training_conversations(recipe))
    plan = plan_steps(len(data.encoded), recipe.train.batch_size, 0, recipe.train.seed)[:steps]
    return [[(len(data.encoded[i].input_ids), data.encoded[i].n_trained) for i in b] for b in plan], data


def run_lima(args: argparse.Namespace, train_file: Path, work: Path, flops: FlopCounter) -> dict[str, Any]:
    import torch

    from lima_align.train import train

    n_steps = args.warmup + args.steps
    recipe = lima_recipe(args, train_file, work / "lima", args.batch * n_steps, 1)
    per_step, _ = step_examples(recipe, n_steps)
    torch.cuda.reset_peak_memory_stats()
    run = train(recipe, restart=True, log=lambda *_: None)
    peak = torch.cuda.max_memory_allocated()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    timed = rows[args.warmup:]
    seconds = timed[-1]["elapsed_s"] - rows[args.warmup - 1]["elapsed_s"] if args.warmup else timed[-1]["elapsed_s"]
    tokens = sum(r["tokens"] for r in timed)
    work_flops = sum(flops.example(length, t) for b in per_step[args.warmup:] for length, t in b)
    return {"tokens_per_s": tokens / seconds, "tflops": work_flops / seconds / 1e12, "seconds": seconds,
            "timed_steps": len(timed), "tokens": tokens, "peak_memory_gib": peak / 2 ** 30,
            "losses": [r["loss"] for r in rows]}


def run_trl(args: argparse.Namespace, recipe: Any, work: Path, flops: FlopCounter) -> dict[str, Any]:
    """TRL's SFTTrainer on the same tokens in the same steps, bf16, its own optimizer and loss."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    from lima_align.models import load_tokenizer, resolve_model_path
    from lima_align.packing import plan_steps
    from lima_align.train import load_training_conversations, prepare_data
    from lima_align.turns import IGNORE, TurnFormat

    datasets.disable_progress_bars()
    path = resolve_model_path(args.model)
    tok = load_tokenizer(path)
    fmt = TurnFormat(tok, recipe.turns, method="full")
    data = prepare_data(recipe, fmt, load_training_conversations(recipe))
    n_steps = args.warmup + args.steps
    plan = plan_steps(len(data.encoded), args.batch, 0, recipe.train.seed)[:n_steps]
    order = [i for b in plan for i in b]
    ds = datasets.Dataset.from_dict({
        "input_ids": [data.encoded[i].input_ids for i in order],
        "completion_mask": [[int(lab != IGNORE) for lab in data.encoded[i].labels] for i in order]})
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=args.attn)
    if fmt.new_token is not None:
        model.resize_token_embeddings(len(tok), mean_resizing=True)

    ends: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, a: Any, state: Any, control: Any, **kw: Any) -> None:
            torch.cuda.synchronize()
            ends.append(time.perf_counter())

    cfg = SFTConfig(output_dir=str(work / "trl"), per_device_train_batch_size=args.trl_micro_batch,
                    gradient_accumulation_steps=max(1, args.batch // args.trl_micro_batch), max_steps=n_steps,
                    max_length=recipe.data.max_seq_len, completion_only_loss=True, bf16=True,
                    gradient_checkpointing=args.gradient_checkpointing, padding_free=args.trl_padding_free,
                    train_sampling_strategy="sequential", learning_rate=recipe.train.lr, logging_steps=1,
                    save_strategy="no", report_to="none", disable_tqdm=True, seed=0)
    torch.cuda.reset_peak_memory_stats()
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[Clock()])
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    peak = torch.cuda.max_memory_allocated()
    seconds = ends[-1] - ends[args.warmup - 1] if args.warmup else ends[-1] - ends[0]
    timed = plan[args.warmup:]
    tokens = sum(len(data.encoded[i].input_ids) for b in timed for i in b)
    work_flops = sum(flops.example(len(data.encoded[i].input_ids), data.encoded[i].n_trained) for b in timed for i in b)
    del trainer, model
    gc.collect()
    torch.cuda.empty_cache()
    return {"tokens_per_s": tokens / seconds, "tflops": work_flops / seconds / 1e12, "seconds": seconds,
            "tokens": tokens, "peak_memory_gib": peak / 2 ** 30, "padding_free": args.trl_padding_free}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(SKIP_MESSAGE)
        return 0
    if args.warmup < 1:
        sys.exit("--warmup must be at least 1 (the first step pays for allocation and kernel selection)")
    if not Path(args.data).exists():
        sys.exit(f"training set not found: {args.data} (pass --data)")
    from transformers import AutoConfig, AutoModelForCausalLM

    from lima_align.models import resolve_model_path

    device = torch.cuda.get_device_name(0)
    peak = bf16_peak_tflops(args.peak_size)
    print(f"{device}: measured bf16 matmul peak {peak:.0f} TFLOP/s")
    with torch.device("meta"):
        meta_model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(resolve_model_path(args.model)))
    flops = FlopCounter(meta_model)
    result: dict[str, Any] = {"device": device, "bf16_peak_tflops": peak, "model": args.model,
                              "parameters_outside_embeddings": flops.body, "settings": vars(args)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train_file = write_training_set(Path(args.data), work / "lima_train.jsonl")
        lima = run_lima(args, train_file, work, flops)
        lima["mfu"] = lima["tflops"] / peak
        result["lima_align"] = lima
        print(f"lima-align: {lima['tokens_per_s']:,.0f} tokens/s, MFU {lima['mfu']:.1%}, "
              f"peak memory {lima['peak_memory_gib']:.1f} GiB")
        gc.collect()
        torch.cuda.empty_cache()
        full_recipe = lima_recipe(args, train_file, work / "full", None, 15)
        _, data = step_examples(full_recipe, 0)
        all_tokens = data.report["tokens"]
        result["full_recipe"] = {"examples": data.report["examples"], "tokens_per_epoch": all_tokens,
                                 "estimated_minutes": all_tokens * 15 / lima["tokens_per_s"] / 60}
        print(f"full recipe ({data.report['examples']} examples x 15 epochs, {all_tokens * 15:,} tokens): "
              f"~{result['full_recipe']['estimated_minutes']:.1f} min at this speed")
        if args.full:
            from lima_align.train import train

            t = time.perf_counter()
            train(full_recipe, restart=True, log=lambda *_: None)
            result["full_recipe"]["measured_minutes"] = (time.perf_counter() - t) / 60
            print(f"full recipe measured: {result['full_recipe']['measured_minutes']:.1f} min (incl. loading, saving)")
        if not args.skip_trl:
            trl = run_trl(args, full_recipe, work, flops)
            trl["mfu"] = trl["tflops"] / peak
            result["trl"] = trl
            result["lima_over_trl"] = lima["tokens_per_s"] / trl["tokens_per_s"]
            print(f"TRL SFTTrainer: {trl['tokens_per_s']:,.0f} tokens/s, MFU {trl['mfu']:.1%}, peak memory "
                  f"{trl['peak_memory_gib']:.1f} GiB; lima-align / TRL = {result['lima_over_trl']:.2f}x")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
