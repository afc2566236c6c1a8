"""Studies: their kinds, scales and guidelines, creating a study with its items, members, and progress.

Who gets which item next and the votes are in assignment.py; dialogue studies' conversations in chats.py.

Kinds of study (one Literal, explicit branches):
- pairwise: a prompt and two answers (two generation files joined on prompt_id), shown in an order drawn
  per annotator and item; the vote is stored both as pressed ("A") and in original terms ("a").
  Several B files compare model A with each B in one study, the pairs' items interleaved (as for turns).
- absolute: one answer rated on the fail/pass/excellent or the 1-6 helpfulness scale; several generation
  files (one model each) are rated in one study, blind, their answers interleaved in a seeded shuffle.
- review: one candidate training record; accept, reject, or edit (the edit kept beside the original).
- dialogue: no fixed items; annotators chat with a served model and rate each of its turns.
- turns: recorded conversations (`lima-align converse` files, any number of models) rated turn by turn,
  each assistant turn in context, on fail/pass/excellent; which model spoke is never shown, and the
  conversations of all models are interleaved in a seeded shuffle (a conversation's turns stay in order).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import bindparam, func, insert, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from ..errors import LimaError
from ..records import read_conversations, read_generations
from ..verdicts import SCALES as RATING_SCALES
from . import db

Kind = Literal["pairwise", "absolute", "review", "dialogue", "turns"]
KINDS = ("pairwise", "absolute", "review", "dialogue", "turns")
RATED = ("absolute", "turns")  # kinds whose vote is a rating on the study's scale
SCALES = {name: tuple(map(str, values)) for name, values in RATING_SCALES.items()}  # as a form posts them: text
PAIRWISE_CHOICES = {"A": "A is significantly better", "B": "B is significantly better",
                    "neither": "Neither is significantly better"}
REVIEW_DECISIONS = ("accept", "reject", "edit")
MAX_OVERLAP = 1000  # annotators per item
STALE_AFTER_S = 3600  # an assignment left unvoted this long no longer holds the item's slot (see assignment._assign)

GUIDELINES = {
    "pairwise": "Read the prompt and both answers. Pick the answer that is significantly better for the person "
                "who asked; if neither stands clearly above the other, choose 'neither'.",
    "absolute": "Rate the answer. Fail: it does not do what was asked. Pass: it is acceptable, perhaps with small "
                "flaws. Excellent: you could not ask for a better answer.",
    "review": "Would this example teach a model to answer well? Accept it as it is, reject it, or edit it into "
              "an example worth training on.",
    "dialogue": "Talk with the model as a user would. After each of its answers, rate that answer: fail, pass or "
                "excellent.",
    "turns": "Read the conversation so far, then rate the assistant's latest answer as a reply to the user at "
             "that point. Fail: it does not do what the user asked, contradicts itself or the conversation, "
             "speaks for the user, or breaks off. Pass: acceptable, perhaps with small flaws. Excellent: you "
             "could not ask for a better reply.",
}


class Refused(Exception):
    """A request the user may not make; `status` is the HTTP status the web layer answers with."""

    def __init__(self, status: int, what: str):
        self.status, self.what = status, what
        super().__init__(what)


# ----------------------------------------------------------------- creating studies


def _one_model(path: Path, gens: list[dict[str, Any]]) -> str:
    """The model of a generations file: refused when the file is empty or mixes models."""
    if not gens:
        raise LimaError("the generations file is empty", where=str(path),
                        fix="generate answers first with `lima-align generate`")
    models = sorted({g["model"] for g in gens})
    if len(models) > 1:
        raise LimaError(f"the file mixes models {models}", where=str(path),
                        fix="pass one generations file per model (split the file by its \"model\" field)")
    return models[0]


def _distinct(paths: list[Path], models: list[str]) -> None:
    """Refuse two files of the same model (the label is the generations' "model" field)."""
    seen: dict[str, Path] = {}
    for path, model in zip(paths, models, strict=True):
        if model in seen:
            raise LimaError(f"{seen[model]} and this file both come from model {model!r}", where=str(path),
                            fix="pass each model's generations once, one file per model (the label is the "
                                "generations' \"model\" field)")
        seen[model] = path


def _pairwise_items(a_path: Path, b_paths: list[Path], seed: int
                    ) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Any]]:
    """Model A against each model B, joined on prompt_id.

    One B: keys are prompt ids and the models live in the study's config (the format of every older study).
    Several Bs: keys name the pair by its position ("p0:PROMPT_ID" for A vs the first B), the items of all
    pairs are interleaved in a shuffle fixed by `seed`, and the pair's model names travel in the payload,
    which pages never show (as in _turn_items)."""
    gens_a = read_generations(a_path)
    model_a = _one_model(a_path, gens_a)
    ids_a = [g["prompt_id"] for g in gens_a]
    pairs = []
    for b_path in b_paths:
        gens_b = read_generations(b_path)
        model_b = _one_model(b_path, gens_b)
        if model_b == model_a:
            raise LimaError(f"both files come from model {model_a!r}", where=str(b_path),
                            fix="compare two different models (the label is the generations' \"model\" field)")
        by_b = {g["prompt_id"]: g for g in gens_b}
        missing = sorted(set(ids_a) ^ set(by_b))
        if missing:
            raise LimaError(f"{len(missing)} prompt ids are in only one of this file and {a_path} "
                            f"(e.g. {missing[:3]})", where=str(b_path),
                            fix="generate every file from the same prompt set")
        pairs.append((model_b, by_b))
    _distinct(b_paths, [m for m, _ in pairs])
    if len(pairs) == 1:
        (model_b, by_b), = pairs
        return ([(ga["prompt_id"], {"prompt": ga["messages"], "output_a": ga["output"],
                                    "output_b": by_b[ga["prompt_id"]]["output"]}) for ga in gens_a],
                {"model_a": model_a, "model_b": model_b})
    out = []
    for j, (model_b, by_b) in enumerate(pairs):
        for ga in gens_a:
            pid = ga["prompt_id"]
            out.append((f"p{j}:{pid}", {"prompt": ga["messages"], "output_a": ga["output"],
                                        "output_b": by_b[pid]["output"], "prompt_id": pid,
                                        "model_a": model_a, "model_b": model_b}))
    random.Random(seed).shuffle(out)
    return out, {"model_a": model_a, "models_b": [m for m, _ in pairs], "seed": seed}


def _absolute_items(paths: list[Path], seed: int) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Any]]:
    """Every answer of every model, rated on its own.

    One file: keys are prompt ids and the model lives in the study's config (the format of every older
    study). Several files (one model each): keys name the model by its file's position ("m0:PROMPT_ID"),
    the answers of all models are interleaved in a shuffle fixed by `seed`, and the model's name travels in
    the payload, which pages never show (as in _turn_items)."""
    files = [read_generations(p) for p in paths]
    models = [_one_model(p, gens) for p, gens in zip(paths, files, strict=True)]
    if len(paths) == 1:
        return [(g["prompt_id"], {"prompt": g["messages"], "output": g["output"]}) for g in files[0]], \
            {"model": models[0]}
    _distinct(paths, models)
    out = [(f"m{i}:{g['prompt_id']}", {"prompt": g["messages"], "output": g["output"], "model": model,
                                       "prompt_id": g["prompt_id"]})
           for i, (model, gens) in enumerate(zip(models, files, strict=True)) for g in gens]
    random.Random(seed).shuffle(out)
    return out, {"models": models, "seed": seed}


def _turn_items(paths: list[Path], seed: int) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Any]]:
    """One item per assistant turn of every conversation: the messages before it and the turn itself.

    Keys name the model by its position among the study's models ("m0", "m1", ...), not by name, so a key
    seen in a URL or form gives nothing away; the name travels in the payload, which pages never show."""
    from ..dialogue.conversations import read_conversations_file
    from ..dialogue.judging import turn_id, turn_items

    convs = [c for p in paths for c in read_conversations_file(p)]
    models = sorted({c["model"] for c in convs})
    seen: dict[tuple[str, str], str] = {}
    for c in convs:
        key = (c["model"], c["conversation_id"])
        if key in seen:
            where = seen[key]
            raise LimaError(f"conversation {c['conversation_id']!r} of model {c['model']!r} appears twice "
                            f"(also at {where})", where=c["_where"], fix="pass each model's conversations once")
        seen[key] = c["_where"]
    # Interleave models: sort for a stable starting point, then shuffle whole conversations with the seed.
    convs.sort(key=lambda c: (c["conversation_id"], c["model"]))
    random.Random(seed).shuffle(convs)
    out = []
    for c in convs:
        m = models.index(c["model"])
        cid = c["conversation_id"]
        for turn, it in enumerate(turn_items([c]), 1):  # turn_items yields turns 1, 2, ... in order
            out.append((f"m{m}:{turn_id(cid, turn)}", {"prompt": it["messages"], "output": it["output"],
                                                       "model": c["model"], "conversation_id": cid,
                                                       "turn": turn}))
    return out, {"models": models, "seed": seed}


def _review_items(path: Path) -> list[tuple[str, dict[str, Any]]]:
    return [(c.id, {"record": c.to_dict()}) for c in read_conversations(path, purpose="train")]


def _paths(x: Path | str | Sequence[Path | str] | None) -> list[Path]:
    if x is None:
        return []
    return [Path(x)] if isinstance(x, (str, Path)) else [Path(p) for p in x]


def create_study(engine: Engine, name: str, kind: Kind, *, overlap: int = 1,
                 a: Path | Sequence[Path] | None = None, b: Path | Sequence[Path] | None = None,
                 dataset: Path | None = None, scale: str = "fail_pass_excellent",
                 chat_url: str | None = None, chat_model: str | None = None, max_tokens: int = 512,
                 temperature: float = 0.7, guidelines: str | None = None,
                 conversations: list[Path] | None = None, seed: int = 0) -> int:
    """Read the input files, check them, and store the study with its items (all in one transaction).

    absolute: `a` is one generations file or several (one model each); pairwise: `a` is one file (model A)
    and `b` one or several (A is compared with each); `seed` fixes the order of multi-model items."""
    if kind not in KINDS:
        raise LimaError(f"unknown study kind {kind!r}", fix=f"use one of {', '.join(KINDS)}")
    if not 1 <= overlap <= MAX_OVERLAP:  # (the upper bound also keeps the number inside a database integer)
        raise LimaError(f"--overlap must be 1 to {MAX_OVERLAP}, got {overlap}",
                        fix="use 3 for agreement between people")
    if scale not in SCALES:
        raise LimaError(f"unknown scale {scale!r}", fix=f"use one of {', '.join(SCALES)}")
    config: dict[str, Any] = {"guidelines": guidelines or GUIDELINES[kind]}
    rows: list[tuple[str, dict[str, Any]]] = []
    a_paths, b_paths = _paths(a), _paths(b)
    if kind == "pairwise":
        if not a_paths or not b_paths:
            raise LimaError("a pairwise study needs two generation files",
                            fix="pass --a A.jsonl --b B.jsonl [B2.jsonl ...]")
        if len(a_paths) > 1:
            raise LimaError(f"a pairwise study compares one model A with each model B, got {len(a_paths)} A files",
                            where=", ".join(map(str, a_paths)),
                            fix="pass one --a file and the others after --b (A is compared with each of them)")
        rows, models = _pairwise_items(a_paths[0], b_paths, seed)
        config.update(models)
    elif kind == "absolute":
        if not a_paths:
            raise LimaError("an absolute study needs a generations file",
                            fix="pass --a GENERATIONS.jsonl [MORE.jsonl ...] (one file per model)")
        rows, models = _absolute_items(a_paths, seed)
        config.update(models, scale=scale)
    elif kind == "turns":
        if not conversations:
            raise LimaError("a turns study needs conversation files",
                            fix="pass --conversations A.jsonl [B.jsonl ...] (written by `lima-align converse`)")
        if scale != "fail_pass_excellent":
            raise LimaError(f"turns are rated fail/pass/excellent (LIMA section 6), not {scale!r}",
                            fix="leave --scale out")
        rows, models = _turn_items(conversations, seed)
        config.update(models, scale=scale)
    elif kind == "review":
        if dataset is None:
            raise LimaError("a review study needs a dataset file", fix="pass --dataset CANDIDATES.jsonl")
        rows = _review_items(dataset)
    else:
        if not chat_url or not chat_model:
            raise LimaError("a dialogue study needs the model's endpoint",
                            fix="pass --chat-url http://host:port/v1 --chat-model NAME")
        config.update(chat_url=chat_url, model=chat_model, max_tokens=max_tokens, temperature=temperature,
                      scale="fail_pass_excellent")
    try:
        with db.write(engine) as c:
            sid = c.execute(insert(db.studies).values(name=name, kind=kind, overlap=overlap, config=db.dumps(config),
                                                      created=time.time())).inserted_primary_key[0]
            if rows:
                c.execute(insert(db.items), [{"study_id": sid, "idx": i, "key": key, "payload": db.dumps(p),
                                              "n_assigned": 0} for i, (key, p) in enumerate(rows)])
    except IntegrityError:
        raise LimaError(f"a study named {name!r} already exists (or an input repeats a prompt id)",
                        fix="pick another --name, or make the ids unique") from None
    return sid


_STUDY_BY_ID = select(db.studies).where(db.studies.c.id == bindparam("sid"))
_MEMBER = (select(db.members.c.user_id).where(db.members.c.study_id == bindparam("sid"))
           .where(db.members.c.user_id == bindparam("uid")))


def get_study(c: Connection, *, name: str | None = None, sid: int | None = None) -> dict[str, Any]:
    if name is not None:
        row = c.execute(select(db.studies).where(db.studies.c.name == name)).mappings().first()
    else:
        row = c.execute(_STUDY_BY_ID, {"sid": sid}).mappings().first()
    if row is None:
        if name is not None:
            raise LimaError(f"no study named {name!r}", fix="list studies with `lima-align annotate progress`")
        raise Refused(404, "There is no such study.")
    return {**row, "config": json.loads(row["config"])}


def is_member(c: Connection, sid: int, uid: int) -> bool:
    return c.execute(_MEMBER, {"sid": sid, "uid": uid}).first() is not None


def add_member(engine: Engine, sid: int, uid: int) -> None:
    with db.write(engine) as c:
        if not is_member(c, sid, uid):
            c.execute(insert(db.members).values(study_id=sid, user_id=uid))


# ----------------------------------------------------------------- progress


def progress(engine: Engine) -> list[dict[str, Any]]:
    """Per study: items, target votes (items x k), votes so far, and votes per annotator."""
    out = []
    with db.read(engine) as c:
        for s in c.execute(select(db.studies).order_by(db.studies.c.id)).mappings():
            n_items = c.execute(select(func.count()).select_from(db.items).where(db.items.c.study_id == s["id"])
                                ).scalar_one()
            if s["kind"] == "dialogue":
                q = (select(db.users.c.username, func.count()).select_from(db.turn_ratings)
                     .join(db.conversations, db.conversations.c.id == db.turn_ratings.c.conversation_id)
                     .join(db.users, db.users.c.id == db.turn_ratings.c.user_id)
                     .where(db.conversations.c.study_id == s["id"]).group_by(db.users.c.username))
            else:
                q = (select(db.users.c.username, func.count()).select_from(db.votes)
                     .join(db.users, db.users.c.id == db.votes.c.user_id)
                     .where(db.votes.c.study_id == s["id"]).group_by(db.users.c.username))
            per_user = {u: n for u, n in c.execute(q).all()}
            out.append({"id": s["id"], "name": s["name"], "kind": s["kind"], "overlap": s["overlap"],
                        "n_items": n_items, "target": n_items * s["overlap"], "votes": sum(per_user.values()),
                        "annotators": dict(sorted(per_user.items()))})
    return out


def studies_of(engine: Engine, uid: int) -> list[dict[str, Any]]:
    """The studies this annotator is a member of, with their own count of votes and what is left for them."""
    with db.read(engine) as c:
        rows = c.execute(select(db.studies).join(db.members, db.members.c.study_id == db.studies.c.id)
                         .where(db.members.c.user_id == uid).order_by(db.studies.c.id)).mappings().all()
        out = []
        for s in rows:
            mine = c.execute(select(func.count()).select_from(db.votes).where(db.votes.c.study_id == s["id"])
                             .where(db.votes.c.user_id == uid)).scalar_one()
            out.append({"id": s["id"], "name": s["name"], "kind": s["kind"], "done": mine})
    return out
