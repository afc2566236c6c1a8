"""`lima-align quickstart`: the whole loop on the embedded model, on one CPU.

prepare the base model -> answer held-out prompts with the base -> fine-tune on the seed set ->
answer the same prompts with the aligned model -> summary and a side-by-side page.
Every step writes to the quickstart folder and is skipped or resumed when run again.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import resource
import time
from pathlib import Path
from typing import Any

from .answer_checks import rich_table, summarize
from .checkpoint import final_checkpoint
from .compare_page import side_by_side_html
from .config import ModelConfig, Recipe, TurnsConfig, dump_recipe
from .generate import generate_file
from .jsonl import write_text_atomic
from .models import EMBEDDED, prepare_embedded
from .records import read_generations
from .train import train


def quickstart(recipe: Recipe, *, log: Any = print) -> Path:
    q = recipe.quickstart
    out = Path(q.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "recipe.yaml", dump_recipe(recipe))
    t0 = time.time()
    timings: dict[str, float] = {}

    def mark(name: str, since: float) -> float:
        timings[name] = round(time.time() - since, 1)
        return time.time()

    t = time.time()
    log("[1/4] preparing the base model")
    if recipe.model.name == EMBEDDED:
        prepare_embedded(recipe.model.cache_dir, log=log)
    t = mark("prepare_s", t)

    gen = dataclasses.replace(recipe.generate, prompts=q.eval_prompts, limit=q.eval_limit,
                              max_new_tokens=q.eval_max_new_tokens)
    log("[2/4] answering held-out prompts with the base model")
    base_file = generate_file(recipe.model, TurnsConfig(format=recipe.turns.format, eot="eos"),
                              dataclasses.replace(gen, output=str(out / "base.jsonl"), model_label="base"), log=log)
    gc.collect()
    t = mark("generate_base_s", t)

    log("[3/4] fine-tuning with the recipe")
    run = train(recipe, log=log)
    gc.collect()
    t = mark("train_s", t)
    final = final_checkpoint(run)

    log("[4/4] answering the same prompts with the aligned model")
    aligned_file = generate_file(ModelConfig(name=final, dtype=recipe.model.dtype, cache_dir=recipe.model.cache_dir),
                                 recipe.turns, dataclasses.replace(gen, output=str(out / "aligned.jsonl"),
                                                                   model_label="aligned"), log=log)
    t = mark("generate_aligned_s", t)

    base, aligned = read_generations(base_file), read_generations(aligned_file)
    # The judge-free figures (answer_checks) are the summary: the same numbers as `lima-align answers` and the page.
    summary = {"base": summarize(base), "aligned": summarize(aligned), "timings_s": timings,
               "total_s": round(time.time() - t0, 1),
               "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
               "checkpoint": final}
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    page = side_by_side_html(base, aligned, out / "compare.html", title="lima-align quickstart: base vs aligned",
                             names=("base (pretrained)", "aligned (fine-tuned)"),
                             summary=f"Prompts: {q.eval_prompts}.")
    _print_summary(summary, base, aligned, page, log)
    return out


def _print_summary(summary: dict[str, Any], base: list[dict], aligned: list[dict], page: Path, log: Any) -> None:
    from .crash import console as pipe_aware_console

    console = pipe_aware_console()
    console.print(rich_table([summary["base"], summary["aligned"]], ["base", "aligned"],
                             "quickstart: base vs aligned on held-out prompts (95% intervals, k/n)"))
    by_id = {r["prompt_id"]: r for r in aligned}
    for r in base[:2]:
        a = by_id.get(r["prompt_id"])
        if a is None:
            continue
        console.print(f"\n[bold]prompt[/] {r['messages'][-1]['content'][:300]}")
        console.print(f"[bold red]base[/] {r['output'][:400]}")
        console.print(f"[bold green]aligned[/] {a['output'][:400]}")
    t = summary["timings_s"]
    console.print(f"\ntotal {summary['total_s']:.0f}s (prepare {t['prepare_s']}s, base answers {t['generate_base_s']}s, "
                  f"training {t['train_s']}s, aligned answers {t['generate_aligned_s']}s); "
                  f"peak memory {summary['peak_rss_gb']} GB\nside-by-side page: {page}")
