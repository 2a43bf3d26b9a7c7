"""Supervisor passwords: scrypt hashes for the configuration file, checked in constant time.

The hash string carries its own parameters (``scrypt$N$r$p$salt$hash``), so they can be
raised later without invalidating the accounts already configured.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

N, R, P = 2 ** 14, 8, 1          # about 50 ms and 16 MiB per check: slows guessing down
DKLEN = 32
MIN_LENGTH = 10


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, n: int = N, r: int = R, p: int = P) -> str:
    """The value of ``password_hash`` in a [[console.users]] table."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=DKLEN,
                            maxmem=256 * n * r)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored``; False for a malformed hash too."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), n=int(n),
                             r=int(r), p=int(p), dklen=len(expected), maxmem=256 * int(n) * int(r))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


# Checked when the user name is unknown, so that a wrong name takes as long as a wrong
# password and does not reveal which accounts exist.
DUMMY_HASH = hash_password("not a password of anyone")
