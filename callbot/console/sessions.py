"""Who is logged in: server-side sessions kept in the transcript database.

The cookie carries a random token and nothing else; the database keeps only its SHA-256,
so reading the table does not let anyone in. A session ends at logout, ``session_minutes``
after login (absolute), or ``idle_minutes`` after its last request (idle), whichever comes
first. Being in the database, a login survives a restart of the console and is shared by
several consoles on one database.

Anonymous sessions exist only to carry the login form's CSRF token: they stay in memory
(at most ``MAX_ANONYMOUS``), so a flood of GET /login never writes to the database. Flash
messages (shown once, on the page after a form) also stay in memory.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from ..transcripts.db import Connection
from ..transcripts.store import TranscriptStore

COOKIE = "callbot_session"
MAX_ANONYMOUS = 5000     # login-form sessions kept at most (a flood of GET /login stays small)
MAX_FLASHES = 5000       # sessions with messages waiting to be shown
ANONYMOUS_S = 3600       # a login form stays valid this long
TOUCH_S = 30             # last_seen is written at most this often per session
EDITOR, READONLY = "editor", "readonly"


def token_hash(token: str) -> str:
    """What the database keeps of a session token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass
class Session:
    token: str
    csrf: str
    expires: float                   # absolute end (the cookie's max-age)
    user: str | None = None
    role: str | None = None
    flash: list[tuple[str, str]] = field(default_factory=list)   # (level, message)

    @property
    def can_edit(self) -> bool:
        return self.role == EDITOR

    def check_csrf(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf, str(token))


class Sessions:
    """Logged-in sessions in the ``console_sessions`` table; anonymous ones in memory."""

    def __init__(self, store: TranscriptStore, minutes: int, idle_minutes: int):
        self.store = store
        self.lifetime = minutes * 60
        self.idle = idle_minutes * 60
        self._anonymous: OrderedDict[str, Session] = OrderedDict()
        self._flashes: OrderedDict[str, list[tuple[str, str]]] = OrderedDict()
        self._lock = threading.Lock()

    def new(self, user: str | None = None, role: str | None = None) -> Session:
        """A fresh session (new token and CSRF token): anonymous, or logged in as ``user``."""
        now = time.time()
        s = Session(token=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32),
                    expires=now + (self.lifetime if user else ANONYMOUS_S), user=user,
                    role=role)
        if user is None:
            with self._lock:
                self._anonymous[s.token] = s
                while len(self._anonymous) > MAX_ANONYMOUS:
                    self._anonymous.popitem(last=False)          # the oldest first
            return s

        def insert(conn: Connection) -> None:
            conn.execute("DELETE FROM console_sessions WHERE expires_at < ? OR last_seen < ?",
                         (now, now - self.idle))
            conn.execute("INSERT INTO console_sessions (token_hash, csrf, user_name, role, "
                         "created_at, last_seen, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (token_hash(s.token), s.csrf, user, role, now, now, s.expires))
        self.store.write(insert)
        return s

    def get(self, token: str | None) -> Session | None:
        """The live session of ``token``; None when unknown, ended, or idle for too long
        (an expired one is deleted)."""
        if not token:
            return None
        now = time.time()
        with self._lock:
            anonymous = self._anonymous.get(token)
            if anonymous is not None:
                if anonymous.expires >= now:
                    return anonymous
                del self._anonymous[token]
                return None
        key = token_hash(token)
        row = self.store.read(lambda conn: conn.one(
            "SELECT csrf, user_name, role, last_seen, expires_at FROM console_sessions "
            "WHERE token_hash = ?", (key,)))
        if row is None:
            return None
        if row["expires_at"] < now or row["last_seen"] + self.idle < now:
            self._delete(key)
            return None
        if now - row["last_seen"] >= TOUCH_S:
            self.store.write(lambda conn: conn.execute(
                "UPDATE console_sessions SET last_seen = ? WHERE token_hash = ?", (now, key)))
        with self._lock:
            flash = self._flashes.setdefault(key, [])
            self._flashes.move_to_end(key)
            while len(self._flashes) > MAX_FLASHES:
                self._flashes.popitem(last=False)
        return Session(token=token, csrf=row["csrf"], expires=row["expires_at"],
                       user=row["user_name"], role=row["role"], flash=flash)

    def drop(self, token: str) -> None:
        """Logout (or the login form's session replaced by a logged-in one)."""
        with self._lock:
            if self._anonymous.pop(token, None) is not None:
                return
        self._delete(token_hash(token))

    def _delete(self, key: str) -> None:
        with self._lock:
            self._flashes.pop(key, None)
        self.store.write(lambda conn: conn.execute(
            "DELETE FROM console_sessions WHERE token_hash = ?", (key,)))
