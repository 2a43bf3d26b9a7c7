"""What the advisor's side receives with a transfer: X-Callbot-* headers, ASCII only.

The headers go twice: on the REFER itself (for a B2BUA or proxy that reads it) and as
header parameters of the Refer-To URI, because RFC 3261 §19.1.1 says the transferee copies
those into the INVITE it sends to the queue; that INVITE is what the advisor's system sees.
SIP header values must be one line; the summary is French with accents and « », so it is
folded to ASCII (é → e) and cut to a length that fits a UDP datagram with room to spare.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

from callbot.events import Transfer

SUMMARY_MAX = 300
HEADER_PREFIX = "X-Callbot-"
_PUNCT = str.maketrans({"«": '"', "»": '"', "’": "'", "‘": "'", "“": '"', "”": '"',
                        "–": "-", "—": "-", "…": "...", "\u00a0": " ", "\u202f": " "})


def ascii_safe(text: str, limit: int = SUMMARY_MAX) -> str:
    """One printable ASCII line: accents dropped, quotes straightened, controls removed."""
    text = re.sub(r"«\s*", "«", re.sub(r"\s*»", "»", text))   # French spacing inside « »
    text = unicodedata.normalize("NFKD", text.translate(_PUNCT))
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = text.encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", text)
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[:limit - 3].rstrip() + "..."
    return text


def context_headers(transfer: Transfer, call_id: str) -> list[tuple[str, str]]:
    """(name, value) pairs, in a fixed order; absent values are sent as "-"."""
    ctx = transfer.context
    return [
        (HEADER_PREFIX + "Reason", ascii_safe(transfer.reason, 64) or "-"),
        (HEADER_PREFIX + "Intent", ascii_safe(ctx.intent or "", 64) or "-"),
        (HEADER_PREFIX + "Siren", ctx.siren if ctx.siren and ctx.siren.isdigit() else "-"),
        (HEADER_PREFIX + "Call-Id", ascii_safe(call_id, 128) or "-"),
        (HEADER_PREFIX + "Summary", ascii_safe(ctx.summary) or "-"),
    ]


def refer_target(queue_uri: str, headers: list[tuple[str, str]]) -> str:
    """``<sip:queue@host?X-Callbot-Reason=...&...>``: the URI with escaped header params."""
    base = queue_uri.strip().strip("<>")
    if "?" in base:  # the configured URI already carries headers: keep them, add ours
        base, existing = base.split("?", 1)
        params = [existing]
    else:
        params = []
    params += [f"{name}={quote(value, safe='')}" for name, value in headers]
    return f"<{base}?{'&'.join(params)}>"
