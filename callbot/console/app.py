"""The supervisor console as an ASGI application (Starlette), and the server that runs it.

Every asset is served from ``static/`` (no CDN, no script), pages are rendered on the
server with Jinja2, charts are inline SVG. Uvicorn serves it on [console] host:port,
127.0.0.1:8080 by default: publish it through an https reverse proxy, which also makes the
session cookie Secure (``cookie_secure = "auto"``).
"""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..config import Config
from ..errors import ConfigError
from ..transcripts.db import StoreError
from ..transcripts.store import TranscriptStore, open_store
from . import routes_auth, routes_callbacks, routes_calls, routes_export, routes_review
from .auth import Authenticator, Sessions
from .grouping import ReviewGroups
from .retrain import Retrainer
from .web import HERE, Console, SecurityHeaders, error_page, templates

log = logging.getLogger("callbot.console")


def create_app(config: Config, store: TranscriptStore | None = None) -> Starlette:
    """The console for ``config``; ``store`` defaults to the configured transcript store."""
    store = store or open_store(config)
    c = config.console
    console = Console(config=config, store=store,
                      sessions=Sessions(store, c.session_minutes, c.idle_minutes),
                      auth=Authenticator(c, store), retrainer=Retrainer(config),
                      templates=templates(), groups=ReviewGroups())

    async def store_down(request: Request, exc: Exception) -> Response:
        log.error("console: %s", exc)
        return error_page(f"The transcripts database is unavailable: {exc}", 503)

    async def favicon(request: Request) -> Response:
        from starlette.responses import FileResponse

        return FileResponse(HERE / "static" / "favicon.svg", media_type="image/svg+xml")

    routes = (routes_auth.routes(console) + routes_calls.routes(console)
              + routes_review.routes(console) + routes_export.routes(console)
              + routes_callbacks.routes(console)
              + [Route("/favicon.ico", favicon),
                 Mount("/static", StaticFiles(directory=HERE / "static"), name="static")])
    app = Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)],
                    exception_handlers={StoreError: store_down})
    app.state.console = console
    return app


def serve(config: Config, host: str | None = None, port: int | None = None) -> None:
    """Run the console until interrupted."""
    import uvicorn

    if not config.console.users:
        raise ConfigError("no console user is configured: add a [[console.users]] table "
                          "(name, role, password_hash from `callbot console hash-password`)")
    app = create_app(config)
    host = host or config.console.host
    port = port or config.console.port
    print(f"callbot console on http://{host}:{port}/ "
          f"({len(config.console.users)} user(s); Ctrl-C stops it)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", proxy_headers=True,
                forwarded_allow_ips="127.0.0.1", server_header=False)
