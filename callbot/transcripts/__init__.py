"""Call transcripts: every call recorded turn by turn, durably, without slowing calls down.

Public API (the SIP worker, the simulator, the console)::

    from callbot.transcripts import CallInfo, CallRecorder, open_store, purge

    store = open_store(config)                      # once per process
    recorder = CallRecorder(store, CallInfo(call_id, sip_call_id, caller_number, worker))
    session = CallSession(engines, call_id, observers=[recorder])
    ...
    recorder.transfer_result(target, result)        # the SIP side knows how a transfer went
    recorder.close()                                # or close("error", detail="...")

    purge(config)                                    # retention, once a day
    journal_backlog(config)                          # writes waiting for the database
"""

from .db import StoreError
from .journal import journal_backlog
from .recorder import CallRecorder
from .records import (
                      CALLER_HANGUP,
                      ERROR,
                      NO_INPUT,
                      OUTCOMES,
                      RESOLVED,
                      TRANSFERRED,
                      CallInfo,
)
from .retention import PurgeReport, purge
from .store import CallFilter, TranscriptStore, open_store

__all__ = [
                      "CALLER_HANGUP",
                      "ERROR",
                      "NO_INPUT",
                      "OUTCOMES",
                      "RESOLVED",
                      "TRANSFERRED",
                      "CallFilter",
                      "CallInfo",
                      "CallRecorder",
                      "PurgeReport",
                      "StoreError",
                      "TranscriptStore",
                      "journal_backlog",
                      "open_store",
                      "purge",
]
