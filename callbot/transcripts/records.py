"""The vocabulary of transcripts: who called, how a call ended, what counts as an answer.

Kept apart from the storage so that the SIP side, the simulator, the console and the
exports name outcomes the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

# How a call ended.
RESOLVED = "resolved"              # the caller said goodbye after the bot's help
TRANSFERRED = "transferred"        # handed to a human advisor (reason, target, result)
CALLER_HANGUP = "caller_hangup"    # the caller hung up before the bot ended the call
NO_INPUT = "no_input"              # the caller stayed silent, the bot hung up
ERROR = "error"                    # the call broke (or was left open by a crash)
OUTCOMES = (RESOLVED, TRANSFERRED, CALLER_HANGUP, NO_INPUT, ERROR)
OUTCOME_LABELS = {RESOLVED: "resolved", TRANSFERRED: "transferred",
                  CALLER_HANGUP: "hung up by caller", NO_INPUT: "no input", ERROR: "error"}

# Review queue actions.
ASSIGNED, OUT_OF_SCOPE_ACTION, DISMISSED = "assigned", "out_of_scope", "dismissed"
REVIEW_ACTIONS = (ASSIGNED, OUT_OF_SCOPE_ACTION, DISMISSED)


def local_day(ts: float) -> str:
    """The local calendar date of a timestamp: what "calls per day" groups by."""
    return time.strftime("%Y-%m-%d", time.localtime(ts))


@dataclass(frozen=True)
class CallInfo:
    """What the carrier of a call knows when it starts.

    ``worker`` must name the process slot stably (e.g. "host/worker-0"): a call it left
    open when it crashed is closed as an error when the same worker records again.
    """

    call_id: str
    sip_call_id: str | None = None
    caller_number: str | None = None
    worker: str = "local"
    started_at: float = field(default_factory=time.time)
