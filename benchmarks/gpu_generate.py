#!/usr/bin/env python
"""GPU generation benchmark: vLLM backend against the transformers backend on LIMA's 300 test prompts.

Both run lima-align's own `generate_file` (same prompts in the same turn format, LIMA's decoding:
temperature 0.7, top p 0.9, repetition penalty 1.2), writing generations files in a temp folder.
Reports prompts/s, output tokens/s and the vLLM / transformers ratio, plus the transformers
backend with a static KV cache (`generate.cache: static`) unless --skip-static.

    python benchmarks/gpu_generate.py --model /models/llama-1b --json-out gpu_generate.json
    python benchmarks/gpu_generate.py --model runs/lima/checkpoints/epoch-15 --max-new-tokens 2048

Without a CUDA device it prints "no CUDA device; skipped" and exits 0. Without vLLM installed
it measures the transformers backend only and says so.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PROMPTS = REPO / ".." / "shared" / "data" / "lima" / "test.jsonl"
SKIP_MESSAGE = "no CUDA device; skipped"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="a model folder, run checkpoint or hub id (~1B)")
    p.add_argument("--prompts", default=str(DEFAULT_PROMPTS), help="LIMA test prompts (300)")
    p.add_argument("--limit", type=int, help="only the first N prompts")
    p.add_argument("--max-new-tokens", type=int, default=1024)
    p.add_argument("--batch", type=int, default=32, help="transformers backend prompts per batch")
    p.add_argument("--skip-static", action="store_true", help="leave out the static-cache transformers run")
    p.add_argument("--skip-transformers", action="store_true")
    p.add_argument("--json-out", help="write every figure here")
    return p.parse_args(argv)


def timed_run(args: argparse.Namespace, backend: str, cache: str, out: Path) -> dict[str, Any]:
    import torch

    from lima_align.config import GenerateConfig, ModelConfig, TurnsConfig
    from lima_align.generate import generate_file

    g = GenerateConfig(prompts=args.prompts, output=str(out), max_new_tokens=args.max_new_tokens,
                       batch_size=args.batch, limit=args.limit, backend=backend, cache=cache)
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()  # model loading included: it is part of what a user waits for
    generate_file(ModelConfig(name=args.model, dtype="bfloat16"), TurnsConfig(), g, log=lambda *_: None)
    seconds = time.perf_counter() - t
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    tokens = sum(r["tokens"]["output"] for r in rows)
    finish: dict[str, int] = {}
    for r in rows:
        finish[r["finish_reason"]] = finish.get(r["finish_reason"], 0) + 1
    gc.collect()
    torch.cuda.empty_cache()
    return {"backend": backend, "cache": cache, "prompts": len(rows), "seconds": seconds,
            "prompts_per_s": len(rows) / seconds, "output_tokens": tokens, "output_tokens_per_s": tokens / seconds,
            "finish_reasons": finish, "peak_memory_gib": torch.cuda.max_memory_allocated() / 2 ** 30}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(SKIP_MESSAGE)
        return 0
    if not Path(args.prompts).exists():
        sys.exit(f"prompts not found: {args.prompts} (pass --prompts)")
    result: dict[str, Any] = {"device": torch.cuda.get_device_name(0), "model": args.model, "settings": vars(args)}
    runs = []
    if not args.skip_transformers:
        runs.append(("transformers", "dynamic"))
        if not args.skip_static:
            runs.append(("transformers", "static"))
    has_vllm = importlib.util.find_spec("vllm") is not None
    if has_vllm:
        runs.append(("vllm", "dynamic"))  # last: vLLM reserves most of the GPU's memory for itself
    else:
        print("vLLM is not installed (pip install 'lima-align[vllm]'): transformers backend only")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_transformers:  # untimed: imports, CUDA context and kernels are paid once, here
            warm = argparse.Namespace(**{**vars(args), "limit": 2, "max_new_tokens": 8})
            timed_run(warm, "transformers", "dynamic", Path(tmp) / "warmup.jsonl")
        for backend, cache in runs:
            r = timed_run(args, backend, cache, Path(tmp) / f"{backend}-{cache}.jsonl")
            result[f"{backend}_{cache}"] = r
            print(f"{backend:12} cache {cache:7}: {r['prompts']} prompts in {r['seconds']:.1f} s, "
                  f"{r['output_tokens_per_s']:,.0f} output tokens/s, finish {r['finish_reasons']}")
    base = result.get("transformers_dynamic")
    if base and "vllm_dynamic" in result:
        result["vllm_over_transformers"] = base["seconds"] / result["vllm_dynamic"]["seconds"]
        print(f"vLLM / transformers (wall time for the same prompts): {result['vllm_over_transformers']:.1f}x")
    if base and "transformers_static" in result:
        result["static_over_dynamic"] = base["seconds"] / result["transformers_static"]["seconds"]
        print(f"static / dynamic KV cache: {result['static_over_dynamic']:.2f}x")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
