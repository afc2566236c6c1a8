"""The plumbing every page shares: sessions, CSRF, roles, security headers, body limits, error pages.

- The session cookie is Starlette's signed cookie (itsdangerous), HttpOnly and SameSite=Lax, Secure when
  the site is served over https; the signing key lives in the database so a restart logs nobody out. It
  carries the CSRF token and a session token; who is logged in is decided by the sessions table
  (sessions.py), so logging out or changing the account ends a session even if the cookie was copied.
- Ids in paths match IdConvertor (`{sid:id}`): anything else, or a number too large for the database's
  integers, matches no route and is a 404 rather than an error deep in a query.
- Every POST carries the session's CSRF token in a hidden field; a missing or wrong token is a 403.
- Content-Security-Policy allows only our own script and style files: no inline script can run, which
  backs up the sanitiser in render.py.
"""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection
from starlette.convertors import Convertor, register_url_convertor
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import db, sessions
from .studies import Refused

HERE = Path(__file__).parent
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; "
       "base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer"),
                    (b"cache-control", b"no-store")]


class IdConvertor(Convertor[int]):
    """A database id in a path: 1 to 18 digits, always within a 64-bit integer (SQLite's and PostgreSQL's
    largest), so a malformed or absurd id never reaches a query."""

    regex = "[0-9]{1,18}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("id", IdConvertor())


def form_id(value: Any) -> int | None:
    """An id sent in a form field, by the rule of IdConvertor; None when it could not name a stored row."""
    return int(value) if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18 else None


class Guard:
    """ASGI middleware: refuse bodies over the limit (413) before any handler reads them, and add the
    security headers to every response. Bodies are read here and replayed, so a chunked upload without a
    Content-Length cannot slip past the limit either."""

    def __init__(self, app: ASGIApp, *, max_body: int, max_upload: int, upload_paths: tuple[str, ...]):
        self.app, self.max_body, self.max_upload, self.upload_paths = app, max_body, max_upload, upload_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        limit = self.max_upload if scope["path"].endswith(self.upload_paths) else self.max_body
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(limit)(scope, receive, send_with_headers)
            return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send_with_headers)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > limit:
                await _too_large(limit)(scope, receive, send_with_headers)
                return
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send_with_headers)


def _too_large(limit: int) -> Response:
    return HTMLResponse(f"<!doctype html><title>Too large</title><h1>Request too large</h1>"
                        f"<p>This server accepts at most {limit // 1024} KiB per request.</p>", status_code=413)


def csrf_token(request: Request) -> str:
    """The session's CSRF token, created on first use (also before login, for the login form itself)."""
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


async def checked_form(request: Request) -> FormData:
    """The POSTed form, after checking its CSRF token against the session's."""
    form = await request.form()
    sent, expected = form.get("csrf"), request.session.get("csrf")
    if not isinstance(sent, str) or not expected or not hmac.compare_digest(sent, expected):
        raise Refused(403, "This form has expired or did not come from this site. Reload the page and try again.")
    return form


def current_user(request: Request, c: Connection | None = None) -> dict[str, Any] | None:
    """The logged-in user's row (None: nobody logged in); `c`: a read connection the caller already holds."""
    token = request.session.get("token")
    if not token:
        return None
    state = request.app.state
    if c is not None:
        return sessions.current(state.engine, c, token, state.clock())
    with db.read(state.engine) as own:
        return sessions.current(state.engine, own, token, state.clock())


def require_user(request: Request, role: str | None = None, c: Connection | None = None) -> dict[str, Any]:
    """The logged-in user (Refused 401 otherwise); with role="admin", Refused 403 for anyone else."""
    user = current_user(request, c)
    if user is None:
        raise Refused(401, "Please log in first.")
    if role == "admin" and user["role"] != "admin":
        raise Refused(403, "This page is for the study's administrators.")
    return user


def login_session(request: Request, token: str) -> None:
    """A fresh cookie (new CSRF token too) holding a session token from sessions.start, so a session
    planted before login is worthless."""
    request.session.clear()
    request.session["token"] = token
    request.session["csrf"] = secrets.token_urlsafe(32)
