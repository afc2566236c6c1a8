"""Studies and their items, who gets which item next, and recording votes exactly once.

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
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import and_, bindparam, func, insert, select, update
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
STALE_AFTER_S = 3600  # an assignment left unvoted this long no longer holds the item's slot (see _assign)

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


# ----------------------------------------------------------------- assignment


def _voted(a: Any) -> Any:
    """EXISTS: the assignment's annotator has voted on its item (matches uq_vote's columns, so uses its index)."""
    v = db.votes
    return (select(v.c.id).where(v.c.study_id == a.c.study_id).where(v.c.item_id == a.c.item_id)
            .where(v.c.user_id == a.c.user_id).exists())


# The hot statements are built once, with bind parameters: building a select() costs more CPU than running it.
_A = db.assignments
_PENDING = (select(_A.c.item_id, _A.c.shown_order).where(_A.c.study_id == bindparam("sid"))
            .where(_A.c.user_id == bindparam("uid")).where(~_voted(_A)).order_by(_A.c.id).limit(1))
_PENDING_ITEM = (select(db.items.c.id, db.items.c.key, db.items.c.payload, _A.c.shown_order)
                 .join(db.items, db.items.c.id == _A.c.item_id).where(_A.c.study_id == bindparam("sid"))
                 .where(_A.c.user_id == bindparam("uid")).where(~_voted(_A)).order_by(_A.c.id).limit(1))
_ITEM = select(db.items.c.id, db.items.c.key, db.items.c.payload).where(db.items.c.id == bindparam("iid"))
_ASSIGNMENT = (select(_A.c.shown_order).where(_A.c.study_id == bindparam("sid"))
               .where(_A.c.item_id == bindparam("iid")).where(_A.c.user_id == bindparam("uid")))
_MINE = select(_A.c.id).where(and_(_A.c.item_id == db.items.c.id, _A.c.user_id == bindparam("uid"))).exists()
_PICK = (select(db.items.c.id).where(db.items.c.study_id == bindparam("sid")).where(~_MINE)
         .where(db.items.c.n_assigned < bindparam("k")).order_by(db.items.c.n_assigned, db.items.c.idx).limit(1))
_INSERT_ASSIGNMENT = insert(_A)
_BUMP = (update(db.items).where(db.items.c.id == bindparam("iid"))
         .values(n_assigned=db.items.c.n_assigned + 1))
_INSERT_VOTE = insert(db.votes)


def _pending(c: Connection, sid: int, uid: int) -> tuple[int, str] | None:
    """(item id, shown order) of the item assigned to this annotator and not yet voted on, if any."""
    row = c.execute(_PENDING, {"sid": sid, "uid": uid}).first()
    return (row[0], row[1]) if row else None


def _lock_study(c: Connection, sid: int) -> None:
    """Serialise assignment within a study: a row lock on PostgreSQL (SQLite's BEGIN IMMEDIATE already does,
    so there the statement is skipped: SQLite ignores FOR UPDATE)."""
    if c.dialect.name != "sqlite":
        c.execute(select(db.studies.c.id).where(db.studies.c.id == sid).with_for_update())


def _assign(c: Connection, study: dict[str, Any], uid: int) -> tuple[int, str] | None:
    """Give this annotator the least-covered item below k they have never had, in a random shown order.
    Call inside a write transaction after _lock_study, so two annotators never both take an item's last slot.

    When every item has its k annotators but some of them left an item unvoted for STALE_AFTER_S, that item
    is handed out once more: a closed browser tab must not keep an item short of votes forever. (If the
    first person comes back and votes after all, the item ends with k + 1 votes; all are kept.)"""
    a, it = db.assignments, db.items
    pick = c.execute(_PICK, {"sid": study["id"], "uid": uid, "k": study["overlap"]}).first()
    if pick is None:
        base = select(it.c.id).where(it.c.study_id == study["id"]).where(~_MINE)
        voted = _voted(a)
        live = (select(func.count()).select_from(a).where(a.c.item_id == it.c.id)
                .where(voted | (a.c.created > time.time() - STALE_AFTER_S)).scalar_subquery())
        pick = c.execute(base.where(live < study["overlap"]).order_by(it.c.idx).limit(1), {"uid": uid}).first()
    if pick is None:
        return None
    order = random.SystemRandom().choice(("ab", "ba")) if study["kind"] == "pairwise" else "ab"
    c.execute(_INSERT_ASSIGNMENT, {"study_id": study["id"], "item_id": pick[0], "user_id": uid,
                                   "shown_order": order, "created": time.time()})
    c.execute(_BUMP, {"iid": pick[0]})
    return pick[0], order


def pending_item(c: Connection, study: dict[str, Any], uid: int) -> dict[str, Any] | None:
    """The item assigned to this annotator and not yet voted on, read with the caller's connection."""
    row = c.execute(_PENDING_ITEM, {"sid": study["id"], "uid": uid}).first()
    return {"id": row[0], "key": row[1], "payload": json.loads(row[2]), "order": row[3]} if row else None


def next_item(engine: Engine, study: dict[str, Any], uid: int) -> dict[str, Any] | None:
    """The item this annotator should see now, assigning one if needed (None: nothing left for them).

    An item already assigned to them and not voted on comes back (a reload shows the same item). Usually
    record_vote has assigned it in the vote's own transaction, so this is one read that never waits for the
    write lock; only the first item of a session needs a write transaction here.
    """
    with db.read(engine) as c:
        item = pending_item(c, study, uid)
    if item is not None:
        return item
    with db.write(engine) as w:
        _lock_study(w, study["id"])
        pending = _pending(w, study["id"], uid) or _assign(w, study, uid)
        if pending is None:
            return None
        row = w.execute(_ITEM, {"iid": pending[0]}).one()
    return {"id": row[0], "key": row[1], "payload": json.loads(row[2]), "order": pending[1]}


# ----------------------------------------------------------------- voting


def _value(study: dict[str, Any], order: str, choice: str) -> str:
    """The stored value of a pressed button, in original terms; Refused for anything not on the page."""
    kind = study["kind"]
    if kind == "pairwise":
        if choice not in PAIRWISE_CHOICES:
            raise Refused(400, f"Unknown choice {choice!r}.")
        if choice == "neither":
            return "tie"
        first, second = ("a", "b") if order == "ab" else ("b", "a")
        return first if choice == "A" else second
    if kind in RATED:
        if choice not in SCALES[study["config"]["scale"]]:
            raise Refused(400, f"Unknown rating {choice!r}.")
        return choice
    if choice not in REVIEW_DECISIONS:
        raise Refused(400, f"Unknown decision {choice!r}.")
    return choice


def record_vote(engine: Engine, study: dict[str, Any], uid: int, item_id: int, choice: str, comment: str = "",
                edited: dict[str, Any] | None = None) -> None:
    """Store one vote, committed before returning. Refused(403) when the item is not assigned to this
    annotator, Refused(409) when they already voted (the unique constraint decides under races).

    The same transaction assigns their next item, so one commit (one fsync) covers the vote and the
    assignment, and the page that follows only reads."""
    with db.write(engine) as c:
        _lock_study(c, study["id"])
        asg = c.execute(_ASSIGNMENT, {"sid": study["id"], "iid": item_id, "uid": uid}).first()
        if asg is None:
            raise Refused(403, "This item is not assigned to you.")
        value = _value(study, asg[0], choice)
        if study["kind"] == "review" and (value == "edit") != (edited is not None):
            raise Refused(400, "An edit needs the edited text (and only an edit has one).")
        try:  # no savepoint needed: a refused vote ends (rolls back) the whole transaction
            c.execute(_INSERT_VOTE, {"study_id": study["id"], "item_id": item_id, "user_id": uid,
                                     "shown_order": asg[0], "raw": choice, "value": value,
                                     "comment": comment.strip(),
                                     "edited": db.dumps(edited) if edited is not None else None,
                                     "created": time.time()})
        except IntegrityError:
            raise Refused(409, "You have already voted on this item; your first vote stands.") from None
        if study["kind"] != "dialogue" and _pending(c, study["id"], uid) is None:
            _assign(c, study, uid)


# ----------------------------------------------------------------- dialogue


def conversation(c: Connection, cid: str, uid: int) -> dict[str, Any]:
    row = c.execute(select(db.conversations).where(db.conversations.c.id == cid)).mappings().first()
    if row is None or row["user_id"] != uid:
        raise Refused(404, "There is no such conversation of yours.")
    return {**row, "messages": json.loads(row["messages"])}


def latest_conversation(engine: Engine, sid: int, uid: int) -> dict[str, Any] | None:
    cv = db.conversations
    with db.read(engine) as c:
        row = c.execute(select(cv.c.id).where(cv.c.study_id == sid).where(cv.c.user_id == uid)
                        .order_by(cv.c.created.desc(), cv.c.id).limit(1)).first()
        return conversation(c, row[0], uid) if row else None


def new_conversation(engine: Engine, sid: int, uid: int) -> str:
    cid = uuid.uuid4().hex
    now = time.time()
    with db.write(engine) as c:
        c.execute(insert(db.conversations).values(id=cid, study_id=sid, user_id=uid, messages="[]", created=now,
                                                  updated=now))
    return cid


def append_turns(engine: Engine, cid: str, uid: int, turns: list[dict[str, str]]) -> None:
    with db.write(engine) as c:
        conv = conversation(c, cid, uid)
        c.execute(update(db.conversations).where(db.conversations.c.id == cid)
                  .values(messages=db.dumps(conv["messages"] + turns), updated=time.time()))


def rate_turn(engine: Engine, cid: str, uid: int, turn: int, score: str) -> None:
    if score not in SCALES["fail_pass_excellent"]:
        raise Refused(400, f"Unknown rating {score!r}.")
    with db.write(engine) as c:
        conv = conversation(c, cid, uid)
        n_assistant = sum(m["role"] == "assistant" for m in conv["messages"])
        if not 1 <= turn <= n_assistant:
            raise Refused(400, f"The conversation has no assistant turn {turn}.")
        try:
            with c.begin_nested():
                c.execute(insert(db.turn_ratings).values(conversation_id=cid, turn=turn, user_id=uid, score=score,
                                                         created=time.time()))
        except IntegrityError:
            raise Refused(409, "You have already rated this turn.") from None


def turn_scores(engine: Engine, cid: str) -> dict[int, str]:
    with db.read(engine) as c:
        rows = c.execute(select(db.turn_ratings.c.turn, db.turn_ratings.c.score)
                         .where(db.turn_ratings.c.conversation_id == cid)).all()
    return {t: s for t, s in rows}


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
