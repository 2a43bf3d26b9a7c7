"""Supervisor passwords: scrypt hashes for the configuration file, checked in constant time.

The hash string carries its own parameters (``scrypt$N$r$p$salt$hash``), so they can be
raised later without invalidating the accounts already configured: a hash made with a lower
N still verifies, and :func:`needs_upgrade` tells the login to store a stronger one.

N = 2^17, r = 8 (current guidance for scrypt) costs 128 MiB and about half a second of one
core per check. The console runs on the box that answers calls, so at most
``HASH_SLOTS`` checks run at once (a semaphore); further logins wait their turn instead of
taking the memory and the cores the calls need, and give up after ``HASH_WAIT_S`` with
:class:`HashingBusy` rather than pile up behind a flood of login attempts.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import threading

from ..errors import CallbotError

N, R, P = 2 ** 17, 8, 1          # 128 MiB and about 0.5 s per check: slows guessing down
DKLEN = 32
MIN_LENGTH = 10
HASH_SLOTS = 1                   # scrypt checks running at once (each takes N * r * 128 bytes)
HASH_WAIT_S = 10.0               # a check waits this long at most for its turn

_slots = threading.BoundedSemaphore(HASH_SLOTS)


class HashingBusy(CallbotError):
    """Too many password checks are waiting: the caller should try again shortly."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _maxmem(n: int, r: int, p: int) -> int:
    """What OpenSSL's scrypt allocates (V: 128·r·(N+2), B: 128·r·p), plus 1 MiB of slack;
    its default limit (32 MiB) refuses N = 2^17."""
    return 128 * r * (n + 2) + 128 * r * p + (1 << 20)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    if not _slots.acquire(timeout=HASH_WAIT_S):
        raise HashingBusy("too many logins are being checked right now: try again in a "
                          "minute")
    try:
        return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=dklen,
                              maxmem=_maxmem(n, r, p))
    finally:
        _slots.release()


def hash_password(password: str, n: int = N, r: int = R, p: int = P) -> str:
    """The value of ``password_hash`` in a [[console.users]] table."""
    salt = os.urandom(16)
    digest = _scrypt(password, salt, n, r, p, DKLEN)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored``; False for a malformed hash too.
    Raises HashingBusy when no check slot came free in time."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p), len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def needs_upgrade(stored: str) -> bool:
    """True for a hash weaker than new ones (N or r below today's): rehash it at login."""
    try:
        scheme, n, r, *_ = stored.split("$")
        return scheme == "scrypt" and (int(n) < N or int(r) < R)
    except ValueError:
        return False


_dummy_lock = threading.Lock()


@functools.cache
def _dummy() -> str:
    return hash_password("not a password of anyone")


def dummy_hash() -> str:
    """Checked when the user name is unknown, so that a wrong name takes as long as a wrong
    password and does not reveal which accounts exist. Made once, on first use (the console
    makes it at start): importing this module costs no 128 MiB hash."""
    with _dummy_lock:
        return _dummy()
