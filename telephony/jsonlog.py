"""The SIP side's one log format: one JSON object per line, ``{"t": ..., "event": ..., ...}``.

Workers, the supervisor and the test caller all speak it on stdout: the supervisor forwards
its workers' lines (adding ``worker``), tests and the benchmarks read them back, and a
log shipper needs no parser of its own.

Logs are shipped, kept and read far more widely than the transcript store, so the bot's
lines carry ids, intents and outcomes only: what a caller said or typed, their number, a
SIREN and the advisor's summary are fields of :meth:`JsonLog.personal`, written only when
``[transcripts] debug_personal_data`` is on (troubleshooting).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, Callable, TextIO


class JsonLog:
    """Thread-safe JSON-lines writer. A closed or broken stream loses the line, never the call.

    ``clock``: the ``t`` of each line (wall-clock seconds by default; the test caller uses
    seconds since it started). ``fields``: added to every line it writes (e.g. ``source``).
    ``keep``: also keep every record in :attr:`records` (the test caller's own report).
    ``personal_data``: write the fields given through :meth:`personal` (off by default).
    """

    def __init__(self, stream: TextIO | None = None, clock: Callable[[], float] = time.time,
                 keep: bool = False, personal_data: bool = False, **fields: Any) -> None:
        self.stream = stream or sys.stdout
        self.clock = clock
        self.personal_data = personal_data
        self.fields = fields
        self.records: list[dict[str, Any]] | None = [] if keep else None
        self._lock = threading.Lock()

    def __call__(self, event: str, **fields: Any) -> None:
        self.write({"t": round(self.clock(), 3), "event": event, **self.fields, **fields})

    def personal(self, **fields: Any) -> dict[str, Any]:
        """``fields`` if personal data may be logged, nothing otherwise: the one gate of
        personal data into the logs, e.g. ``log("dtmf", call=c, **log.personal(digit=d))``."""
        return fields if self.personal_data else {}

    def write(self, record: dict[str, Any]) -> None:
        """One record as it is (e.g. a worker's line being forwarded)."""
        line = json.dumps(record, ensure_ascii=False, default=str)
        with self._lock:
            if self.records is not None:
                self.records.append(record)
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass
