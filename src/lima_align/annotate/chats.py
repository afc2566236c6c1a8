"""Dialogue studies: an annotator's conversations with the served model and their ratings of its turns."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from . import db
from .studies import SCALES, Refused

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
