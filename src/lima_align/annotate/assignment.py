"""Who gets which item next, and recording each annotator's vote on it exactly once.

The study kinds, their scales and choices, and Refused belong to studies.py; this module hands out a
study's items (at most k annotators each, never the same item twice to one person) and stores the votes.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from sqlalchemy import and_, bindparam, func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from . import db
from .studies import PAIRWISE_CHOICES, RATED, REVIEW_DECISIONS, SCALES, STALE_AFTER_S, Refused


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
