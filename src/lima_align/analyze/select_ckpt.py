"""`lima-align select`: choose a run's checkpoint by judging its answers, not by perplexity.

LIMA picked between epochs 5 and 10 by reading answers, because dev perplexity kept rising while
answers got better. For every saved checkpoint of a run this answers the dev prompts (resumable),
judges each checkpoint against a reference checkpoint (pairwise, both orders) or on an absolute
scale, with 95% bootstrap intervals over prompts, computes perplexity on held-out examples with
answers (teacher-forced, assistant tokens only), names the best, and writes:

    <output>/answers/epoch-NN.jsonl  judgments.jsonl  perplexity.json  select.json  select.html  charts/
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checkpoint import epoch_of, list_checkpoints, require_meta
from ..config import GenerateConfig, ModelConfig, Recipe, load_recipe
from ..errors import LimaError
from ..html_parts import fragment, render_page
from ..jsonl import write_text_atomic
from ..records import Conversation
from .ablate import JudgeSettings, check_judge, make_judge, read_records, score_records
from .grid_report import Y_LABELS, format_score, score_chart


@dataclass
class SelectSettings:
    output: str
    prompts: str = "seed:dev"
    limit: int | None = None
    max_new_tokens: int = 512
    reference: str | None = None  # a checkpoint name (epoch-NN); default the first saved
    judge: JudgeSettings = dataclasses.field(default_factory=JudgeSettings)
    ppl_data: str = "heldout"  # examples with answers, or 'heldout': the run's data it did not train on
    ppl_limit: int = 20


def perplexity_examples(recipe: Recipe, spec: str, limit: int, fmt: Any) -> list[Conversation]:
    """The examples perplexity is measured on: a dataset with answers, or the run's own sources minus
    every example it trained on (re-derived with the run's recipe, so the same filters and sample).
    None held out (a run on its whole file, as LIMA's own) gives no examples: perplexity is the
    secondary criterion here, so selection goes on by judging alone."""
    from ..dataset_specs import load_dataset
    from ..train import load_training_conversations, prepare_data

    if spec != "heldout":
        convs = load_dataset(spec, purpose="train")
    else:
        convs = load_training_conversations(recipe)
        trained = set(prepare_data(recipe, fmt, convs).ids)
        convs = [c for c in convs if c.id not in trained]
    return convs[:limit]


def perplexity(lm: Any, fmt: Any, convs: list[Conversation], *, max_len: int, loss_on: str = "assistant",
               chunk_elems: int = 1 << 26) -> dict[str, Any]:
    """Mean teacher-forced loss over the trained (assistant) tokens, and its exp."""
    import torch

    from ..loss import decoder, output_layer
    from ..turns import IGNORE

    model = lm.model.eval()
    head = output_layer(model)
    softcap = getattr(model.config, "final_logit_softcapping", None)
    vocab = head.weight.shape[0]
    chunk = max(1, chunk_elems // vocab)
    total, tokens = 0.0, 0
    with torch.no_grad():
        for c in convs:
            e = fmt.encode(c, loss_on)
            ids, labels = e.input_ids[:max_len], e.labels[:max_len]
            tgt = torch.tensor(labels[1:], device=model.device)
            sel = tgt != IGNORE
            if not bool(sel.any()):
                continue
            x = torch.tensor([ids], device=model.device)
            hidden = decoder(model)(input_ids=x, use_cache=False).last_hidden_state[0, :-1][sel]
            t = tgt[sel]
            for s in range(0, hidden.shape[0], chunk):  # never the whole (positions x vocabulary) logits
                logits = head(hidden[s:s + chunk]).float()
                if softcap:
                    logits = torch.tanh(logits / softcap) * softcap
                total += torch.nn.functional.cross_entropy(logits, t[s:s + chunk], reduction="sum").item()
            tokens += int(sel.sum())
    loss = total / tokens if tokens else None
    return {"loss": loss, "perplexity": math.exp(loss) if loss is not None else None, "tokens": tokens,
            "examples": len(convs)}


def _checkpoint_format(ckpt: Path) -> Any:
    """The turn format a checkpoint was trained with, from its own tokenizer (no weights loaded)."""
    from ..models import load_tokenizer
    from ..turns import TurnFormat

    return TurnFormat(load_tokenizer(str(ckpt)), require_meta(ckpt).turns, for_training=False)


def _data_key(convs: list[Conversation], max_len: int) -> str:
    blob = json.dumps([c.to_dict() for c in convs] + [max_len], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def select_checkpoint(run_dir: str | Path, s: SelectSettings, *, log: Any = print) -> Path:
    """Answer, judge and measure every checkpoint of a run; returns the output folder (select.json inside)."""
    from tqdm.auto import tqdm

    from ..generate import generate_file, load_for_generation
    from ..judge import judge_absolute, judge_pairwise
    from ..records import read_generations

    run = Path(run_dir)
    ckpts = list_checkpoints(run)
    if not ckpts:
        raise LimaError(f"no saved checkpoints in {run / 'checkpoints'}", where=str(run),
                        fix="give a train run folder; train.save_from_epoch / save_to_epoch choose what is saved")
    if not (run / "recipe.yaml").exists():
        raise LimaError(f"{run} has no recipe.yaml", where=str(run), fix="give the folder `lima-align train` wrote")
    recipe = load_recipe(run / "recipe.yaml")
    names = [c.name for c in ckpts]
    ref = s.reference or names[0]
    if s.judge.mode == "pairwise" and ref not in names:
        raise LimaError(f"reference checkpoint {ref!r} is not in the run", where="--reference",
                        fix=f"use one of {', '.join(names)}")
    if s.judge.mode == "pairwise" and len(ckpts) < 2:
        raise LimaError("pairwise selection needs at least two checkpoints", where=str(run),
                        fix="save more epochs (train.save_from_epoch / save_to_epoch), or judge absolute")
    check_judge(s.judge)
    out = Path(s.output)
    (out / "answers").mkdir(parents=True, exist_ok=True)
    g: GenerateConfig = dataclasses.replace(recipe.generate, prompts=s.prompts, limit=s.limit,
                                            max_new_tokens=s.max_new_tokens)
    max_len = recipe.data.max_seq_len
    ppl_convs = perplexity_examples(recipe, s.ppl_data, s.ppl_limit, _checkpoint_format(ckpts[0]))
    data_key = _data_key(ppl_convs, max_len)
    ppl_path = out / "perplexity.json"
    ppl: dict[str, Any] = json.loads(ppl_path.read_text()) if ppl_path.exists() else {}
    if ppl.get("_data_key") != data_key:  # other examples than last time: measure again
        ppl = {"_data_key": data_key, "_data": s.ppl_data, "_examples": len(ppl_convs)}
    if not ppl_convs:
        log("select: perplexity skipped: the run trained on every example of its data, so none is held out "
            "(pass --ppl-data FILE with examples the run did not train on to measure it); choosing by judging alone")
        ppl = {"_data": None}
    from ..dataset_specs import load_dataset

    wanted = {c.id for c in load_dataset(s.prompts, purpose="prompt")[: s.limit]}  # a rerun may ask fewer
    gens: dict[str, list[dict[str, Any]]] = {}
    for ck in tqdm(ckpts, desc="checkpoints", unit="ckpt", dynamic_ncols=True):
        answers = out / "answers" / f"{ck.name}.jsonl"
        model_cfg = ModelConfig(name=str(ck), dtype=recipe.model.dtype, cache_dir=recipe.model.cache_dir)
        lm_fmt = None
        if ppl_convs and ck.name not in ppl:  # one load serves both perplexity and answers
            lm_fmt = load_for_generation(model_cfg, recipe.turns)
            ppl[ck.name] = perplexity(lm_fmt[0], lm_fmt[1], ppl_convs, max_len=max_len, loss_on=recipe.data.loss_on)
            write_text_atomic(ppl_path, json.dumps(ppl, indent=2))
        generate_file(model_cfg, recipe.turns, dataclasses.replace(g, output=str(answers), model_label=ck.name),
                      lm_fmt=lm_fmt, log=log)
        del lm_fmt
        gc.collect()
        gens[ck.name] = [x for x in read_generations(answers) if x["prompt_id"] in wanted]

    judgments = out / "judgments.jsonl"
    cache = s.judge.cache or str(out / "judge_cache.sqlite")
    judge_name = ""
    if s.judge.mode == "pairwise":
        for name in names:
            if name != ref:
                judge = make_judge(s.judge)
                judge_name = judge.name
                judge_pairwise(gens[name], gens[ref], [judge], judgments, cache_path=cache, allow_partial=True,
                               max_concurrency=s.judge.concurrency, sources=(name, ref), progress=False, log=log)
    else:
        judge = make_judge(s.judge)
        judge_name = judge.name
        judge_absolute([x for n in names for x in gens[n]], [judge], judgments, scale=s.judge.scale,
                       cache_path=cache, max_concurrency=s.judge.concurrency, progress=False, log=log)
    records = read_records(judgments)
    rows = []
    for ck in ckpts:
        ids = {x["prompt_id"] for x in gens[ck.name]}
        if s.judge.mode == "pairwise" and ck.name == ref:
            score = {"metric": "preference score vs reference", "value": 0.5, "ci": [0.5, 0.5], "n": len(ids),
                     "reference": True}  # the reference against itself: no preference, by definition
        else:
            score = score_records(records, ck.name, judge_name, s.judge.mode, prompt_ids=ids,
                                  n_boot=s.judge.n_boot, reference=ref if s.judge.mode == "pairwise" else None)
        p = ppl.get(ck.name, {})
        rows.append({"checkpoint": ck.name, "path": str(ck), "epoch": epoch_of(ck), "dev_loss": p.get("loss"),
                     "dev_perplexity": p.get("perplexity"), "score": score,
                     "ended_their_turn": sum(x["finish_reason"] == "eot" for x in gens[ck.name]),
                     "answers": len(gens[ck.name])})
    # Best: the highest judged score; a tie goes to the earlier checkpoint (less training, same quality).
    best = max(rows, key=lambda r: (r["score"]["value"] if r["score"]["value"] is not None else -math.inf,
                                    -r["epoch"]))
    low_ppl = min((r for r in rows if r["dev_perplexity"] is not None), key=lambda r: r["dev_perplexity"],
                  default=None)
    result = {"run": str(run), "prompts": s.prompts, "judge": judge_name, "mode": s.judge.mode,
              "scale": s.judge.scale if s.judge.mode == "absolute" else None,
              "reference": ref if s.judge.mode == "pairwise" else None, "perplexity_data": ppl.get("_data"),
              "checkpoints": rows, "best": best["checkpoint"], "best_path": best["path"],
              "lowest_perplexity": low_ppl["checkpoint"] if low_ppl else None, "created": round(time.time(), 3)}
    write_text_atomic(out / "select.json", json.dumps(result, indent=2))
    write_select_page(result, out)
    log(format_table(result))
    return out


def format_table(result: dict[str, Any]) -> str:
    lines = [f"{'checkpoint':<12} {'dev ppl':>9}  judged score [95% CI]"]
    for r in result["checkpoints"]:
        p = "-" if r["dev_perplexity"] is None else f"{r['dev_perplexity']:.2f}"
        mark = "  <- best" if r["checkpoint"] == result["best"] else ""
        lines.append(f"{r['checkpoint']:<12} {p:>9}  {format_score(r['score'])}{mark}")
    lines.append(f"best by judging: {result['best']} ({result['best_path']}); "
                 f"lowest dev perplexity: {result['lowest_perplexity']}")
    return "\n".join(lines)


def write_select_page(result: dict[str, Any], out: Path) -> Path:
    """out/select.html (templates/select.html): a row per checkpoint, the judged-quality and perplexity charts."""
    rows = result["checkpoints"]
    y_label = Y_LABELS["pairwise" if result["mode"] == "pairwise" else result["scale"]]
    quality = score_chart({"": [(r["epoch"], r["score"]) for r in rows]}, "epoch", y_label,
                          out / "charts" / "judged.png", title="Judged quality per epoch, 95% intervals",
                          midline=0.5 if result["mode"] == "pairwise" else None)
    ppl_pts = [(r["epoch"], {"value": r["dev_perplexity"], "ci": [None, None]}) for r in rows]
    ppl_chart = score_chart({"": ppl_pts}, "epoch", "dev perplexity", out / "charts" / "perplexity.png",
                            title="Dev perplexity per epoch")
    best = result["best"]
    table = [[fragment("{} <b>best</b>", r["checkpoint"]) if r["checkpoint"] == best else r["checkpoint"], r["epoch"],
              "-" if r["dev_loss"] is None else f"{r['dev_loss']:.4f}",
              "-" if r["dev_perplexity"] is None else f"{r['dev_perplexity']:.2f}", format_score(r["score"]),
              f"{r['ended_their_turn']}/{r['answers']}"] for r in rows]
    page = render_page("select.html", title="lima-align checkpoint selection", heading="Checkpoint selection",
                       rows=table, quality=quality, ppl_chart=ppl_chart,
                       **{k: result[k] for k in ("run", "judge", "mode", "reference", "prompts", "perplexity_data",
                                                 "best", "lowest_perplexity")})
    return write_text_atomic(out / "select.html", page)
