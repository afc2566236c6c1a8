"""Subcommands of the annotate stage, registered on the main parser by cli.make_parser. The database modules
(SQLAlchemy) and the web app (FastAPI, uvicorn) are imported inside the commands that use them, so the rest
of the CLI starts without them."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..cli_options import in_recipe_range
from ..config import GenerateConfig
from ..errors import LimaError
from ..jsonl import read_text
from ..verdicts import SCALES

DEFAULT_DB = "sqlite:///annotate.db"


def _password(env: str | None) -> str:
    if env:
        value = os.environ.get(env)
        if not value:
            raise LimaError(f"environment variable {env} is empty or unset", fix=f"export {env}=... first")
        return value
    import getpass

    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        raise LimaError("the two passwords differ", fix="type the same password twice")
    return first


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from . import db
    from .app import create_app

    secure = args.secure_cookies or bool(args.ssl_certfile)
    if args.workers < 1:
        raise LimaError(f"--workers must be at least 1, got {args.workers}", fix="use 1 (default) or more")
    print(f"annotation server on http{'s' if args.ssl_certfile else ''}://{args.host}:{args.port} (database {args.db})")
    if args.workers == 1:
        app: object = create_app(args.db, secure_cookies=secure, max_body=args.max_body_kib * 1024,
                                 sqlite_sync=args.sqlite_sync)
    else:
        db.secret_key(db.connect(args.db))  # schema and signing key made once, before the workers start
        os.environ["LIMA_ALIGN_ANNOTATE_SERVE"] = json.dumps({"db": args.db, "secure_cookies": secure,
                                                              "max_body": args.max_body_kib * 1024,
                                                              "sqlite_sync": args.sqlite_sync})
        app = "lima_align.annotate.app:from_environment"
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, ssl_certfile=args.ssl_certfile,
                ssl_keyfile=args.ssl_keyfile, proxy_headers=True, factory=args.workers > 1,
                workers=args.workers if args.workers > 1 else None)
    return 0


def cmd_create_admin(args: argparse.Namespace) -> int:
    from . import accounts, db

    engine = db.connect(args.db)
    accounts.create_user(engine, args.username, _password(args.password_env), "admin")
    print(f"admin {args.username!r} created")
    return 0


def cmd_set_password(args: argparse.Namespace) -> int:
    from . import accounts, db

    accounts.set_password(db.connect(args.db), args.username, _password(args.password_env))
    print(f"password of {args.username!r} changed")
    return 0


def cmd_set_role(args: argparse.Namespace) -> int:
    from . import accounts, db

    accounts.set_role(db.connect(args.db), args.username, args.role)
    print(f"{args.username!r} is now {args.role}; their sessions ended")
    return 0


def cmd_remove_user(args: argparse.Namespace) -> int:
    from . import accounts, db

    accounts.remove_user(db.connect(args.db), args.username)
    print(f"{args.username!r} removed: logged out, no password, in no study (their votes stay)")
    return 0


def cmd_unlock(args: argparse.Namespace) -> int:
    from . import db, throttle

    if bool(args.username) + bool(args.address) + args.all != 1:
        raise LimaError("say what to unlock", fix="give one of --username NAME, --address IP or --all")
    key = None if args.all else throttle.keys(args.username or "", args.address or "")[0 if args.username else 1]
    n = throttle.clear(db.connect(args.db), key)
    print(f"{n} locked or counted login{'s' * (n != 1)} cleared")
    return 0


def cmd_create_study(args: argparse.Namespace) -> int:
    from . import db, studies

    # the dialogue study's decoding flags take what the recipe's generate.* settings take (NaN passed argparse)
    in_recipe_range("generate", GenerateConfig, {"--temperature": ("temperature", args.temperature),
                                                 "--max-tokens": ("max_new_tokens", args.max_tokens)})
    guidelines = read_text(args.guidelines) if args.guidelines else None
    engine = db.connect(args.db)
    sid = studies.create_study(engine, args.name, args.kind, overlap=args.overlap,
                               a=[Path(f) for f in args.a] if args.a else None,
                               b=[Path(f) for f in args.b] if args.b else None,
                               dataset=Path(args.dataset) if args.dataset else None, scale=args.scale,
                               chat_url=args.chat_url, chat_model=args.chat_model, max_tokens=args.max_tokens,
                               temperature=args.temperature, guidelines=guidelines,
                               conversations=[Path(f) for f in args.conversations or []], seed=args.seed)
    print(f"study {args.name!r} created (id {sid}); invite annotators with "
          f"`lima-align annotate invite --study {args.name}`")
    return 0


def cmd_invite(args: argparse.Namespace) -> int:
    from . import accounts, db, studies

    engine = db.connect(args.db)
    with engine.connect() as c:
        study = studies.get_study(c, name=args.study)
        if args.user:
            uid = accounts.user_id(c, args.user)
    if args.user:
        studies.add_member(engine, study["id"], uid)
        print(f"{args.user} added to {args.study}")
        return 0
    for _ in range(args.count):
        token = accounts.create_invite(engine, study["id"])
        print(f"{args.base_url.rstrip('/')}/join/{token}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from . import db, export

    engine = db.connect(args.db)
    out = export.export_study(engine, args.study, Path(args.output),
                              Path(args.conversations) if args.conversations else None)
    for path, n in out["written"].items():
        print(f"{path}: {n} records")
    return 0


def cmd_progress(args: argparse.Namespace) -> int:
    from . import db, studies

    rows = studies.progress(db.connect(args.db))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no studies yet")
    for p in rows:
        target = f"/{p['target']}" if p["kind"] != "dialogue" else " rated turns"
        people = ", ".join(f"{u} {n}" for u, n in p["annotators"].items()) or "nobody yet"
        print(f"{p['name']} ({p['kind']}, {p['n_items']} items x {p['overlap']}): {p['votes']}{target}; {people}")
    return 0


def add_commands(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add this stage's subcommands (imports of heavy libraries stay inside the command functions)."""
    an = sub.add_parser("annotate", help="human evaluation and review: the web annotation app")
    cmds = an.add_subparsers(dest="sub", required=True)

    def with_db(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--db", default=DEFAULT_DB,
                       help="database URL: sqlite:///study.db (default file annotate.db) or "
                            "postgresql+psycopg://user:password@host/dbname")
        return p

    s = with_db(cmds.add_parser("serve", help="run the web app"))
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for a team network)")
    s.add_argument("--port", type=int, default=8500)
    s.add_argument("--secure-cookies", action="store_true",
                   help="mark session cookies Secure (set this behind an https reverse proxy)")
    s.add_argument("--ssl-certfile", help="serve https directly with this certificate (implies secure cookies)")
    s.add_argument("--ssl-keyfile")
    s.add_argument("--max-body-kib", type=int, default=1024, help="largest request body accepted, except uploads")
    s.add_argument("--sqlite-sync", default="full", choices=("full", "normal"),
                   help="full: fsync every vote (survives power loss); normal: survives a killed server, "
                        "faster on slow disks")
    s.add_argument("--workers", type=int, default=1,
                   help="server processes (more CPU for large teams; SQLite and PostgreSQL both allow it)")
    s.add_argument("--log-level", default="warning")
    s.set_defaults(func=cmd_serve)

    a = with_db(cmds.add_parser("create-admin", help="create an administrator account"))
    a.add_argument("--username", required=True)
    a.add_argument("--password-env", help="read the password from this environment variable (default: prompt)")
    a.set_defaults(func=cmd_create_admin)

    sp = with_db(cmds.add_parser("set-password", help="set or reset an account's password"))
    sp.add_argument("--username", required=True)
    sp.add_argument("--password-env", help="read the password from this environment variable (default: prompt)")
    sp.set_defaults(func=cmd_set_password)

    sr = with_db(cmds.add_parser("set-role", help="make an account an admin or an annotator (ends its sessions)"))
    sr.add_argument("--username", required=True)
    sr.add_argument("--role", required=True, choices=("admin", "annotator"))
    sr.set_defaults(func=cmd_set_role)

    ru = with_db(cmds.add_parser("remove-user", help="log an account out for good: no password, no studies "
                                                     "(its votes stay; set-password revives it)"))
    ru.add_argument("--username", required=True)
    ru.set_defaults(func=cmd_remove_user)

    ul = with_db(cmds.add_parser("unlock", help="clear failed logins: let a name or address log in again now"))
    ul.add_argument("--username")
    ul.add_argument("--address", help="client IP address as the dashboard shows it")
    ul.add_argument("--all", action="store_true", help="every name and address")
    ul.set_defaults(func=cmd_unlock)

    c = with_db(cmds.add_parser("create-study", help="create a study from generation, dataset or conversation files"))
    c.add_argument("--name", required=True)
    c.add_argument("--kind", required=True, choices=("pairwise", "absolute", "review", "dialogue", "turns"))
    c.add_argument("--a", nargs="+", help="generations file(s), one model each (absolute: the models rated, "
                   "several in one blind study; pairwise: the one model A)")
    c.add_argument("--b", nargs="+", help="pairwise: generations file(s) of the models B, one model each "
                   "(A is compared with each B in one study)")
    c.add_argument("--dataset", help="candidate records in our JSONL format (review)")
    c.add_argument("--overlap", type=int, default=1, help="annotators per item (3 gives agreement numbers)")
    c.add_argument("--scale", default="fail_pass_excellent", choices=tuple(SCALES),
                   help="absolute studies: the rating scale")
    c.add_argument("--chat-url", help="dialogue: OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    c.add_argument("--chat-model", help="dialogue: model name at that endpoint")
    c.add_argument("--max-tokens", type=int, default=512, help="dialogue: longest answer")
    c.add_argument("--temperature", type=float, default=0.7, help="dialogue: sampling temperature")
    c.add_argument("--conversations", nargs="+", help="turns: conversation files from `lima-align converse` "
                   "(one per model; every assistant turn becomes an item, the model hidden)")
    c.add_argument("--seed", type=int, default=0, help="turns, and absolute / pairwise studies of several "
                   "models: seed of the shuffle that interleaves the models' items")
    c.add_argument("--guidelines", help="a text file with the instructions shown to annotators")
    c.set_defaults(func=cmd_create_study)

    i = with_db(cmds.add_parser("invite", help="print one-time invitation links for a study"))
    i.add_argument("--study", required=True)
    i.add_argument("--count", type=int, default=1)
    i.add_argument("--base-url", default="http://127.0.0.1:8500", help="the address annotators open")
    i.add_argument("--user", help="add an existing account to the study instead of printing a link")
    i.set_defaults(func=cmd_invite)

    e = with_db(cmds.add_parser("export", help="write a study's results (judgments / decisions JSONL)"))
    e.add_argument("--study", required=True)
    e.add_argument("--output", required=True)
    e.add_argument("--conversations", help="dialogue: where the conversations go "
                                           "(default: <output>.conversations.jsonl)")
    e.set_defaults(func=cmd_export)

    p = with_db(cmds.add_parser("progress", help="votes per study and annotator"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_progress)
