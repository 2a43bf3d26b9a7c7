"""Hand-made SIP over UDP, without pjsua: health checks and hostile-input tests.

A supervisor needs to ask "is this worker's SIP stack answering?" without loading pjsua2
(one Endpoint per process), and tests need to send what no well-behaved user agent sends:
an INVITE from a foreign address, a malformed datagram. Both are a few lines of text.
"""

from __future__ import annotations

import secrets
import socket
import time


def _tag() -> str:
    return secrets.token_hex(6)


def request(method: str, host: str, port: int, local: tuple[str, int], call_id: str,
            body: str = "", extra: str = "") -> bytes:
    lhost, lport = local
    ctype = "Content-Type: application/sdp\r\n" if body else ""
    contact = f"Contact: <sip:probe@{lhost}:{lport}>\r\n" if method == "INVITE" else ""
    text = (f"{method} sip:callbot@{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {lhost}:{lport};branch=z9hG4bK{_tag()};rport\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:probe@{lhost}>;tag={_tag()}\r\n"
            f"To: <sip:callbot@{host}:{port}>\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: 1 {method}\r\n"
            f"{contact}{ctype}{extra}"
            f"Content-Length: {len(body.encode())}\r\n\r\n{body}")
    return text.encode()


def sdp(address: str, rtp_port: int) -> str:
    return (f"v=0\r\no=probe 1 1 IN IP4 {address}\r\ns=probe\r\nc=IN IP4 {address}\r\n"
            f"t=0 0\r\nm=audio {rtp_port} RTP/AVP 8 0\r\na=rtpmap:8 PCMA/8000\r\n"
            f"a=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n")


def status_of(datagram: bytes) -> int:
    line = datagram.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split()
    if len(parts) >= 2 and parts[0] == "SIP/2.0" and parts[1].isdigit():
        return int(parts[1])
    return 0


def exchange(method: str, host: str, port: int, bind: str = "127.0.0.1",
             timeout: float = 2.0, body_for: str | None = None) -> int:
    """Send one request; return the first final status (0 if none came in time).

    An INVITE that gets a 2xx is not ACKed or hung up: use it for refusals only.
    """
    return status_of(final_response(method, host, port, bind, timeout))


def final_response(method: str, host: str, port: int, bind: str = "127.0.0.1",
                   timeout: float = 2.0) -> bytes:
    """Like :func:`exchange`, but the whole final response (b"" if none came in time):
    a test of the front needs its headers (Retry-After)."""
    call_id = f"{_tag()}@probe"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((bind, 0))
        local = s.getsockname()
        body = sdp(bind, 4000) if method == "INVITE" else ""
        s.sendto(request(method, host, port, local, call_id, body), (host, port))
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return b""
            s.settimeout(left)
            try:
                data, _ = s.recvfrom(65535)
            except socket.timeout:
                return b""
            code = status_of(data)
            if code >= 200:
                if method == "INVITE":    # ACK the final non-2xx (same branch is fine here)
                    s.sendto(request("ACK", host, port, local, call_id), (host, port))
                return data


def options(host: str, port: int, bind: str = "127.0.0.1", timeout: float = 2.0) -> int:
    return exchange("OPTIONS", host, port, bind, timeout)


def send_raw(data: bytes, host: str, port: int, bind: str = "127.0.0.1") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((bind, 0))
        s.sendto(data, (host, port))


STUCK_DECODE_S = 60.0   # one utterance decodes in 0.2-3 s: a decode this old is a hang


def recognition(path: str, timeout: float = 2.0) -> bool:
    """Whether the recognition service at ``path`` answers a ping and its decoder moves (a
    wedged one does not answer, a hung decode shows its age)."""
    import socket

    from callbot.recognition.wire import WireError, receive, send

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            send(sock, {"op": "ping", "id": 1})
            header, _ = receive(sock)
            return (header.get("id") == 1 and "busy" in header
                    and float(header.get("decoding_s", 0.0)) < STUCK_DECODE_S)
    except (OSError, WireError):
        return False
