"""The `ablate` and `select` subcommands (registered by analyze/cli.py through add_grid_commands)."""

from __future__ import annotations

import argparse
import json

from ..errors import LimaError
from ..judge_kinds import KINDS, kind_names, kinds_help, unmet
from ..verdicts import SCALES


def cmd_ablate(args: argparse.Namespace) -> int:
    from ..config import load_recipe
    from .ablate import AblationRecipe, run_grid

    recipe = load_recipe(args.recipe, list(args.overrides or []), cls=AblationRecipe)
    if args.show:
        import dataclasses

        import yaml

        print(yaml.safe_dump(dataclasses.asdict(recipe), sort_keys=False))
        return 0
    out = run_grid(recipe)
    print(f"grid: {out / 'grid.json'}\npage: {out / 'grid.html'}")
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    from ..config import load_recipe
    from .ablate import JudgeSettings, judge_spec
    from .select_ckpt import SelectSettings, select_checkpoint

    # Judge flags go through the same typed loader as recipes, so they are checked the same way.
    judge = load_recipe(None, [f"{k}={v}" for k, v in (
        ("kind", args.judge), ("mode", args.mode), ("scale", args.scale), ("api_base", args.api_base),
        ("api_model", args.api_model), ("api_key_env", args.api_key_env), ("max_tokens", args.max_tokens),
        ("concurrency", args.concurrency), ("cache", args.cache), ("n_boot", args.n_boot)) if v is not None],
        cls=JudgeSettings)
    for _, what, fix in unmet(judge_spec(judge), {"api_base": "--api-base", "api_models": "--api-model"}, " "):
        others = [k for k in KINDS if k != judge.kind and not KINDS[k].needs]
        raise LimaError(what, where=f"--judge {judge.kind}", fix=fix + "".join(f", or --judge {k}" for k in others))
    if judge.mode == "absolute" and not KINDS[judge.kind].can_rate:
        raise LimaError(f"{KINDS[judge.kind].label} only compares two answers", where="--mode absolute",
                        fix=f"use --mode pairwise, or --judge {'/'.join(kind_names(rates=True))}")
    s = SelectSettings(output=args.output, prompts=args.prompts, limit=args.limit, max_new_tokens=args.max_new_tokens,
                       reference=args.reference, judge=judge, ppl_data=args.ppl_data, ppl_limit=args.ppl_limit)
    out = select_checkpoint(args.run_dir, s)
    result = json.loads((out / "select.json").read_text())
    print(f"best: {result['best_path']}\nselect.json: {out / 'select.json'}\npage: {out / 'select.html'}")
    return 0


def add_grid_commands(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    a = sub.add_parser("ablate", help="run an ablation grid: curate, train, generate, judge, plot each cell",
                       description="Run (or resume) the grid an ablation recipe describes (shipped: ablate-cpu, "
                       "ablate-gpu): every cell is drawn, trained, answers the eval prompts and is judged; "
                       "grid.json, grid.html and a LIMA Fig. 5/6-style chart summarise it. Finished stages "
                       "are skipped on a rerun; changing the grid only runs the new cells.")
    a.add_argument("recipe", help="ablation recipe file or shipped name (ablate-cpu, ablate-gpu)")
    a.add_argument("--show", action="store_true", help="print the resolved recipe and stop")
    a.add_argument("overrides", nargs="*", metavar="key=value",
                   help="recipe overrides, e.g. grid.examples=[8,16] judge.kind=api output_dir=runs/mine")
    a.set_defaults(func=cmd_ablate)

    s = sub.add_parser("select", help="choose a run's checkpoint by judging dev answers, with perplexity beside",
                       description="Answer the dev prompts with every saved checkpoint of a run, judge them "
                       "(pairwise against a reference checkpoint, or absolute), measure held-out perplexity, "
                       "and name the best checkpoint.")
    s.add_argument("run_dir", help="a train run folder (with checkpoints/epoch-NN)")
    s.add_argument("--prompts", default="seed:dev", help="dev prompts (file or seed split; default seed:dev)")
    s.add_argument("--limit", type=int, help="answer only the first N prompts")
    s.add_argument("--max-new-tokens", type=int, default=512, help="answer length cap")
    s.add_argument("--reference", help="reference checkpoint for pairwise judging (default: the first saved)")
    s.add_argument("--judge", choices=list(KINDS), default="longest", help=f"judge kind: {kinds_help()}")
    s.add_argument("--mode", choices=["pairwise", "absolute"], default="pairwise")
    s.add_argument("--scale", choices=list(SCALES), default=None,
                   help="absolute scale (default helpfulness_6)")
    s.add_argument("--api-base", help="judge endpoint, e.g. http://127.0.0.1:8000/v1")
    s.add_argument("--api-model", help="judge model name")
    s.add_argument("--api-key-env", default=None, help="environment variable holding the key")
    s.add_argument("--max-tokens", type=int, help="cap on each judge reply")
    s.add_argument("--concurrency", type=int, help="judge requests in flight")
    s.add_argument("--cache", help="judgment cache (default: OUTPUT/judge_cache.sqlite)")
    s.add_argument("--n-boot", type=int, help="bootstrap resamples (default 2000)")
    s.add_argument("--ppl-data", default="heldout", help="examples with answers for perplexity; 'heldout' "
                   "(default): the run's training sources minus what it trained on; skipped, with a notice, when it "
                   "trained on all of them")
    s.add_argument("--ppl-limit", type=int, default=20, help="perplexity on at most this many examples")
    s.add_argument("--output", required=True, help="folder for answers, judgments, select.json, select.html")
    s.set_defaults(func=cmd_select)
