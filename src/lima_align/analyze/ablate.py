"""`lima-align ablate`: LIMA's ablations (Figures 5 and 6) as one recipe that describes a grid.

Each cell of the grid is one setting of the axes (data source, selection strategy, number of
examples, epochs, with or without dialogues). For every cell: draw the examples (seeded), train
with the base recipe, answer the eval prompts, judge the answers, and summarise them as a mean score
with a 95% bootstrap interval over prompts. Everything a cell makes lives in `cells/<cell-id>/`:

    cell.json  data.jsonl  run/ (a train run folder)  answers-<eval>.jsonl  judgments.jsonl  score.json

A stage whose output is complete is skipped, so a killed grid resumes where it stopped, and the cell
id is a hash of the cell's settings: changing the grid adds or drops cells, never redoes one.
`grid.json`, `grid.html` and `charts/grid.png` summarise the cells of the current grid.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import hashlib
import itertools
import json
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..checkpoint import final_checkpoint, is_done, turns_to_continue
from ..config import GenerateConfig, ModelConfig, Recipe, TurnsConfig, load_recipe, recipe_to_dict, setting
from ..errors import LimaError, ProblemList
from ..jsonl import read_jsonl, write_jsonl_atomic, write_text_atomic
from ..judge_kinds import KINDS, JudgeSpec, KindName, kind_names, kinds_help, make_judges, ping_judges, unmet
from ..train import train
from ..verdicts import FPE
from .grid_report import AXES, format_score, write_grid_page

Strategy = Literal["random", "lima", "longest", "kcenter", "facility_location", "quality"]
Axis = Literal["auto", "source", "strategy", "examples", "epochs", "dialogues"]
FPE_POINTS = {v: i + 1 for i, v in enumerate(FPE)}  # Fail / Pass / Excellent as 1 / 2 / 3 for a mean


@dataclass
class GridAxes:
    source: list[str] = setting(["seed"], "datasets to draw examples from: a path or seed split each; join several "
                           "with '+' to pool them (LIMA Fig. 5: filtered vs unfiltered Stack Exchange, wikiHow)")
    strategy: list[Strategy] = setting(["random"], "how examples are chosen: 'random' (seeded; smaller draws are "
                                  "subsets of larger ones) or a curate.select strategy")
    examples: list[int] = setting([0], "examples per cell, counted after dropping what the base recipe would drop "
                             "(data.max_example_tokens); 0 means all (LIMA Fig. 6: 2K..32K)")
    epochs: list[int] = setting([2], "training epochs per cell")
    dialogues: list[bool] = setting([False], "also train on `dialogues_data`, appended after selection")


@dataclass
class EvalSettings:
    prompts: str = setting("seed:dev", "prompts every cell answers (a file or a seed split)")
    limit: int | None = setting(12, "answer only the first N prompts; None answers all", above=0)
    max_new_tokens: int = setting(160, "answer length cap; the rest of the decoding comes from the base recipe")


@dataclass
class JudgeSettings:
    kind: KindName = setting("longest", f"judge kind: {kinds_help()}")
    mode: Literal["pairwise", "absolute"] = setting("pairwise", "pairwise against `reference`, or an absolute rating")
    scale: Literal["fail_pass_excellent", "helpfulness_6"] = setting(
        "helpfulness_6", "absolute scale; Fail/Pass/Excellent count 1/2/3 in the mean")
    reference: str = setting("base", "pairwise reference: 'base' (the untrained base model's answers) or a "
                        "generations file answering the same prompts")
    api_base: str | None = setting(None, "judge endpoint, e.g. http://127.0.0.1:8000/v1")
    api_model: str | None = setting(None, "judge model name")
    api_key_env: str = setting("OPENAI_API_KEY", "environment variable holding the API key")
    max_tokens: int = setting(1024, "cap on each judge reply", above=0)
    concurrency: int = setting(8, "judge requests in flight", above=0)
    cache: str | None = setting(None, "judgment cache (default: <output_dir>/judge_cache.sqlite)")
    n_boot: int = setting(2000, "bootstrap resamples for the 95% intervals")


@dataclass
class AblationRecipe:
    base: str = setting("quickstart", "training recipe every cell starts from (a file or a shipped name)")
    overrides: list[str] = setting([], "key=value overrides applied to the base recipe, e.g. ['train.lr=2e-5']")
    output_dir: str = setting("runs/ablate", "grid folder: cells/, grid.json, grid.html, charts/")
    seed: int = setting(0, "seed for drawing examples", at_least=0)
    dialogues_data: str = setting("seed:dialogues", "dialogues appended when a cell has dialogues: true")
    plot_axis: Axis = setting("auto", "axis on the chart's x ('auto': the first axis with several values)")
    grid: GridAxes = field(default_factory=GridAxes, metadata={"help": "the axes; every combination is a cell"})
    eval: EvalSettings = field(default_factory=EvalSettings, metadata={"help": "what each cell answers"})
    judge: JudgeSettings = field(default_factory=JudgeSettings, metadata={"help": "how answers are scored"})

    def check(self, problems: ProblemList) -> None:
        for name in AXES:
            if not getattr(self.grid, name):
                problems.add(f"grid.{name}", "has no values", "give at least one value")
        for i, n in enumerate(self.grid.examples):
            if n < 0:
                problems.add(f"grid.examples[{i}]", f"must be >= 0 (0 = all), got {n}")
        for i, e in enumerate(self.grid.epochs):
            if e <= 0:
                problems.add(f"grid.epochs[{i}]", f"must be > 0, got {e}")
        if self.eval.max_new_tokens <= 0:
            problems.add("eval.max_new_tokens", f"must be > 0, got {self.eval.max_new_tokens}")
        j = self.judge
        if j.mode == "absolute" and not KINDS[j.kind].can_rate:
            problems.add("judge.mode", f"{KINDS[j.kind].label} only compares two answers",
                         f"use judge.mode=pairwise, or judge.kind={'/'.join(kind_names(rates=True))} for absolute "
                         "ratings")
        for where, what, fix in unmet(judge_spec(j), RECIPE_NAMES, "="):
            problems.add(where, what, fix)
        if j.n_boot < 100:
            problems.add("judge.n_boot", f"{j.n_boot} resamples give unstable intervals", "use 1000 or more")
        try:
            base_recipe(self)
        except LimaError as e:
            for p in e.problems:
                problems.add(f"base: {p.where}", p.what, p.fix)


def base_recipe(r: AblationRecipe) -> Recipe:
    return load_recipe(r.base, r.overrides)


# ----------------------------------------------------------------- cells


@dataclass(frozen=True)
class Cell:
    source: str
    strategy: str
    examples: int
    epochs: int
    dialogues: bool

    def settings(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def plan_cells(r: AblationRecipe) -> list[Cell]:
    g = r.grid
    return [Cell(*v) for v in itertools.product(g.source, g.strategy, g.examples, g.epochs, g.dialogues)]


def _slug(text: str, width: int = 20) -> str:
    stem = Path(text).stem if ("/" in text or text.endswith((".jsonl", ".json"))) else text
    return re.sub(r"[^A-Za-z0-9]+", "-", stem).strip("-")[:width] or "data"


def _base_identity(base: Recipe) -> dict[str, Any]:
    # What a cell's training depends on besides its own settings (its data and epochs are the cell's).
    d = recipe_to_dict(base)
    ident = {k: d[k] for k in ("model", "turns", "data", "train")}
    ident["data"] = {k: v for k, v in ident["data"].items() if k not in ("train", "max_examples")}
    ident["train"] = {k: v for k, v in ident["train"].items() if k not in (
        "epochs", "save_from_epoch", "save_to_epoch", "output_dir", "log_every_steps", "state_every_steps")}
    return ident


def cell_id(cell: Cell, base: Recipe, seed: int, dialogues_data: str) -> str:
    """A readable slug plus a hash of everything that decides the cell's trained model."""
    key = {"cell": cell.settings(), "base": _base_identity(base), "seed": seed,
           "dialogues_data": dialogues_data if cell.dialogues else None}
    h = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
    n = cell.examples or "all"
    return f"{_slug(cell.source)}-{cell.strategy}-n{n}-e{cell.epochs}{'-dlg' if cell.dialogues else ''}-{h}"


def _eval_key(r: AblationRecipe, base: Recipe) -> str:
    g = dataclasses.asdict(base.generate)
    g = {k: v for k, v in g.items() if k not in ("output", "model_label", "batch_size", "prompts", "limit",
                                                 "max_new_tokens")}
    # Not the limit: answers are kept per prompt id, so a larger limit extends the same file.
    key = {"prompts": r.eval.prompts, "max_new_tokens": r.eval.max_new_tokens, "decoding": g}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]


# ----------------------------------------------------------------- data


def load_pool(spec: str, base: Recipe) -> list[dict[str, Any]]:
    """Every example of the source, minus those the base recipe would drop as too long."""
    from ..dataset_specs import load_dataset

    convs = []
    for part in spec.split("+"):
        convs += load_dataset(part.strip(), fmt=base.data.format, purpose="train")
    cap = base.data.max_example_tokens
    if cap is not None:
        from ..models import load_tokenizer, resolve_model_path
        from ..turns import TurnFormat, training_method

        folder = resolve_model_path(base.model.name, base.model.cache_dir)
        tok = load_tokenizer(folder, base.model.revision)
        fmt = TurnFormat(tok, turns_to_continue(folder, base.turns), method=training_method(base.train))
        convs = [c for c in convs if len(fmt.encode(c, base.data.loss_on).input_ids) <= cap]
    return [c.to_dict() for c in convs]


def draw(pool: list[dict[str, Any]], cell: Cell, seed: int, cache_dir: Path, base: Recipe) -> list[dict[str, Any]]:
    """The cell's examples, in pool order. Random draws are nested: n=200 is a subset of n=400."""
    n = cell.examples or len(pool)
    if n >= len(pool):
        return list(pool)
    if cell.strategy == "random":
        order = list(range(len(pool)))
        random.Random(seed).shuffle(order)
        return [pool[i] for i in sorted(order[:n])]
    try:
        from ..curate.select import SelectConfig, select
    except ImportError:
        raise LimaError(f"selection strategy {cell.strategy!r} needs lima_align.curate.select, which this "
                        "installation does not have", where="grid.strategy", fix="use strategy 'random'") from None
    # 'quality' scores examples with a language model: the grid's own base model.
    quality_model = base.model.name if cell.strategy == "quality" else None
    return select(pool, SelectConfig(strategy=cell.strategy, n=n, quality_model=quality_model), seed=seed,
                  cache_dir=cache_dir)


# ----------------------------------------------------------------- judging and scores


# JudgeSpec fields as a recipe's judge section names them, for messages
RECIPE_NAMES = {"api_base": "judge.api_base", "api_models": "judge.api_model"}


def judge_spec(j: JudgeSettings) -> JudgeSpec:
    return JudgeSpec(kinds=(j.kind,), api_base=j.api_base, api_models=(j.api_model,) if j.api_model else (),
                     api_key_env=j.api_key_env, concurrency=j.concurrency, max_tokens=j.max_tokens)


def make_judge(j: JudgeSettings) -> Any:
    """A fresh judge (an API judge's connections close with the event loop that used them)."""
    return make_judges(judge_spec(j))[0]


def check_judge(j: JudgeSettings) -> None:
    """One tiny request to a judge that can be unreachable, so it fails before hours of training, not after."""
    ping_judges(judge_spec(j))


def mean_ci(values: list[float], n_boot: int, seed: int = 0) -> dict[str, Any]:
    """Mean with a 95% percentile bootstrap interval, prompts resampled with replacement."""
    import numpy as np

    if not values:
        return {"value": None, "ci": [None, None]}
    x = np.asarray(values, dtype=float)
    boot = x[np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"value": float(x.mean()), "ci": [float(lo), float(hi)]}


def score_records(records: list[dict[str, Any]], model: str, judge_name: str, mode: str, *,
                  prompt_ids: set[str], n_boot: int, reference: str | None = None) -> dict[str, Any]:
    """One model's score from judgment records: pairwise preference score vs the reference (wins + ties/2,
    0.5 = no preference), or the mean absolute rating; with a 95% bootstrap interval over prompts."""
    from ..stats import win_rates

    if mode == "pairwise":
        verdicts = []
        for r in records:
            if r.get("type") != "pairwise" or r["judge"] != judge_name or r["prompt_id"] not in prompt_ids:
                continue
            if r["model_a"] == model and (reference is None or r["model_b"] == reference):
                verdicts.append(r["verdict"])
            elif r["model_b"] == model and (reference is None or r["model_a"] == reference):
                verdicts.append({"a": "b", "b": "a"}.get(r["verdict"], r["verdict"]))
        w = win_rates(verdicts, n_boot=n_boot)
        return {"metric": "preference score vs reference", "n": w["n"], "n_parsed": w["n_parsed"],
                "counts": w["counts"], **w["rates"]["score"]}
    scores = [r["score"] for r in records if r.get("type") == "absolute" and r["model"] == model
              and r["judge"] == judge_name and r["prompt_id"] in prompt_ids]
    values = [float(FPE_POINTS.get(s, s)) for s in scores if s is not None]
    return {"metric": "mean rating", "n": len(scores), "n_parsed": len(values), **mean_ci(values, n_boot)}


def read_records(path: Path) -> list[dict[str, Any]]:
    return [r for _, r in read_jsonl(path, allow_partial_tail=True)] if path.exists() else []


# ----------------------------------------------------------------- the grid


def _generate(model: str, base: Recipe, turns: TurnsConfig, r: AblationRecipe, out: Path, label: str,
              log: Any) -> list[dict[str, Any]]:
    from ..generate import generate_file
    from ..records import read_generations

    g: GenerateConfig = dataclasses.replace(base.generate, prompts=r.eval.prompts, limit=r.eval.limit,
                                            max_new_tokens=r.eval.max_new_tokens, output=str(out), model_label=label)
    generate_file(ModelConfig(name=model, dtype=base.model.dtype, revision=base.model.revision,
                              cache_dir=base.model.cache_dir), turns, g, log=log)
    gc.collect()
    # The file may hold answers to prompts a larger eval.limit asked for earlier: keep the current ones.
    from ..dataset_specs import load_dataset

    wanted = {c.id for c in load_dataset(r.eval.prompts, purpose="prompt")[: r.eval.limit]}
    return [x for x in read_generations(out) if x["prompt_id"] in wanted]


def _reference(r: AblationRecipe, base: Recipe, out: Path, ekey: str, log: Any) -> tuple[list[dict[str, Any]], str]:
    from ..records import read_generations

    if r.judge.reference != "base":
        gens = read_generations(r.judge.reference)
        return gens, gens[0]["model"] if gens else "reference"
    turns = TurnsConfig(format=base.turns.format, eot="eos", system=base.turns.system)  # a base model knows EOS only
    return _generate(base.model.name, base, turns, r, out / f"reference-{ekey}.jsonl", "base", log), "base"


def write_cell_data(cell: Cell, cid: str, r: AblationRecipe, base: Recipe, pools: dict[str, list[dict[str, Any]]],
                    out: Path) -> Path:
    """The cell's training examples (drawn once; a rerun keeps the file)."""
    d = out / "cells" / cid
    d.mkdir(parents=True, exist_ok=True)
    write_text_atomic(d / "cell.json", json.dumps({"id": cid, **cell.settings(), "seed": r.seed,
                                                   "base": r.base, "overrides": r.overrides}, indent=2))
    data = d / "data.jsonl"
    if not data.exists():
        if cell.source not in pools:
            pools[cell.source] = load_pool(cell.source, base)
        rows = draw(pools[cell.source], cell, r.seed, out / "select_cache", base)
        if cell.dialogues:
            from ..dataset_specs import load_dataset

            rows += [c.to_dict() for c in load_dataset(r.dialogues_data, purpose="train")]
        write_jsonl_atomic(data, rows)
    return data


def run_cell(cell: Cell, cid: str, r: AblationRecipe, base: Recipe, ref: tuple[list[dict[str, Any]], str] | None,
             ekey: str, out: Path, log: Any) -> dict[str, Any]:
    from ..judge import judge_absolute, judge_pairwise

    d = out / "cells" / cid
    data = d / "data.jsonl"
    run = d / "run"
    if not is_done(run):
        cr = copy.deepcopy(base)
        cr.data.train, cr.data.format, cr.data.max_examples = [str(data)], "ours", None
        cr.train.epochs = cr.train.save_from_epoch = cr.train.save_to_epoch = cell.epochs
        cr.train.output_dir = str(run)
        train(cr, log=log)
        gc.collect()
    final = final_checkpoint(run)
    gens = _generate(final, base, base.turns, r, d / f"answers-{ekey}.jsonl", cid, log)
    judgments = d / "judgments.jsonl"
    cache = r.judge.cache or str(out / "judge_cache.sqlite")
    judge = make_judge(r.judge)
    if r.judge.mode == "pairwise":
        judge_pairwise(gens, ref[0], [judge], judgments, cache_path=cache, max_concurrency=r.judge.concurrency,
                       allow_partial=True, sources=(cid, ref[1]), progress=False, log=log)
    else:
        judge_absolute(gens, [judge], judgments, scale=r.judge.scale, cache_path=cache,
                       max_concurrency=r.judge.concurrency, progress=False, log=log)
    score = score_records(read_records(judgments), cid, judge.name, r.judge.mode,
                          prompt_ids={g["prompt_id"] for g in gens}, n_boot=r.judge.n_boot,
                          reference=ref[1] if ref else None)
    run_info = json.loads((run / "run.json").read_text())
    metrics = read_records(run / "metrics.jsonl")
    summary = {"id": cid, **cell.settings(), "trained_examples": run_info["data"]["examples"],
               "final_loss": metrics[-1]["loss"] if metrics else None, "judge": judge.name,
               "scale": r.judge.scale if r.judge.mode == "absolute" else None, "score": score,
               "answers": len(gens), "ended_their_turn": sum(g["finish_reason"] == "eot" for g in gens)}
    write_text_atomic(d / "score.json", json.dumps(summary, indent=2))
    return summary


def run_grid(r: AblationRecipe, *, log: Any = print) -> Path:
    """Run (or resume) every cell of the grid; returns the grid folder."""
    from tqdm.auto import tqdm

    base = base_recipe(r)
    out = Path(r.output_dir)
    cells = plan_cells(r)
    ids = [cell_id(c, base, r.seed, r.dialogues_data) for c in cells]
    # Fail before any training: every source must hold enough examples for its largest cell.
    pools: dict[str, list[dict[str, Any]]] = {}
    problems = ProblemList()
    for c, cid in zip(cells, ids, strict=True):
        if (out / "cells" / cid / "data.jsonl").exists():
            continue
        if c.source not in pools:
            pools[c.source] = load_pool(c.source, base)
        if c.examples > len(pools[c.source]):
            problems.add(f"grid.examples ({c.examples})", f"source {c.source!r} has only {len(pools[c.source])} "
                         "usable examples", "lower grid.examples, or use 0 for all")
    problems.raise_if_any()
    check_judge(r.judge)
    for c, cid in zip(cells, ids, strict=True):  # every draw before any training: a strategy error fails now
        write_cell_data(c, cid, r, base, pools, out)
    ekey = _eval_key(r, base)
    ref = _reference(r, base, out, ekey, log) if r.judge.mode == "pairwise" else None
    done = sum((out / "cells" / cid / "score.json").exists() for cid in ids)
    log(f"grid of {len(cells)} cells in {out} ({done} already scored)")
    summaries = []
    bar = tqdm(list(zip(cells, ids, strict=True)), desc="ablate", unit="cell", dynamic_ncols=True)
    for c, cid in bar:
        bar.set_postfix_str(cid)
        summaries.append(run_cell(c, cid, r, base, ref, ekey, out, log))
    bar.close()
    axis = pick_axis(r)
    grid = {"recipe": dataclasses.asdict(r), "axis": axis, "reference": ref[1] if ref else None,
            "cells": summaries, "created": round(time.time(), 3)}
    write_text_atomic(out / "grid.json", json.dumps(grid, indent=2))
    write_grid_page(grid, out)
    print_summary(summaries, log)
    return out


def pick_axis(r: AblationRecipe) -> str:
    if r.plot_axis != "auto":
        return r.plot_axis
    return next((a for a in AXES if len(getattr(r.grid, a)) > 1), "examples")


def print_summary(summaries: list[dict[str, Any]], log: Any) -> None:
    from rich.table import Table

    from .. import crash

    table = Table(title="ablation grid: score with 95% interval per cell")
    for col in ("cell", "source", "strategy", "examples", "epochs", "dialogues", "trained", "loss", "score"):
        table.add_column(col)
    for s in summaries:
        table.add_row(s["id"], s["source"], s["strategy"], str(s["examples"] or "all"), str(s["epochs"]),
                      "yes" if s["dialogues"] else "no", str(s["trained_examples"]),
                      "-" if s["final_loss"] is None else f"{s['final_loss']:.3f}", format_score(s["score"]))
    console = crash.console()
    if not console.is_terminal:  # a log file: do not squeeze the table into 80 columns
        console = crash.console(width=170)
    console.print(table)
