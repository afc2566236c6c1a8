"""The annotation database: one schema for SQLite and PostgreSQL, and how to connect to either.

Durability choices (a vote is a person's time; losing an acknowledged one is the worst failure):
- SQLite runs in WAL mode with `synchronous=FULL` by default: every commit is fsynced before the response
  that acknowledges it, so neither a killed server nor a power cut loses it. `--sqlite-sync normal` skips
  that fsync (the WAL is synced at checkpoints only): a killed server still loses nothing, since the
  committed pages are already in the OS, but a power cut may roll back the last few commits. FULL is the
  default because a person's vote costs seconds and an fsync about a millisecond on an SSD; NORMAL is for
  slow disks (network or shared volumes) where fsync latency caps the votes per second.
- SQLite write transactions (engine.begin()) start with BEGIN IMMEDIATE: the write lock is taken up front, so two requests never
  both read "item 7 has 2 of 3 annotators" and both take it; `busy_timeout` makes the loser wait instead
  of failing. PostgreSQL gets the same effect from a row lock on the study (see assignment.next_item).
- The server's SQLite writers also queue on a lock of their own first (`write(engine)`): SQLite's busy
  handler waits by sleeping in growing steps (up to 100 ms), so 20 threads contending for the write lock
  made a vote's p95 latency ~1.7 s while the lock was mostly free. The lock is a threading.Lock (the
  threads of one process) plus flock() on `<database>-writelock` (the processes of `serve --workers N`),
  both of which wake the next waiter as soon as the holder is done. It only orders writers that use it;
  BEGIN IMMEDIATE + busy_timeout still decide against anything else (the CLI, another program).
- JSON payloads are stored as text written by json.dumps with sorted keys, so exports are byte-stable
  and both databases store them the same way.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from sqlalchemy import (Column, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text, UniqueConstraint,
                        create_engine, event, insert, select)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from ..errors import LimaError

try:
    import fcntl
except ImportError:  # Windows: the threading.Lock alone (one server process)
    fcntl = None  # type: ignore[assignment]

metadata = MetaData()

settings = Table(
    "settings", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False))

users = Table(
    "users", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),          # "admin" | "annotator"
    Column("password_hash", Text),                        # argon2id; null until a password is set
    Column("created", Float, nullable=False))

studies = Table(
    "studies", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),          # "pairwise" | "absolute" | "review" | "dialogue"
    Column("overlap", Integer, nullable=False),          # k: annotators per item
    Column("config", Text, nullable=False),              # JSON: models, scale, guidelines, chat endpoint
    Column("created", Float, nullable=False))

members = Table(
    "members", metadata,
    Column("study_id", Integer, ForeignKey("studies.id"), primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), primary_key=True))

invites = Table(
    "invites", metadata,
    Column("token_sha256", String(64), primary_key=True),  # only the hash: a leaked database grants nothing
    Column("study_id", Integer, ForeignKey("studies.id")),
    Column("role", String(16), nullable=False),
    Column("created", Float, nullable=False),
    Column("used_by", Integer, ForeignKey("users.id")),
    Column("used_at", Float))

items = Table(
    "items", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_id", Integer, ForeignKey("studies.id"), nullable=False, index=True),
    Column("idx", Integer, nullable=False),               # position in the input file(s)
    Column("key", String(512), nullable=False),           # prompt_id (pairwise/absolute) or record id (review)
    Column("payload", Text, nullable=False),              # JSON: what is shown and exported
    Column("n_assigned", Integer, nullable=False, default=0),
    UniqueConstraint("study_id", "key", name="uq_item_key"))
# assignment._assign: the least-covered item first, then file order; this index hands it out without a sort.
ix_items_next = Index("ix_items_next", items.c.study_id, items.c.n_assigned, items.c.idx)

assignments = Table(
    "assignments", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_id", Integer, ForeignKey("studies.id"), nullable=False),
    Column("item_id", Integer, ForeignKey("items.id"), nullable=False, index=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("shown_order", String(2), nullable=False),     # "ab" | "ba" (pairwise); "ab" otherwise
    Column("created", Float, nullable=False),
    UniqueConstraint("study_id", "item_id", "user_id", name="uq_assignment"))

votes = Table(
    "votes", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_id", Integer, ForeignKey("studies.id"), nullable=False),
    Column("item_id", Integer, ForeignKey("items.id"), nullable=False),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("shown_order", String(2), nullable=False),
    Column("raw", String(32), nullable=False),            # the button pressed, in shown terms ("A", "pass", ...)
    Column("value", String(32), nullable=False),          # in original terms: "a"|"b"|"tie", score, decision
    Column("comment", Text, nullable=False, default=""),
    Column("edited", Text),                               # review: JSON of the edited record, beside the original
    Column("created", Float, nullable=False),
    UniqueConstraint("study_id", "item_id", "user_id", name="uq_vote"))

conversations = Table(
    "conversations", metadata,
    Column("id", String(64), primary_key=True),
    Column("study_id", Integer, ForeignKey("studies.id"), nullable=False),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("messages", Text, nullable=False),             # JSON list of {"role", "content"}
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False))

turn_ratings = Table(
    "turn_ratings", metadata,
    Column("conversation_id", String(64), ForeignKey("conversations.id"), primary_key=True),
    Column("turn", Integer, primary_key=True),            # 1-based assistant turn
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("score", String(16), nullable=False),
    Column("created", Float, nullable=False))

judge_files = Table(
    "judge_files", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("study_id", Integer, ForeignKey("studies.id"), nullable=False),
    Column("name", String(256), nullable=False),
    Column("records", Text, nullable=False),              # JSON list of judgment records (LLM judges)
    Column("created", Float, nullable=False))


# Added after the first release: metadata.create_all in connect() creates them in older databases, whose other
# tables are unchanged (so a database made before them opens as it is; its old cookies just stop working).
sessions = Table(
    "sessions", metadata,
    Column("token_sha256", String(64), primary_key=True),  # only the hash: a leaked database opens no session
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False, index=True),
    Column("created", Float, nullable=False),
    Column("expires", Float, nullable=False))

login_throttle = Table(
    "login_throttle", metadata,
    Column("key", String(200), primary_key=True),         # "user:NAME" or "addr:IP" (see throttle.py)
    Column("recent", Text, nullable=False),               # JSON: times of the latest failed logins, oldest first
    Column("strikes", Integer, nullable=False),           # lockouts so far; each one doubles the next
    Column("locked_until", Float, nullable=False),
    Column("updated", Float, nullable=False))


def dumps(obj: Any) -> str:
    """The one JSON encoding used for stored payloads (sorted keys: same input, same bytes)."""
    return json.dumps(obj, ensure_ascii=False, sort_keys=True)


SqliteSync = Literal["full", "normal"]


class _WriteLock:
    """Writers of one SQLite file queue here: a threading.Lock for this process's threads, then an exclusive
    flock() on a file beside the database for the other server processes (where fcntl exists)."""

    def __init__(self, db_path: str | None):
        self.threads = threading.Lock()
        self.path = f"{db_path}-writelock" if db_path else None
        self.fd: int | None = None

    def __enter__(self) -> None:
        self.threads.acquire()
        try:
            if self.path is not None and fcntl is not None:
                if self.fd is None:
                    self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            self.threads.release()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            if self.fd is not None and fcntl is not None:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            self.threads.release()


_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, _WriteLock] = weakref.WeakKeyDictionary()


def _sqlite_pragmas(engine: Engine, sync: SqliteSync) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        # The driver's own transaction handling is switched off so that BEGIN IMMEDIATE below is ours.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn: Any) -> None:
        # Readers (see read()) start a plain deferred transaction: in WAL mode they never wait for a writer.
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("lima_read_only") else "BEGIN IMMEDIATE")


def connect(url: str, *, create: bool = True, sqlite_sync: SqliteSync = "full") -> Engine:
    """An engine for `sqlite:///path.db` or `postgresql+psycopg://user:pass@host/db`, schema created if missing."""
    if url.startswith("sqlite:"):
        if url in ("sqlite://", "sqlite:///:memory:"):
            raise LimaError(f"in-memory SQLite ({url}) would lose every vote on exit",
                            fix="use a file, e.g. --db sqlite:///study.db")
        engine = create_engine(url, pool_size=32, max_overflow=32, pool_timeout=60)
        if sqlite_sync not in ("full", "normal"):
            raise LimaError(f"unknown SQLite sync mode {sqlite_sync!r}", fix="use full (default) or normal")
        _sqlite_pragmas(engine, sqlite_sync)
    elif url.startswith(("postgresql:", "postgresql+psycopg:")):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise LimaError("PostgreSQL needs the psycopg driver",
                            fix="pip install 'lima-align[postgres]'") from None
        engine = create_engine(url.replace("postgresql:", "postgresql+psycopg:", 1) if url.startswith("postgresql:")
                               else url, pool_size=32, max_overflow=32, pool_pre_ping=True)
    else:
        raise LimaError(f"unsupported database URL {url!r}",
                        fix="use sqlite:///study.db or postgresql+psycopg://user:password@host/dbname")
    if create:
        try:  # the first connection: a server that is down or a file that cannot be made shows here
            metadata.create_all(engine)
            ix_items_next.create(engine, checkfirst=True)  # databases made before this index existed get it too
        except OperationalError as e:
            reason = str(e.orig).strip().splitlines()[0] if e.orig is not None else str(e)
            raise LimaError(f"cannot open the database {engine.url.render_as_string(hide_password=True)}: {reason}",
                            where="--db", fix="check the URL, that the database server is running and reachable, "
                            "and for SQLite that the file's folder exists and is writable") from None
    if engine.dialect.name == "sqlite":
        _WRITE_LOCKS[engine] = _WriteLock(engine.url.database)
    return engine


@contextmanager
def write(engine: Engine) -> Iterator[Connection]:
    """engine.begin() for the app's write transactions: on SQLite, writers first queue on _WriteLock (no
    sleeping in SQLite's busy handler) and hold it until the commit is on disk."""
    lock = _WRITE_LOCKS.get(engine)
    if lock is None:
        with engine.begin() as c:
            yield c
        return
    with engine.connect() as c, lock, c.begin():  # the pool checkout (and later return) stays outside the lock
        yield c


def read(engine: Engine) -> Connection:
    """A connection for reading only. On SQLite its transaction does not take the write lock, so pages that
    only read are never queued behind votes; anything that writes must use write(engine) (or engine.begin())."""
    return engine.connect().execution_options(lima_read_only=True)


def secret_key(engine: Engine) -> str:
    """The key that signs session cookies, made once and kept in the database so a restart keeps people logged in."""
    for _ in range(2):  # a second process may insert between our read and our write: then read theirs
        try:
            with write(engine) as c:
                row = c.execute(select(settings.c.value).where(settings.c.key == "session_secret")).first()
                if row:
                    return row[0]
                value = secrets.token_urlsafe(48)
                c.execute(insert(settings).values(key="session_secret", value=value))
                return value
        except IntegrityError:
            continue
    raise LimaError("could not read or store the session signing key", fix="check the database is writable")
