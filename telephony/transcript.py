"""Transcripts of SIP calls: the worker's side of ``callbot.transcripts``.

One store per worker process (opened with ``strict=False``: a database that is down must
not stop calls, the store writes once it is back), one :class:`CallRecorder` per answered
call. Recording is best effort: any failure here is logged and the call goes on.
"""

from __future__ import annotations

import logging
import re
import socket
import uuid

from callbot.config import Config
from callbot.transcripts import CallInfo, CallRecorder, TranscriptStore, open_store

log = logging.getLogger("telephony.transcript")

_USER = re.compile(r"sips?:([^@;>?\s:]+)@|tel:([^;>?\s]+)", re.IGNORECASE)


def caller_number(from_uri: str) -> str | None:
    """The user part of the From URI ('"X" <sip:0612@h>' → '0612'); None if there is none.

    ``tel:`` URIs give their number too; an anonymous caller gives "anonymous" as is.
    """
    m = _USER.search(from_uri or "")
    return (m.group(1) or m.group(2)) if m else None


def worker_name(port: int) -> str:
    """Stable across restarts of the same slot: a crashed slot's open calls get closed."""
    return f"{socket.gethostname()}/worker-{port}"


def open_worker_store(config: Config, port: int) -> TranscriptStore | None:
    """The worker's store; what a previous process of this slot left in its journal is
    written from the start, not from the first call."""
    try:
        return open_store(config, strict=False, worker=worker_name(port))
    except Exception:   # a bad URL or driver: no transcripts, but calls are still answered
        log.exception("transcripts: store not opened; calls go on unrecorded")
        return None


def new_recorder(store: TranscriptStore | None, sip_call_id: str, from_uri: str,
                 port: int) -> CallRecorder | None:
    """The recorder of a call just answered (its own id: SIP call ids can repeat)."""
    if store is None:
        return None
    try:
        info = CallInfo(uuid.uuid4().hex, sip_call_id or None, caller_number(from_uri),
                        worker=worker_name(port))
        return CallRecorder(store, info)
    except Exception:
        log.exception("transcripts: call %s not recorded", sip_call_id)
        return None
