"""The dashboard, the calls list, one call's page and its recording."""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ..errors import KbError
from ..kb import Roles, load_kb
from ..transcripts import stats as stats_mod
from ..transcripts.records import OUTCOMES
from ..transcripts.redact import redact_call, redact_turn
from ..transcripts.store import CallFilter
from .charts import day_bars, hbars, meter
from .web import Console, page

PERIODS = (7, 30, 90, 365)
# The caller-perceived wait and its parts (stats.PARTS), as the dashboard names them.
WAIT_PARTS = (("total", "Total", "end of speech → first answer audio"),
              ("end_of_turn", "End of turn", "silence waited before taking the turn"),
              ("recognition", "Recognition", "decode after the end of speech"),
              ("answer", "Answer", "transcript → first answer audio queued"))


def _midnight(d: date) -> float:
    return datetime(d.year, d.month, d.day).timestamp()


def _parse_filters(q: Any) -> tuple[CallFilter, dict[str, str], list[str]]:
    """The calls list's query string → a filter, the values to show back, the errors."""
    errors: list[str] = []
    shown = {k: q.get(k, "").strip() for k in ("from", "to", "outcome", "intent",
                                               "min_confidence")}
    since = until = min_conf = None
    try:
        if shown["from"]:
            since = _midnight(date.fromisoformat(shown["from"]))
        if shown["to"]:
            until = _midnight(date.fromisoformat(shown["to"]) + timedelta(days=1))
    except ValueError:
        errors.append("Dates are written YYYY-MM-DD.")
    if shown["outcome"] and shown["outcome"] not in OUTCOMES + ("open",):
        errors.append(f"Unknown outcome {shown['outcome']!r}.")
        shown["outcome"] = ""
    if shown["min_confidence"]:
        try:
            min_conf = float(shown["min_confidence"].replace(",", "."))
            if not 0 <= min_conf <= 1:
                raise ValueError
        except ValueError:
            errors.append("The minimum confidence is a number between 0 and 1.")
            min_conf = None
    return (CallFilter(since=since, until=until, outcome=shown["outcome"] or None,
                       intent=shown["intent"] or None, min_confidence=min_conf),
            shown, errors)


def routes(console: Console) -> list[Route]:
    store = console.store

    def period(request: Request) -> tuple[int, float, float]:
        try:
            days = int(request.query_params.get("days", "30"))
        except ValueError:
            days = 30
        days = days if days in PERIODS else 30
        today = date.today()
        return days, _midnight(today - timedelta(days=days - 1)), _midnight(
            today + timedelta(days=1))

    async def roles() -> Roles | None:
        """The KB's conversation intents (kept out of the top intents), read now: an edit of
        the KB shows at once; a KB that does not load hides nothing."""
        try:
            return (await console.db(load_kb, console.config.paths.kb)).roles
        except KbError:
            return None

    @page(console)
    async def dashboard(request: Request) -> Response:
        days, since, until = period(request)
        s = await console.db(stats_mod.compute, store, since, until, await roles())
        charts = {
            "per_day": day_bars(s.per_day),
            "transfers": hbars(s.transfers, "Transfers by reason", "No transfer."),
            "intents": hbars(s.top_intents, "Top intents", "No understood question yet."),
            "outcomes": hbars([(k, v) for k, v in s.outcomes.items()], "Outcomes"),
            "containment": meter(s.containment_rate, "Containment rate"),
            "not_understood": meter(s.not_understood_rate, "Not-understood rate"),
        }
        return console.render(request, "dashboard.html", s=s, days=days, periods=PERIODS,
                              charts=charts, wait_parts=WAIT_PARTS, nav="dashboard")

    @page(console)
    async def api_stats(request: Request) -> Response:
        _, since, until = period(request)
        s = await console.db(stats_mod.compute, store, since, until, await roles())
        return JSONResponse(stats_mod.as_dict(s))

    @page(console)
    async def calls(request: Request) -> Response:
        f, shown, errors = _parse_filters(request.query_params)
        try:
            page_no = max(1, int(request.query_params.get("page", "1")))
        except ValueError:
            page_no = 1
        size = console.config.console.page_size
        rows, total = await console.db(store.list_calls, f, size, (page_no - 1) * size)
        pages = max(1, -(-total // size))
        base = urlencode({k: v for k, v in shown.items() if v})
        return console.render(request, "calls.html", calls=rows, total=total, page=page_no,
                              pages=pages, shown=shown, errors=errors, outcomes=OUTCOMES,
                              query=base, nav="calls")

    @page(console)
    async def call(request: Request) -> Response:
        call_id = request.query_params.get("id", "")
        row = await console.db(store.get_call, call_id)
        if row is None:
            return console.render(request, "error.html", 404,
                                  message=f"No call {call_id!r} in the transcripts.")
        turns = await console.db(store.turns, call_id)
        if not request.state.session.can_edit:
            # what the caller said, without their numbers and addresses (as in exports);
            # the caller's number stays for the page to mask
            row = {**redact_call(row), "caller_number": row["caller_number"]}
            turns = [redact_turn(t) for t in turns]
        recording = (request.state.session.can_edit and bool(row["recording"])
                     and (store.recordings / row["recording"]).is_file())
        return console.render(request, "call.html", call=row, turns=turns,
                              recording=recording, nav="calls",
                              offset0=turns[0]["at"] if turns else row["started_at"])

    @page(console)
    async def recording(request: Request) -> Response:
        if not request.state.session.can_edit:
            return console.render(request, "error.html", 403,
                                  message="Recordings are for editors: your account is "
                                          "read-only. Ask an editor to listen to this call.")
        row = await console.db(store.get_call, request.query_params.get("id", ""))
        if row is None or not row["recording"]:
            return console.render(request, "error.html", 404, message="No recording.")
        root = store.recordings.resolve()
        path = (root / row["recording"]).resolve()
        if root not in path.parents or not path.is_file():
            return console.render(request, "error.html", 404, message="No recording.")
        return FileResponse(path, media_type="audio/wav",
                            filename=f"call-{time.strftime('%Y%m%d-%H%M%S', time.localtime(row['started_at']))}.wav")

    return [Route("/", dashboard), Route("/api/stats", api_stats), Route("/calls", calls),
            Route("/call", call), Route("/call/recording", recording)]
