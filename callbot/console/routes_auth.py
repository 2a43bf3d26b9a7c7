"""Logging in and out.

The login form gets its CSRF token from an anonymous session; a successful login replaces
that session with a new one (new token), so a token planted before login is worthless.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from .auth import COOKIE
from .web import Console, page, safe_next


def routes(console: Console) -> list[Route]:
    async def login_form(request: Request, error: str | None = None, status: int = 200,
                         name: str = "") -> Response:
        s = await console.session(request)
        if s is not None and s.user is not None and error is None:
            return RedirectResponse(safe_next(request.query_params.get("next")), 303)
        if s is None or s.user is not None:
            s = console.sessions.new()          # anonymous: in memory, no database write
        request.state.session = None
        response = console.templates.TemplateResponse(
            request, "login.html", {"csrf": s.csrf, "error": error, "name": name,
                                    "next": safe_next(request.query_params.get("next")),
                                    "user": None, "flashes": [], "can_edit": False},
            status_code=status)
        console.set_cookie(request, response, s)
        return response

    async def login(request: Request) -> Response:
        form = await request.form()
        s = await console.session(request)
        name = str(form.get("name", "")).strip()
        if s is None or not s.check_csrf(form.get("csrf")):      # type: ignore[arg-type]
            return await login_form(request, "The login form expired: please try again.", 400,
                                    name)
        address = request.client.host if request.client else "unknown"
        result = await console.db(console.auth.login, name, str(form.get("password", "")),
                                  address)
        user = result.user
        if user is None and result.busy:
            return await login_form(request, "The console is busy checking other logins: "
                                             "please try again in a minute.", 503, name)
        if user is None:
            wrong = "Wrong user name or password. " if result.checked else ""
            if result.locked_s > 0:
                minutes = max(1, round(result.locked_s / 60))
                return await login_form(request, f"{wrong}Too many failed attempts: try again "
                                                 f"in {minutes} minute(s).", 429, name)
            return await login_form(request, wrong.strip(), 401, name)
        await console.db(console.sessions.drop, s.token)
        fresh = await console.db(console.sessions.new, user.name, user.role)
        target = safe_next(str(form.get("next", "/")))
        response = RedirectResponse(target, 303)
        console.set_cookie(request, response, fresh)
        return response

    @page(console)
    async def logout(request: Request) -> Response:
        await console.db(console.sessions.drop, request.state.session.token)
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                               secure=console.secure_cookie(request))
        return response

    return [Route("/login", login_form, methods=["GET"]),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"])]
