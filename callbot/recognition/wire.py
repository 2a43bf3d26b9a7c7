"""Messages between workers and the recognition service: a JSON header and raw bytes.

A frame is ``!II`` (header length, payload length), the UTF-8 JSON header, then the
payload (16-bit PCM, or float32 vectors). Binary audio is not base64-encoded: a 5 s
utterance at 8 kHz is 80 kB and crosses a Unix socket in well under a millisecond.
"""

from __future__ import annotations

import json
import socket
import struct

HEAD = struct.Struct("!II")
MAX_HEADER = 1 << 20
MAX_PAYLOAD = 64 << 20     # 30 s of 16 kHz PCM is 960 kB; vectors of 256 texts are 400 kB


class WireError(Exception):
    """The other end sent something that is not a frame, or went away."""


def send(sock: socket.socket, header: dict, payload: bytes = b"") -> None:
    head = json.dumps(header, separators=(",", ":")).encode()
    sock.sendall(HEAD.pack(len(head), len(payload)) + head + payload)


def _exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise WireError("connection closed")
        buf += chunk
    return bytes(buf)


def receive(sock: socket.socket) -> tuple[dict, bytes]:
    """The next frame; WireError when the connection closes or the frame is malformed."""
    hlen, plen = HEAD.unpack(_exact(sock, HEAD.size))
    if hlen > MAX_HEADER or plen > MAX_PAYLOAD:
        raise WireError(f"frame too large ({hlen} + {plen} bytes)")
    try:
        header = json.loads(_exact(sock, hlen))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"malformed header: {exc}") from None
    if not isinstance(header, dict):
        raise WireError("malformed header: not an object")
    return header, _exact(sock, plen) if plen else b""
