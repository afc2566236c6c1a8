"""The annotation web app: login and invitations, the four kinds of study page, the admin dashboard.

Pages are rendered on the server (Jinja2); the only script is static/keys.js (keyboard shortcuts). A vote is
a POST that commits, then redirects to the study page, which shows the next item: what the annotator sees
next is always drawn after their vote is on disk.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.sessions import SessionMiddleware

from ..errors import LimaError
from . import accounts, assignment, chats, db, export, sessions, studies, throttle
from .render import markdown
from .studies import PAIRWISE_CHOICES, SCALES, Refused
from .web import HERE, Guard, checked_form, csrf_token, current_user, form_id, login_session, require_user


def create_app(db_url: str, *, secure_cookies: bool = False, max_body: int = 1 << 20,
               max_upload: int = 64 << 20, sqlite_sync: db.SqliteSync = "full",
               clock: Callable[[], float] = time.time) -> FastAPI:
    """The app for one database. `secure_cookies`: mark the session cookie Secure (serving over https);
    `clock`: the time sessions and login throttling go by (tests move it)."""
    engine = db.connect(db_url, sqlite_sync=sqlite_sync)
    app = FastAPI(title="lima-align annotate", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.clock = engine, clock
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["md"] = markdown
    app.add_middleware(SessionMiddleware, secret_key=db.secret_key(engine), session_cookie="lima_session",
                       max_age=sessions.SESSION_S, same_site="lax", https_only=secure_cookies)
    app.add_middleware(Guard, max_body=max_body, max_upload=max_upload, upload_paths=("/judges", "/admin/studies"))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    site = Site(engine, templates, clock)
    for exc, handler in site.error_handlers():
        app.add_exception_handler(exc, handler)
    for method, path, endpoint in site.routes():
        app.add_api_route(path, endpoint, methods=[method])
    return app


class Site:
    """The app's pages and actions over one database. They are registered from the tables in `routes` and
    `error_handlers` rather than with @app.get/@app.post: one place lists every route (the CSRF and admin-role
    tests walk it), and mutmut (benchmarks/mutation.py) mutates plain methods but skips decorated functions."""

    def __init__(self, engine: Any, templates: Jinja2Templates, clock: Callable[[], float]):
        self.engine, self.templates, self.clock = engine, templates, clock

    def error_handlers(self) -> tuple[tuple[type[Exception], Callable[..., Response]], ...]:
        return ((Refused, self.refused), (HTTPException, self.http_error), (RequestValidationError, self.bad_request),
                (LimaError, self.user_error), (Exception, self.crashed))

    def routes(self) -> tuple[tuple[str, str, Callable[..., Any]], ...]:
        """(method, path, handler), in matching order."""
        return (
            ("GET", "/healthz", self.healthz),
            ("GET", "/login", self.login_form),
            ("POST", "/login", self.login),
            ("POST", "/logout", self.logout),
            ("GET", "/join/{token}", self.join_form),
            ("POST", "/join/{token}", self.join),
            ("GET", "/", self.home),
            ("GET", "/s/{sid:id}", self.study_page),
            ("POST", "/s/{sid:id}/vote", self.vote),
            ("POST", "/s/{sid:id}/new", self.new_chat),
            ("POST", "/s/{sid:id}/say", self.say),
            ("POST", "/s/{sid:id}/rate", self.rate),
            ("GET", "/admin", self.admin),
            ("POST", "/admin/logins/unlock", self.unlock),
            ("POST", "/admin/studies", self.create),
            ("GET", "/admin/s/{sid:id}", self.admin_study),
            ("POST", "/admin/s/{sid:id}/invite", self.invite),
            ("POST", "/admin/s/{sid:id}/judges", self.attach),
            ("GET", "/admin/s/{sid:id}/export", self.download),
        )

    def page(self, request: Request, name: str, status: int = 200, headers: dict[str, str] | None = None,
             **ctx: Any) -> HTMLResponse:
        if "user" not in ctx:  # (setdefault would query the database even when the handler passed it)
            ctx["user"] = current_user(request)
        return self.templates.TemplateResponse(request, name, {"csrf": csrf_token(request), **ctx}, status_code=status,
                                               headers=headers)

    def see(self, url: str) -> RedirectResponse:
        return RedirectResponse(url, status_code=303)

    # ------------------------------------------------------------- errors

    def refused(self, request: Request, exc: Refused) -> Response:
        if exc.status == 401 and request.method == "GET":
            return self.see("/login")
        return self.page(request, "error.html", exc.status, message=exc.what)

    def http_error(self, request: Request, exc: HTTPException) -> Response:
        message = "There is no such page." if exc.status_code == 404 else str(exc.detail)
        return self.page(request, "error.html", exc.status_code, message=message)

    def bad_request(self, request: Request, exc: RequestValidationError) -> Response:
        return self.page(request, "error.html", 400, message="The request was missing a field or had a malformed one.")

    def user_error(self, request: Request, exc: LimaError) -> Response:
        return self.page(request, "error.html", 400, message=str(exc))

    def crashed(self, request: Request, exc: Exception) -> Response:
        # No database access here: the database may be what failed. The traceback goes to the server log.
        message = "Something went wrong on the server; your last vote may not be saved. Go back and try again."
        return self.templates.TemplateResponse(request, "error.html", {"user": None, "csrf": "", "message": message},
                                               status_code=500)

    # ------------------------------------------------------------- accounts

    def healthz(self) -> PlainTextResponse:
        return PlainTextResponse("ok")

    def login_form(self, request: Request) -> Response:
        return self.page(request, "login.html", error=None)

    def start_session(self, request: Request, uid: int, keys: list[str] | None = None) -> str:
        """A new session for a login or a joining; the browser's previous session, if any, ends with it."""
        with db.write(self.engine) as c:
            if keys:
                throttle.succeeded(c, keys)
            sessions.end(c, request.session.get("token"))
            return sessions.start(c, uid, self.clock())

    async def login(self, request: Request) -> Response:
        form = await checked_form(request)
        username = str(form.get("username", ""))
        keys = throttle.keys(username, request.client.host if request.client else "unknown")
        wait = await run_in_threadpool(throttle.wait_s, self.engine, keys, self.clock())
        if wait:  # refused before the password is checked: a guess made now learns nothing
            minutes = -(-wait // 60)
            return self.page(request, "login.html", 429, headers={"retry-after": str(wait)},
                             error=f"Too many failed logins. Try again in {minutes} minute{'s' * (minutes > 1)}, "
                                   f"or ask an administrator to unlock it.")
        user = await run_in_threadpool(accounts.authenticate, self.engine, username, str(form.get("password", "")))
        if user is None:
            await run_in_threadpool(throttle.failed, self.engine, keys, self.clock())
            return self.page(request, "login.html", 401, error="Wrong name or password.")
        login_session(request, await run_in_threadpool(self.start_session, request, user["id"], keys))
        return self.see("/admin" if user["role"] == "admin" else "/")

    def end_session(self, request: Request) -> None:
        with db.write(self.engine) as c:
            sessions.end(c, request.session.get("token"))

    async def logout(self, request: Request) -> Response:
        await checked_form(request)
        await run_in_threadpool(self.end_session, request)
        request.session.clear()
        return self.see("/login")

    def join_form(self, request: Request, token: str) -> Response:
        with db.read(self.engine) as c:
            if accounts.find_invite(c, token) is None:
                raise Refused(404, "This invitation link is unknown or was already used. Ask for a new one.")
        return self.page(request, "join.html", token=token, error=None)

    async def join(self, request: Request, token: str) -> Response:
        form = await checked_form(request)
        user = await run_in_threadpool(current_user, request)
        try:
            joined = await run_in_threadpool(accounts.join, self.engine, token, uid=user["id"] if user else None,
                                             username=str(form.get("username", "")),
                                             password=str(form.get("password", "")))
        except LimaError as e:
            return self.page(request, "join.html", 400, token=token, error=f"{e.problems[0].what}; {e.problems[0].fix}")
        login_session(request, await run_in_threadpool(self.start_session, request, joined["user_id"]))
        return self.see(f"/s/{joined['study_id']}" if joined["study_id"] else "/")

    # ------------------------------------------------------------- annotators

    def home(self, request: Request) -> Response:
        user = require_user(request)
        return self.page(request, "home.html", mine=studies.studies_of(self.engine, user["id"]))

    def member_check(self, request: Request, sid: int, c: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """The logged-in user and the study, Refused unless they are one of its annotators (one connection)."""
        user = require_user(request, c=c)
        study = studies.get_study(c, sid=sid)
        if not studies.is_member(c, sid, user["id"]):
            raise Refused(403, "You are not an annotator of this study.")
        return user, study

    def member_study(self, request: Request, sid: int) -> tuple[dict[str, Any], dict[str, Any]]:
        with db.read(self.engine) as c:
            return self.member_check(request, sid, c)

    def study_page(self, request: Request, sid: int) -> Response:
        with db.read(self.engine) as c:  # one read connection for the checks and the usual case, a pending item
            user, study = self.member_check(request, sid, c)
            item = assignment.pending_item(c, study, user["id"]) if study["kind"] != "dialogue" else None
        if study["kind"] != "dialogue" and item is None:  # (the read connection is back in the pool by now)
            item = assignment.next_item(self.engine, study, user["id"])
        if study["kind"] == "dialogue":
            conv = chats.latest_conversation(self.engine, sid, user["id"])
            scores = chats.turn_scores(self.engine, conv["id"]) if conv else {}
            return self.page(request, "dialogue.html", user=user, study=study, conv=conv, scores=scores,
                             turns=_turns(conv))
        if item is None:
            return self.page(request, "done.html", user=user, study=study)
        p = item["payload"]
        ctx: dict[str, Any] = {"study": study, "item": item}
        if study["kind"] == "pairwise":
            shown = (p["output_a"], p["output_b"]) if item["order"] == "ab" else (p["output_b"], p["output_a"])
            ctx.update(shown=shown, choices=PAIRWISE_CHOICES)
        elif study["kind"] in studies.RATED:
            ctx.update(scale=SCALES[study["config"]["scale"]])
        return self.page(request, f"{study['kind']}.html", user=user, **ctx)

    async def vote(self, request: Request, sid: int) -> Response:
        form = await checked_form(request)

        def checked_and_stored() -> None:  # one trip to the threadpool for the whole vote
            user, study = self.member_study(request, sid)
            item_id = form_id(form.get("item"))
            if item_id is None:
                raise Refused(404, "There is no such item.")
            choice = str(form.get("choice", ""))
            edited = None
            if study["kind"] == "review" and choice == "edit":
                edited = _edited_record(self.engine, sid, item_id, form)
            assignment.record_vote(self.engine, study, user["id"], item_id, choice,
                                   str(form.get("comment", ""))[:5000], edited)

        await run_in_threadpool(checked_and_stored)
        return self.see(f"/s/{sid}")

    async def new_chat(self, request: Request, sid: int) -> Response:
        await checked_form(request)
        user, study = await run_in_threadpool(self.member_study, request, sid)
        if study["kind"] != "dialogue":
            raise Refused(400, "Only dialogue studies have conversations.")
        await run_in_threadpool(chats.new_conversation, self.engine, sid, user["id"])
        return self.see(f"/s/{sid}")

    async def say(self, request: Request, sid: int) -> Response:
        form = await checked_form(request)
        user, study = await run_in_threadpool(self.member_study, request, sid)
        text, cid = str(form.get("message", "")).strip(), str(form.get("conversation", ""))
        if study["kind"] != "dialogue" or not text:
            raise Refused(400, "Write a message first.")
        with db.read(self.engine) as c:
            conv = chats.conversation(c, cid, user["id"])
        turn = {"role": "user", "content": text}
        reply = await _ask_model(study["config"], conv["messages"] + [turn])
        await run_in_threadpool(chats.append_turns, self.engine, cid, user["id"],
                                [turn, {"role": "assistant", "content": reply}])
        return self.see(f"/s/{sid}")

    async def rate(self, request: Request, sid: int) -> Response:
        form = await checked_form(request)
        user, _ = await run_in_threadpool(self.member_study, request, sid)
        try:
            turn = int(str(form.get("turn", "")))
        except ValueError:
            raise Refused(400, "The rating names no turn.") from None
        await run_in_threadpool(chats.rate_turn, self.engine, str(form.get("conversation", "")), user["id"], turn,
                                str(form.get("score", "")))
        return self.see(f"/s/{sid}")

    # ------------------------------------------------------------- admin

    def admin_study_of(self, request: Request, sid: int) -> dict[str, Any]:
        """The study, for an administrator: Refused 401/403 for anyone else, 404 when there is no such study."""
        require_user(request, "admin")
        with db.read(self.engine) as c:
            return studies.get_study(c, sid=sid)

    def admin(self, request: Request) -> Response:
        require_user(request, "admin")
        return self.page(request, "admin.html", progress=studies.progress(self.engine),
                         locked=throttle.locked(self.engine, self.clock()))

    async def unlock(self, request: Request) -> Response:
        form = await checked_form(request)
        require_user(request, "admin")
        key = form.get("key")
        if form.get("all") == "1":
            key = None
        elif not isinstance(key, str) or not key:
            raise Refused(400, "Say which login to unlock.")
        await run_in_threadpool(throttle.clear, self.engine, key)
        return self.see("/admin")

    async def create(self, request: Request) -> Response:
        form = await checked_form(request)
        require_user(request, "admin")
        kind = str(form.get("kind", ""))
        if kind not in studies.KINDS:
            raise Refused(400, f"Unknown kind of study {kind!r}.")
        try:
            overlap = int(str(form.get("overlap", "1")))
        except ValueError:
            raise Refused(400, "Annotators per item must be a whole number.") from None
        with tempfile.TemporaryDirectory() as tmp:
            paths: dict[str, list[Path]] = {}
            for field in ("a", "b", "dataset"):  # a and b may hold several files (one model each)
                paths[field] = []
                for n, upload in enumerate(form.getlist(field)):
                    if not isinstance(upload, str) and upload.filename:
                        paths[field].append(Path(tmp) / f"{field}{n}.jsonl")
                        paths[field][-1].write_bytes(await upload.read())
            convs = paths["a"] + paths["b"] if kind == "turns" else None
            sid = await run_in_threadpool(
                lambda: studies.create_study(self.engine, str(form.get("name", "")).strip() or "study", kind,
                                             overlap=overlap, a=paths["a"] or None, b=paths["b"] or None,
                                             dataset=paths["dataset"][0] if paths["dataset"] else None,
                                             conversations=convs,
                                             scale=str(form.get("scale", "fail_pass_excellent")),
                                             chat_url=str(form.get("chat_url", "")) or None,
                                             chat_model=str(form.get("chat_model", "")) or None))
        return self.see(f"/admin/s/{sid}")

    def admin_study(self, request: Request, sid: int) -> Response:
        study = self.admin_study_of(request, sid)
        prog = next(p for p in studies.progress(self.engine) if p["id"] == sid)
        agree = export.agreement_table(self.engine, study, export.attached_judgments(self.engine, sid))
        return self.page(request, "admin_study.html", study=study, prog=prog, agree=agree, link=None)

    async def invite(self, request: Request, sid: int) -> Response:
        await checked_form(request)
        await run_in_threadpool(self.admin_study_of, request, sid)
        token = await run_in_threadpool(accounts.create_invite, self.engine, sid)
        link = str(request.base_url).rstrip("/") + f"/join/{token}"
        return self.page(request, "invite.html", link=link)

    async def attach(self, request: Request, sid: int) -> Response:
        form = await checked_form(request)
        await run_in_threadpool(self.admin_study_of, request, sid)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise Refused(400, "Choose a judgments file to upload.")
        data = await upload.read()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / (Path(upload.filename or "judgments.jsonl").name or "judgments.jsonl")
            path.write_bytes(data)
            await run_in_threadpool(export.attach_judgments, self.engine, sid, path.name, path)
        return self.see(f"/admin/s/{sid}")

    def download(self, request: Request, sid: int) -> Response:
        study = self.admin_study_of(request, sid)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "export.jsonl"
            export.export_study(self.engine, study["name"], out)
            body = out.read_bytes()
        return Response(body, media_type="application/x-ndjson",
                        headers={"content-disposition": f'attachment; filename="study-{sid}.jsonl"'})


def from_environment() -> FastAPI:
    """App factory for `serve --workers N`: each worker process builds its app from the settings the parent
    put in LIMA_ALIGN_ANNOTATE_SERVE (uvicorn starts workers by import string, not with arguments)."""
    import os

    cfg = json.loads(os.environ["LIMA_ALIGN_ANNOTATE_SERVE"])
    return create_app(cfg["db"], secure_cookies=cfg["secure_cookies"], max_body=cfg["max_body"],
                      sqlite_sync=cfg["sqlite_sync"])


def _turns(conv: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Messages with the 1-based assistant turn number beside each assistant message."""
    out, n = [], 0
    for m in conv["messages"] if conv else []:
        if m["role"] == "assistant":
            n += 1
        out.append({**m, "turn": n if m["role"] == "assistant" else None})
    return out


def _edited_record(engine: Any, sid: int, item_id: int, form: Any) -> dict[str, Any]:
    """The reviewed record with each message's text replaced by the edited one (roles and ids kept)."""
    from sqlalchemy import select

    with db.read(engine) as c:
        row = c.execute(select(db.items.c.payload).where(db.items.c.id == item_id)
                        .where(db.items.c.study_id == sid)).first()
    if row is None:
        raise Refused(403, "This item is not assigned to you.")
    record = json.loads(row[0])["record"]
    messages = []
    for i, m in enumerate(record["messages"]):
        text = form.get(f"content_{i}")
        messages.append({**m, "content": str(text).replace("\r\n", "\n") if isinstance(text, str) else m["content"]})
    return {**record, "messages": messages}


async def _ask_model(config: dict[str, Any], messages: list[dict[str, str]]) -> str:
    from ..api import ApiError, ChatClient

    client = ChatClient(config["chat_url"], config["model"], max_retries=2, timeout_s=120.0)
    try:
        result = await client.chat(messages, max_tokens=config["max_tokens"], temperature=config["temperature"])
    except ApiError as e:
        raise Refused(502, f"The model did not answer: {e.problems[0].what}") from None
    finally:
        await client.aclose()
    return result.text
