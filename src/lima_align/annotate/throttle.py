"""Login throttling, per account name and per client address, kept in the database.

A key ("user:<hash of the name>", "addr:IP") whose last LIMIT failed logins all fall within WINDOW_S is
locked: logins under it are answered 429 with Retry-After, before the password is checked, so a guess made
while locked learns nothing. The first lock lasts FIRST_LOCK_S and each further one twice as long (up to
MAX_LOCK_S): after a lock ends, one more failure within the window locks again. A key quiet for
FORGET_AFTER_S is forgotten. Names are throttled whether or not the account exists (so the answer does not
tell which names do), and kept as hashes: what people type as a name is sometimes their password. A good
password clears its name's key but not the address's, so someone with an account of their own cannot reset
their address between guesses at other accounts. An administrator clears keys on the dashboard or with
`lima-align annotate unlock`.

The state is in the database rather than in memory so that the processes of `serve --workers N` share it.
Time comes from the caller (the app's clock), so tests move it instead of sleeping.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from . import db

LIMIT = 10
WINDOW_S = 15 * 60
FIRST_LOCK_S = 60.0
MAX_LOCK_S = 3600.0
FORGET_AFTER_S = 86400.0
_T = db.login_throttle


def name_key(username: str) -> str:
    return "user:" + hashlib.sha256(username.encode()).hexdigest()[:32]


def keys(username: str, address: str) -> list[str]:
    """The name's key first, then the address's."""
    return [name_key(username), f"addr:{address[:100]}"]


def wait_s(engine: Engine, keys: list[str], now: float) -> int:
    """Whole seconds until none of `keys` is locked (0: log in may be tried now)."""
    with db.read(engine) as c:
        until = c.execute(select(_T.c.locked_until).where(_T.c.key.in_(keys))).scalars().all()
    return max([math.ceil(u - now) for u in until if u > now], default=0)


def _failed(c: Connection, key: str, now: float) -> None:
    row = c.execute(select(_T).where(_T.c.key == key).with_for_update()).mappings().first()
    recent = [t for t in json.loads(row["recent"]) if now - t < WINDOW_S] if row else []
    recent = (recent + [now])[-LIMIT:]
    strikes, until = (row["strikes"], row["locked_until"]) if row else (0, 0.0)
    if len(recent) == LIMIT:
        until = now + min(MAX_LOCK_S, FIRST_LOCK_S * 2 ** min(strikes, 32))
        strikes += 1
    values = {"recent": json.dumps(recent), "strikes": strikes, "locked_until": until, "updated": now}
    if row is None:
        c.execute(insert(_T).values(key=key, **values))
    else:
        c.execute(update(_T).where(_T.c.key == key).values(**values))


def failed(engine: Engine, keys: list[str], now: float) -> None:
    """Count a failed login against every key."""
    for attempt in range(2):  # PostgreSQL: another process may insert the same new key first; then update it
        try:
            with db.write(engine) as c:
                c.execute(delete(_T).where(_T.c.updated < now - FORGET_AFTER_S).where(_T.c.locked_until < now))
                for key in keys:
                    _failed(c, key, now)
            return
        except IntegrityError:
            if attempt:
                raise


def succeeded(c: Connection, keys: list[str]) -> None:
    """A good password: forget the account's failures (keys[0]), in the caller's transaction."""
    c.execute(delete(_T).where(_T.c.key == keys[0]))


def locked(engine: Engine, now: float) -> list[dict[str, Any]]:
    """Keys locked now, for the dashboard: key, label (the account's name, or the address), seconds left,
    strikes."""
    with db.read(engine) as c:
        rows = c.execute(select(_T).where(_T.c.locked_until > now).order_by(_T.c.key)).mappings().all()
        names = {name_key(u): u for u in c.execute(select(db.users.c.username)).scalars()} if rows else {}
    return [{"key": r["key"], "wait_s": math.ceil(r["locked_until"] - now), "strikes": r["strikes"],
             "label": (f"address {r['key'][5:]}" if r["key"].startswith("addr:")
                       else f"name {names[r['key']]}" if r["key"] in names else "a name with no account")}
            for r in rows]


def clear(engine: Engine, key: str | None = None) -> int:
    """Forget the failures of one key (None: of every key); returns how many keys were cleared."""
    with db.write(engine) as c:
        q = delete(_T) if key is None else delete(_T).where(_T.c.key == key)
        return c.execute(q).rowcount
