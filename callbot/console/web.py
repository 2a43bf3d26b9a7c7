"""What every console page shares: the state, the login guard, rendering, security headers.

Pages are plain Starlette endpoints wrapped by :func:`page`, which refuses an anonymous
visitor (to the login page), a form without the session's CSRF token (400) and a change by
a read-only user (403), before the endpoint runs.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import Config
from ..transcripts.records import OUTCOME_LABELS
from ..transcripts.redact import mask_number, redact_text
from ..transcripts.store import TranscriptStore
from .auth import COOKIE, Authenticator, Session, Sessions
from .charts import confidence_bar
from .grouping import ReviewGroups
from .retrain import Retrainer

HERE = Path(__file__).parent
Endpoint = Callable[[Request], Awaitable[Response]]

CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; media-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


@dataclass
class Console:
    """Everything a page handler needs, built once by create_app."""

    config: Config
    store: TranscriptStore
    sessions: Sessions
    auth: Authenticator
    retrainer: Retrainer
    templates: Jinja2Templates
    groups: ReviewGroups

    def secure_cookie(self, request: Request) -> bool:
        mode = self.config.console.cookie_secure
        return mode == "always" or (mode == "auto" and request.url.scheme == "https")

    def set_cookie(self, request: Request, response: Response, session: Session) -> None:
        response.set_cookie(COOKIE, session.token, httponly=True, samesite="strict",
                            secure=self.secure_cookie(request), path="/",
                            max_age=int(session.expires - time.time()))

    async def session(self, request: Request) -> Session | None:
        """The request's session (read from the database off the event loop). A logged-in
        session whose user left the configuration ends; a changed role applies at once."""
        s = await run_in_threadpool(self.sessions.get, request.cookies.get(COOKIE))
        if s is None or s.user is None:
            return s
        user = self.auth.users.get(s.user)
        if user is None:
            await run_in_threadpool(self.sessions.drop, s.token)
            return None
        s.role = user.role
        return s

    async def db(self, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """Run a blocking store call off the event loop."""
        return await run_in_threadpool(fn, *args, **kw)

    def render(self, request: Request, name: str, status_code: int = 200, **ctx: Any) -> Response:
        s: Session | None = getattr(request.state, "session", None)
        flashes = list(s.flash) if s else []
        if s:
            s.flash.clear()
        editor = bool(s and s.can_edit)
        # Read-only supervisors see what callers said without the numbers and addresses in
        # it (the same redaction as exports), and caller numbers masked.
        ctx.update(session=s, user=s.user if s else None, role=s.role if s else None,
                   can_edit=editor, csrf=s.csrf if s else "", flashes=flashes,
                   caller=(lambda n: n or "") if editor else mask_number,
                   said=(lambda t: t or "") if editor else (lambda t: redact_text(t) or ""))
        return self.templates.TemplateResponse(request, name, ctx, status_code=status_code)


def _when(ts: float | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return time.strftime(fmt, time.localtime(ts)) if ts else "—"


def _duration(ms: int | None) -> str:
    if ms is None:
        return "—"
    s = int(round(ms / 1000))
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f} %"


def _num(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=jinja2.select_autoescape(["html"]),
                             undefined=jinja2.StrictUndefined)
    env.filters.update(when=_when, duration=_duration, pct=_pct, num=_num,
                       outcome=lambda o: OUTCOME_LABELS.get(o, "open") if o else "open",
                       urlq=lambda s: quote(str(s), safe=""))
    env.globals.update(confidence_bar=confidence_bar)
    return Jinja2Templates(env=env)


def page(console: Console, edit: bool = False) -> Callable[[Endpoint], Endpoint]:
    """Login required; POST forms checked for CSRF; ``edit``: editors only."""
    def deco(fn: Endpoint) -> Endpoint:
        @wraps(fn)
        async def handler(request: Request) -> Response:
            s = await console.session(request)
            if s is None or s.user is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"/login?next={quote(target, safe='')}", 303)
            request.state.session = s
            if request.method == "POST":
                form = await request.form()
                if not s.check_csrf(form.get("csrf")):     # type: ignore[arg-type]
                    return console.render(request, "error.html", 400,
                                          message="This form has expired or did not come from "
                                                  "this console. Reload the page and try again.")
                request.state.form = form
            if edit and not s.can_edit:
                return console.render(request, "error.html", 403,
                                      message="Your account is read-only: ask an editor.")
            return await fn(request)
        return handler
    return deco


def safe_next(target: str | None) -> str:
    """Where to go after login: only a path of this site (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


class SecurityHeaders:
    """Headers on every response, static files included: a strict CSP (no script at all, no
    inline style), no framing, no sniffing, no referrer leaks, no caching of pages."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope.get("path", "").startswith("/static/")

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"content-security-policy", CSP.encode()),
                            (b"x-content-type-options", b"nosniff"),
                            (b"x-frame-options", b"DENY"),
                            (b"referrer-policy", b"same-origin"),
                            (b"cross-origin-opener-policy", b"same-origin")]
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, wrapped)


def error_page(message: str, status: int) -> HTMLResponse:
    """A bare page for errors raised before any template can be rendered."""
    from html import escape

    return HTMLResponse(f"<!doctype html><title>callbot console</title><p>{escape(message)}</p>",
                        status_code=status)
