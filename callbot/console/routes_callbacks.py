"""The "Rappels" page: callback requests left by failed transfers, and "done" for editors.

Advisors call back the open requests, oldest first, and mark each one done; read-only users
see the list with the numbers masked, as on the calls pages. Marking is idempotent: a
request two editors mark at once is done once (the second one is told).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ..transcripts.store import CALLBACK_OPEN, CALLBACK_STATUSES
from .web import Console, page


def routes(console: Console) -> list[Route]:
    store = console.store

    @page(console)
    async def callbacks(request: Request) -> Response:
        status = request.query_params.get("status", CALLBACK_OPEN)
        if status not in CALLBACK_STATUSES + ("all",):
            status = CALLBACK_OPEN
        rows = await console.db(store.list_callbacks, None if status == "all" else status)
        counts = await console.db(store.callback_counts)
        return console.render(request, "callbacks.html", callbacks=rows, counts=counts,
                              status=status, nav="callbacks")

    @page(console, edit=True)
    async def callback_done(request: Request) -> Response:
        s = request.state.session
        callback_id = str(request.state.form.get("id", ""))
        if await console.db(store.mark_callback_done, callback_id, s.user):
            s.flash.append(("ok", "Callback marked done."))
        else:
            found = await console.db(store.get_callback, callback_id)
            s.flash.append(("error", f"That callback was already marked done by "
                                     f"{found['done_by']}." if found else
                                     "No such callback request: reload the page."))
        return RedirectResponse("/callbacks", 303)

    return [Route("/callbacks", callbacks, methods=["GET"]),
            Route("/callbacks/done", callback_done, methods=["POST"])]
