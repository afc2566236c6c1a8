"""Commands for multi-turn dialogue (LIMA section 6): `converse`, `judge turns`, `judge conversations`,
and `dialogue train|eval|report`, the two-variant comparison (single-turn only vs +30 dialogues)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from ..checkpoint import final_checkpoint
from ..cli_options import add_overrides, judge_options, judges_from_args
from ..config import ModelConfig, TurnsConfig, load_recipe
from ..decoding import Decoding
from ..errors import LimaError
from ..jsonl import check_output_folder
from ..judges import can_rate
from .conversations import (
    ApiAssistant,
    LocalAssistant,
    LocalChatClient,
    SimulatedUser,
    converse,
    load_scenarios,
    load_scripts,
    read_conversations_file,
)
from .judging import judge_conversations, judge_turns

VARIANTS = ("single-turn", "with-dialogues")  # shipped recipes, trained and compared by `dialogue`


def _plans(args: argparse.Namespace) -> list[Any]:
    if args.simulate:
        if not args.scenarios:
            raise LimaError("--simulate needs --scenarios", fix="e.g. --scenarios dialogue_eval (our packaged ones)")
        plans = load_scenarios(args.scenarios, args.turns)
    else:
        if args.scenarios:
            raise LimaError("--scenarios is for simulated conversations", fix="add --simulate, or use --script")
        plans = load_scripts(args.script or "dialogue_eval")
    return plans[: args.limit] if args.limit is not None else plans


def _user(args: argparse.Namespace) -> Any:
    if not args.simulate:
        return None
    if args.user_model:
        from ..generate import Generator, load_for_generation  # torch: loaded only when a local model is used

        if args.user_api_base or args.user_api_model:
            raise LimaError("the user model is either local (--user-model) or behind an API (--user-api-base)",
                            fix="give one of them")
        lm, fmt = load_for_generation(ModelConfig(name=args.user_model), TurnsConfig())
        gen = Generator(lm, fmt, Decoding(max_new_tokens=256, temperature=0.7, seed=1))
        return SimulatedUser(LocalChatClient(gen, args.user_model))
    if not (args.user_api_base and args.user_api_model):
        raise LimaError("a simulated user needs --user-model, or --user-api-base and --user-api-model",
                        fix="a local model folder or run checkpoint, or any OpenAI-compatible endpoint")
    from ..api import ChatClient  # httpx: loaded only when a model behind an API is asked
    return SimulatedUser(ChatClient(args.user_api_base, args.user_api_model, api_key_env=args.user_api_key_env,
                                    max_concurrency=args.concurrency))


def converse_local(model: str, recipe: Any, plans: list[Any], output: Path, label: str | None,
                   user: Any = None, batch_size: int | None = None) -> dict[str, int]:
    """Hold the planned conversations with a local model (a folder, a run checkpoint, or 'embedded')."""
    from ..generate import Generator, load_for_generation  # torch, as above

    lm, fmt = load_for_generation(ModelConfig(name=model, dtype=recipe.model.dtype, cache_dir=recipe.model.cache_dir,
                                              revision=recipe.model.revision), recipe.turns)
    gen = Generator(lm, fmt, Decoding.from_config(recipe.generate))
    assistant = LocalAssistant(gen, label or recipe.generate.model_label or (lm.adapter or lm.path))
    return converse(plans, assistant, output, user=user, batch_size=batch_size or recipe.generate.batch_size)


def cmd_converse(args: argparse.Namespace) -> int:
    plans, user = _plans(args), _user(args)
    extra = [f"model.name={args.model}"] if args.model else []
    recipe = load_recipe(args.recipe, extra + list(args.overrides or []))
    if args.api_base or args.api_model:
        from ..api import ChatClient  # httpx, as above

        if not (args.api_base and args.api_model) or args.model:
            raise LimaError("a model is either local (--model) or behind an API (--api-base with --api-model)",
                            fix="give --model alone, or --api-base and --api-model together")
        client = ChatClient(args.api_base, args.api_model, api_key_env=args.api_key_env,
                            max_concurrency=args.concurrency)
        assistant = ApiAssistant(client, Decoding.from_config(recipe.generate), args.label or args.api_model)
        summary = converse(plans, assistant, Path(args.output), user=user, batch_size=args.batch_size or 16)
    else:
        summary = converse_local(recipe.model.name, recipe, plans, Path(args.output), args.label, user,
                                 args.batch_size)
    print(json.dumps(summary))
    print(f"conversations: {args.output}")
    return 0


# ----------------------------------------------------------------- judging


def cmd_judge_turns(args: argparse.Namespace) -> int:
    convs = [c for p in args.conversations for c in read_conversations_file(p)]
    summary = judge_turns(convs, judges_from_args(args), args.output, instructions_path=args.instructions,
                          cache_path=args.cache, max_concurrency=args.concurrency)
    print(json.dumps(summary, indent=2))
    print(f"turn ratings: {args.output}")
    return 0


def cmd_judge_conversations(args: argparse.Namespace) -> int:
    summary = judge_conversations(read_conversations_file(args.a), read_conversations_file(args.b),
                                  judges_from_args(args), args.output, instructions_path=args.instructions,
                                  cache_path=args.cache,
                                  max_concurrency=args.concurrency, allow_partial=args.partial,
                                  sources=(args.a, args.b))
    print(json.dumps(summary, indent=2))
    print(f"conversation verdicts: {args.output}")
    return 0


def add_judge_commands(jd: Any) -> None:
    """`judge turns` and `judge conversations`, beside `judge pairwise` / `judge absolute`."""
    jt = jd.add_parser("turns", help="rate every assistant turn of conversations Fail / Pass / Excellent in context",
                       description="LIMA section 6: every assistant turn rated in context (the conversation before "
                       "it). Records are absolute judgments plus conversation_id and turn.")
    jt.add_argument("conversations", nargs="+", help="conversation JSONL files from `lima-align converse`")
    judge_options(jt, compares=False)
    jt.set_defaults(func=cmd_judge_turns)
    jc = jd.add_parser("conversations", help="which model held the whole conversation better, both orders",
                       description="Whole-conversation pairwise comparison of two models' conversations with the "
                       "same ids (scripted: the same user turns). Records are pairwise judgments with unit "
                       "'conversation'.")
    jc.add_argument("a", help="conversations JSONL of model A")
    jc.add_argument("b", help="conversations JSONL of model B")
    jc.add_argument("--partial", action="store_true", help="judge only the conversations both files hold")
    judge_options(jc)
    jc.set_defaults(func=cmd_judge_conversations)


# ----------------------------------------------------------------- the two-variant comparison


def planned_steps(recipe: Any) -> int:
    """Optimizer steps a recipe will take: epochs x batches of its training set (before length filters)."""
    from ..train import load_training_conversations  # torch: loaded only when a dialogue run is planned

    return recipe.train.epochs * math.ceil(len(load_training_conversations(recipe)) / recipe.train.batch_size)


def cmd_dialogue_train(args: argparse.Namespace) -> int:
    from ..train import train  # torch, as above

    if any(o.split("=", 1)[0].strip() == "train.output_dir" for o in args.overrides or []):
        raise LimaError("train.output_dir cannot be overridden here: the two variants would share a folder",
                        fix="use --runs DIR (each variant trains in DIR/<variant>)")
    recipes = {name: load_recipe(name, ([f"train.output_dir={Path(args.runs) / name}"] if args.runs else [])
                                 + list(args.overrides or [])) for name in VARIANTS}
    steps = {name: planned_steps(r) for name, r in recipes.items()}
    if max(steps.values()) > 1.2 * min(steps.values()):
        # The shipped recipes match their steps: at 10 vs 18 steps the dialogue variant's better turn
        # endings came from training longer, not from the dialogues (README, Multi-turn).
        print(f"note: the variants will take {' and '.join(f'{s} steps ({n})' for n, s in steps.items())}; a "
              "difference between them may then come from training length rather than the dialogues. Overrides "
              "apply to both recipes alike; to keep the steps matched, change train.epochs in one of them.",
              file=sys.stderr)
    for name, recipe in recipes.items():
        print(f"{name}: {train(recipe, restart=args.restart)}")
    return 0


def _final_checkpoint(variant: str, runs: str | None) -> str:
    run = Path(runs) / variant if runs else Path(load_recipe(variant).train.output_dir)
    return final_checkpoint(run, what=variant,
                            fix="train both first: `lima-align dialogue train`, or pass --models A B")


def cmd_dialogue_eval(args: argparse.Namespace) -> int:
    from .report import build  # the page's Jinja2 templates and charts (about 45 ms): loaded only for a report

    models = args.models or [_final_checkpoint(v, args.runs) for v in VARIANTS]
    labels = args.labels or (list(VARIANTS) if not args.models else [Path(m).name for m in models])
    if len(models) != 2 or len(labels) != 2 or labels[0] == labels[1]:
        raise LimaError("dialogue eval compares exactly two models with distinct labels",
                        fix="--models A B --labels NAME_A NAME_B")

    args.judge = args.judge or ["longest"]
    judges = judges_from_args(args)
    out = check_output_folder(args.output)
    recipe = load_recipe(args.recipe or VARIANTS[0], list(args.overrides or []))
    plans = load_scripts(args.script)
    plans = plans[: args.limit] if args.limit is not None else plans
    conv_files = []
    for model, label in zip(models, labels):
        f = out / f"conversations-{label}.jsonl"
        converse_local(model, recipe, plans, f, label)
        conv_files.append(f)
    ca, cb = (read_conversations_file(f) for f in conv_files)
    judged = []
    raters = [j for j in judges if can_rate(j)]
    if raters:
        judge_turns(ca + cb, raters, out / "turn-ratings.jsonl", cache_path=args.cache,
                    max_concurrency=args.concurrency)
        judged.append(out / "turn-ratings.jsonl")
    else:
        print("note: no judge here can rate single turns (the 'longest' baseline only compares); the report shows "
              "conversation verdicts only. For turn ratings add --judge api --api-base URL --api-model M, or have "
              f"people rate them: `lima-align annotate create-study --kind turns --conversations "
              f"{' '.join(str(f) for f in conv_files)} ...` (README, Multi-turn).")
    judge_conversations(cb, ca, judges, out / "conversation-verdicts.jsonl", cache_path=args.cache,
                        max_concurrency=args.concurrency, sources=(str(conv_files[1]), str(conv_files[0])))
    judged.append(out / "conversation-verdicts.jsonl")
    page = build(judged, out / "report", conversation_paths=conv_files,
                 title=f"Multi-turn dialogue: {labels[1]} vs {labels[0]}")
    print(f"report: {page}")
    return 0


def cmd_dialogue_report(args: argparse.Namespace) -> int:
    from .report import build  # Jinja2 and charts, as above

    if not args.files and not args.conversations:
        raise LimaError("nothing to report", fix="pass judgment files (`judge turns` / `judge conversations` / "
                        "an annotation export) and/or --conversations files from `lima-align converse`")
    page = build([Path(p) for p in args.files], check_output_folder(args.output),
                 conversation_paths=[Path(p) for p in args.conversations or []], title=args.title)
    print(f"report: {page}")
    return 0


def add_commands(sub: Any) -> None:
    c = sub.add_parser("converse", help="hold scripted or simulated multi-turn conversations with a model",
                       description="Hold whole conversations: scripted (user turns fixed: a JSONL file, "
                       "mt_bench:PATH, or dialogue_eval) or simulated (a user model plays a scenario). "
                       "Resumable: finished conversations are kept, a half-done one starts over.")
    c.add_argument("--model", help="local model: 'embedded', a folder or a run checkpoint (sets model.name)")
    c.add_argument("--recipe", help="recipe whose model/turns/generate sections to use")
    c.add_argument("--api-base", help="hold the conversations with a model behind an OpenAI-compatible API instead")
    c.add_argument("--api-model", help="model name to ask the API for")
    c.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key")
    c.add_argument("--script", help="scripted conversations: FILE, mt_bench:PATH or dialogue_eval (the default)")
    c.add_argument("--simulate", action="store_true", help="a user model plays the user from --scenarios")
    c.add_argument("--scenarios", help="JSONL of {\"id\", \"scenario\", \"opening\"?}, or dialogue_eval")
    c.add_argument("--turns", type=int, default=3, help="user turns per simulated conversation")
    c.add_argument("--user-model", help="a local user model: 'embedded', a folder or a run checkpoint")
    c.add_argument("--user-api-base", help="OpenAI-compatible base URL of the user model")
    c.add_argument("--user-api-model", help="user model name")
    c.add_argument("--user-api-key-env", default="OPENAI_API_KEY", help="environment variable holding its key")
    c.add_argument("--concurrency", type=int, default=8, help="API requests in flight at once")
    c.add_argument("--batch-size", type=int, help="conversations held in lockstep (default: generate.batch_size)")
    c.add_argument("--limit", type=int, help="hold only the first N conversations")
    c.add_argument("--label", help="model name written into each record (default: the model path)")
    c.add_argument("--output", required=True, help="conversations JSONL to append to (a rerun resumes)")
    add_overrides(c)
    c.set_defaults(func=cmd_converse)

    d = sub.add_parser("dialogue", help="train and compare single-turn vs +30-dialogue models (LIMA section 6)") \
        .add_subparsers(dest="sub", required=True)
    t = d.add_parser("train", help="train the shipped recipes single-turn and with-dialogues, one after the other",
                     description="Fine-tune the two variants (resumable; a finished one is skipped).")
    t.add_argument("--runs", help="folder for both runs (default: each recipe's train.output_dir)")
    t.add_argument("--restart", action="store_true", help="discard existing runs and train again")
    add_overrides(t)
    t.set_defaults(func=cmd_dialogue_train)
    e = d.add_parser("eval", help="hold scripted conversations with both variants, judge them, write the report",
                     description="Converse (scripted), judge every turn (API judges), judge whole conversations "
                     "(any judge, both orders) and write the Figure 7 report into --output.")
    e.add_argument("--models", nargs=2, metavar=("SINGLE_TURN", "WITH_DIALOGUES"),
                   help="the two models (default: the final checkpoints of `dialogue train`)")
    e.add_argument("--labels", nargs=2, help="names for the two models in records and report")
    e.add_argument("--runs", help="where `dialogue train --runs` put the runs")
    e.add_argument("--recipe", help="recipe for decoding (default: single-turn's generate section)")
    e.add_argument("--script", default="dialogue_eval", help="FILE, mt_bench:PATH or dialogue_eval")
    e.add_argument("--limit", type=int, help="only the first N conversations")
    e.add_argument("--output", default="runs/dialogue/eval", help="folder for conversations, judgments, report")
    judge_options(e, one_task=False)
    add_overrides(e)
    e.set_defaults(func=cmd_dialogue_eval)
    r = d.add_parser("report", help="the Figure 7 page from turn ratings and conversation verdicts")
    r.add_argument("files", nargs="*", help="judgments JSONL (turn ratings, conversation verdicts); none: only the "
                   "judge-free turn format of the --conversations")
    r.add_argument("--conversations", nargs="*", help="conversation files, to show whole transcripts")
    r.add_argument("--output", required=True, help="folder for dialogue.html, dialogue.json, charts/")
    r.add_argument("--title", default="lima-align dialogue evaluation")
    r.set_defaults(func=cmd_dialogue_report)
