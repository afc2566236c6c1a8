"""People: admin and annotator accounts, argon2id password hashes, one-time invitation links."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from typing import Any, Literal

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from ..errors import LimaError
from . import db, sessions

Role = Literal["admin", "annotator"]
USERNAME = re.compile(r"^[A-Za-z0-9_.-]{2,64}$")
MIN_PASSWORD = 8


def _hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()  # argon2id with the library's current recommended cost


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def check_username(username: str) -> None:
    if not USERNAME.match(username):
        raise LimaError(f"username {username!r} is not allowed",
                        fix="use 2-64 letters, digits, '.', '_' or '-' (it appears in exports as human:<name>)")


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise LimaError(f"the password is shorter than {MIN_PASSWORD} characters", fix="choose a longer password")


def create_user(engine: Engine, username: str, password: str | None, role: Role) -> int:
    check_username(username)
    if password is not None:
        check_password(password)
    digest = hash_password(password) if password is not None else None
    try:
        with db.write(engine) as c:
            return c.execute(insert(db.users).values(username=username, role=role, password_hash=digest,
                                                     created=time.time())).inserted_primary_key[0]
    except IntegrityError:
        raise LimaError(f"user {username!r} already exists", fix="pick another name") from None


def _change(engine: Engine, username: str, values: dict[str, Any], *, leave_studies: bool = False) -> None:
    """Update an account and end all its sessions in one transaction: whoever held a session logs in anew,
    under the new password or role."""
    with db.write(engine) as c:
        row = c.execute(select(db.users.c.id).where(db.users.c.username == username)).first()
        if row is None:
            raise LimaError(f"no user {username!r}", fix="check the name with `lima-align annotate progress`")
        c.execute(update(db.users).where(db.users.c.id == row[0]).values(**values))
        sessions.end_all(c, row[0])
        if leave_studies:
            c.execute(delete(db.members).where(db.members.c.user_id == row[0]))


def set_password(engine: Engine, username: str, password: str) -> None:
    check_password(password)
    _change(engine, username, {"password_hash": hash_password(password)})


def set_role(engine: Engine, username: str, role: str) -> None:
    if role not in ("admin", "annotator"):
        raise LimaError(f"unknown role {role!r}", fix="use admin or annotator")
    _change(engine, username, {"role": role})


def remove_user(engine: Engine, username: str) -> None:
    """Take an account away: its sessions end, its password is cleared and it leaves every study. The row
    stays, since its votes belong to the studies (they export as human:NAME); set-password revives it."""
    _change(engine, username, {"password_hash": None}, leave_studies=True)


def authenticate(engine: Engine, username: str, password: str) -> dict[str, Any] | None:
    """The user row when the password matches, else None (same answer for unknown names and wrong passwords)."""
    from argon2.exceptions import InvalidHashError, VerificationError

    with db.read(engine) as c:
        row = c.execute(select(db.users).where(db.users.c.username == username)).mappings().first()
    if row is None or not row["password_hash"]:
        _hasher().hash(password)  # spend the same time, so timing does not reveal which names exist
        return None
    try:
        _hasher().verify(row["password_hash"], password)
    except (VerificationError, InvalidHashError):
        return None
    return dict(row)


def user_id(c: Connection, username: str) -> int:
    row = c.execute(select(db.users.c.id).where(db.users.c.username == username)).first()
    if row is None:
        raise LimaError(f"no user {username!r}", fix="create it with `lima-align annotate invite` or create-admin")
    return row[0]


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_invite(engine: Engine, study_id: int | None, role: Role = "annotator") -> str:
    """A fresh one-time token; only its hash is stored."""
    token = secrets.token_urlsafe(24)
    with db.write(engine) as c:
        c.execute(insert(db.invites).values(token_sha256=_token_hash(token), study_id=study_id, role=role,
                                            created=time.time()))
    return token


def find_invite(c: Connection, token: str) -> dict[str, Any] | None:
    """The unused invitation for this token, or None."""
    row = c.execute(select(db.invites).where(db.invites.c.token_sha256 == _token_hash(token))
                    .where(db.invites.c.used_by.is_(None))).mappings().first()
    return dict(row) if row else None


def join(engine: Engine, token: str, *, uid: int | None, username: str = "", password: str = "") -> dict[str, Any]:
    """Redeem an invitation, creating the account first when `uid` is None, all in one transaction: a used or
    unknown token creates nothing. Returns {"user_id", "study_id"}."""
    if uid is None:
        check_username(username)
        check_password(password)
        digest = hash_password(password)  # slow: done before the transaction takes the write lock
    with db.write(engine) as c:
        inv = find_invite(c, token)
        if inv is None:
            raise LimaError("this invitation link is unknown or was already used", fix="ask for a new link")
        if uid is None:
            if c.execute(select(db.users.c.id).where(db.users.c.username == username)).first():
                raise LimaError(f"the name {username!r} is taken", fix="choose another name")
            uid = c.execute(insert(db.users).values(username=username, role=inv["role"], password_hash=digest,
                                                    created=time.time())).inserted_primary_key[0]
        if redeem_invite(c, token, uid) is None:
            raise LimaError("this invitation link was already used", fix="ask for a new link")
    return {"user_id": uid, "study_id": inv["study_id"]}


def redeem_invite(c: Connection, token: str, uid: int) -> dict[str, Any] | None:
    """Mark the invitation used by `uid` and add them to its study, in the caller's transaction.

    The UPDATE ... WHERE used_by IS NULL is the guard: of two simultaneous redemptions only one changes a row.
    """
    inv = find_invite(c, token)
    if inv is None:
        return None
    n = c.execute(update(db.invites).where(db.invites.c.token_sha256 == inv["token_sha256"])
                  .where(db.invites.c.used_by.is_(None)).values(used_by=uid, used_at=time.time())).rowcount
    if n != 1:
        return None
    if inv["study_id"] is not None:
        exists = c.execute(select(db.members).where(db.members.c.study_id == inv["study_id"])
                           .where(db.members.c.user_id == uid)).first()
        if not exists:
            c.execute(insert(db.members).values(study_id=inv["study_id"], user_id=uid))
    return inv
