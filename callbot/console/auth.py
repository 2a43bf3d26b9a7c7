"""Who is logged in, and the guards around it: sessions, CSRF tokens, login lockout.

Sessions live on the server (a random token in the cookie, nothing else), so logging out
or restarting the console really ends them, and the cookie carries no data to forge.
Every form carries the session's CSRF token; SameSite=Strict is the second lock. Failed
logins are counted per user name and per client address, and both are locked out after
[console] max_failures, so a guesser can neither hammer one account nor spray many.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

from ..config import ConsoleConfig, ConsoleUser
from .passwords import DUMMY_HASH, verify_password

COOKIE = "callbot_session"
MAX_ANONYMOUS = 5000     # login-form sessions kept at most (a flood of GET /login stays small)
EDITOR, READONLY = "editor", "readonly"


@dataclass
class Session:
    token: str
    csrf: str
    expires: float
    user: str | None = None
    role: str | None = None
    flash: list[tuple[str, str]] = field(default_factory=list)   # (level, message)

    @property
    def can_edit(self) -> bool:
        return self.role == EDITOR

    def check_csrf(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf, str(token))


class Sessions:
    """Server-side sessions; anonymous ones exist only to carry the login form's CSRF token."""

    def __init__(self, minutes: int):
        self.lifetime = minutes * 60
        self._by_token: dict[str, Session] = {}
        self._lock = threading.Lock()

    def new(self, user: str | None = None, role: str | None = None) -> Session:
        lifetime = self.lifetime if user else 3600
        s = Session(token=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32),
                    expires=time.time() + lifetime, user=user, role=role)
        with self._lock:
            self._expire()
            anonymous = [t for t, x in self._by_token.items() if x.user is None]
            for token in anonymous[:max(0, len(anonymous) - MAX_ANONYMOUS + 1)]:
                del self._by_token[token]          # the oldest first (dicts keep order)
            self._by_token[s.token] = s
        return s

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        with self._lock:
            s = self._by_token.get(token)
            if s is not None and s.expires < time.time():
                del self._by_token[token]
                return None
            return s

    def drop(self, token: str) -> None:
        with self._lock:
            self._by_token.pop(token, None)

    def _expire(self) -> None:
        now = time.time()
        for token in [t for t, s in self._by_token.items() if s.expires < now]:
            del self._by_token[token]


class LoginGuard:
    """Failed attempts per key (a user name, an address); a key is locked once it has
    failed max_failures times, for lockout_s."""

    def __init__(self, max_failures: int, lockout_s: float):
        self.max_failures = max_failures
        self.lockout_s = lockout_s
        self._failures: dict[str, int] = {}
        self._locked_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def locked_for(self, *keys: str) -> float:
        """Seconds left of the longest lockout among ``keys`` (0: not locked)."""
        now = time.time()
        with self._lock:
            return max((self._locked_until.get(k, 0.0) - now for k in keys), default=0.0) \
                if keys else 0.0

    def failed(self, *keys: str) -> None:
        with self._lock:
            for k in keys:
                n = self._failures.get(k, 0) + 1
                if n >= self.max_failures:
                    self._locked_until[k] = time.time() + self.lockout_s
                    n = 0
                self._failures[k] = n

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for k in keys:
                self._failures.pop(k, None)


class Authenticator:
    """The configured users and the lockout in front of them."""

    def __init__(self, config: ConsoleConfig):
        self.users: dict[str, ConsoleUser] = {u.name: u for u in config.users}
        self.guard = LoginGuard(config.max_failures, config.lockout_minutes * 60)

    def login(self, name: str, password: str, address: str) -> tuple[ConsoleUser | None, float]:
        """(the user, 0) on success; (None, seconds locked) or (None, 0) on failure."""
        keys = (f"user:{name.lower()}", f"addr:{address}")
        wait = self.guard.locked_for(*keys)
        if wait > 0:
            return None, wait
        user = self.users.get(name)
        ok = verify_password(password, user.password_hash if user else DUMMY_HASH)
        if user is None or not ok:
            self.guard.failed(*keys)
            return None, max(0.0, self.guard.locked_for(*keys))
        self.guard.succeeded(*keys)
        return user, 0.0
