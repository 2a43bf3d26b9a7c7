"""Transcripts exported from the console, for analysts: redacted for every supervisor, with
personal data for editors only.

The export takes the filters of the calls list (same query string), so "export what I
see" is one link. A read-only account asking for personal data is refused, not silently
given a redacted file: whoever asked must know what the file holds.
"""

from __future__ import annotations

import io

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..transcripts.export import may_export_unredacted, write_csv, write_jsonl
from .routes_calls import _parse_filters
from .web import Console, page

MEDIA_TYPES = {"jsonl": "application/x-ndjson; charset=utf-8", "csv": "text/csv; charset=utf-8"}


def routes(console: Console) -> list[Route]:
    store = console.store

    def build(f, fmt: str, redact: bool) -> str:
        out = io.StringIO()
        (write_jsonl if fmt == "jsonl" else write_csv)(store.iter_calls(f), out, redact=redact)
        return out.getvalue()

    @page(console)
    async def export(request: Request) -> Response:
        q = request.query_params
        fmt = q.get("format", "jsonl")
        if fmt not in MEDIA_TYPES:
            return console.render(request, "error.html", 400,
                                  message="The export format is jsonl or csv.")
        redact = q.get("redact", "1") != "0"
        if not redact and not may_export_unredacted(request.state.session.role):
            return console.render(request, "error.html", 403,
                                  message="Your account is read-only: its exports are "
                                          "redacted. Ask an editor for personal data.")
        f, _shown, errors = _parse_filters(q)
        if errors:
            return console.render(request, "error.html", 400, message=" ".join(errors))
        body = await console.db(build, f, fmt, redact)
        name = f"calls{'' if redact else '-personal'}.{fmt}"
        return Response(body, media_type=MEDIA_TYPES[fmt],
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    return [Route("/export", export)]
