"""Logging in: the configured users, their password checks, and the lockout in front.

Every form carries the session's CSRF token (see :mod:`.sessions`); SameSite=Strict is the
second lock. Attempts are counted per user name and per client address *before* the
password is checked (:mod:`.lockout`), so a guesser can neither hammer one account nor
spray many, even with parallel requests.

Password hashes made with weaker scrypt parameters than today's are replaced at the next
successful login. The configuration file is the administrator's and is not rewritten: the
stronger hash goes to the ``console_users`` table of the transcript database, which takes
precedence only while the configured hash is still the one it replaced (a password reset
in the file always wins).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ..config import ConsoleConfig, ConsoleUser
from ..transcripts.db import Connection, StoreError
from ..transcripts.store import TranscriptStore
from .lockout import LoginGuard
from .passwords import HashingBusy, dummy_hash, hash_password, needs_upgrade, verify_password
from .sessions import COOKIE, EDITOR, READONLY, Session, Sessions

__all__ = ["COOKIE", "EDITOR", "READONLY", "Authenticator", "LoginResult", "Session",
           "Sessions"]

log = logging.getLogger("callbot.console")


@dataclass(frozen=True)
class LoginResult:
    user: ConsoleUser | None        # None: refused
    locked_s: float = 0.0           # lockout left (0: none)
    checked: bool = False           # the password was checked (False: refused by the lockout)
    busy: bool = False              # not checked: too many checks waiting (try again soon)


class Authenticator:
    """The configured users, their (possibly upgraded) hashes, and the lockout."""

    def __init__(self, config: ConsoleConfig, store: TranscriptStore):
        self.users: dict[str, ConsoleUser] = {u.name: u for u in config.users}
        self.store = store
        self.guard = LoginGuard(config.max_failures, config.lockout_minutes * 60)
        dummy_hash()        # made now, not by the first logins with an unknown name

    def stored_hash(self, user: ConsoleUser) -> str:
        """The hash to check: the upgraded one if it still stands for the configured one."""
        row = self.store.read(lambda conn: conn.one(
            "SELECT password_hash, replaces FROM console_users WHERE name = ?", (user.name,)))
        if row is not None and row["replaces"] == user.password_hash:
            return row["password_hash"]
        return user.password_hash

    def login(self, name: str, password: str, address: str) -> LoginResult:
        keys = (f"user:{name.lower()}", f"addr:{address}")
        wait = self.guard.admit(*keys)
        if wait > 0:
            return LoginResult(None, wait, checked=False)
        user = self.users.get(name)
        try:
            stored = self.stored_hash(user) if user else dummy_hash()
            ok = verify_password(password, stored)
        except HashingBusy:             # the attempt stays counted: a flood gains nothing
            return LoginResult(None, self.guard.locked_for(*keys), busy=True)
        if user is None or not ok:
            return LoginResult(None, self.guard.locked_for(*keys), checked=True)
        self.guard.succeeded(*keys)
        if needs_upgrade(stored):
            self._upgrade(user, password)
        return LoginResult(user, 0.0, checked=True)

    def _upgrade(self, user: ConsoleUser, password: str) -> None:
        """Store a hash with today's parameters; a database that refuses it costs nothing
        but the upgrade (the login goes on, the next one tries again)."""
        try:
            stronger = hash_password(password)
        except HashingBusy:
            return                      # the next login upgrades it

        def upsert(conn: Connection) -> None:
            conn.execute("INSERT INTO console_users (name, password_hash, replaces, updated_at) "
                         "VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                         "password_hash = excluded.password_hash, replaces = excluded.replaces, "
                         "updated_at = excluded.updated_at",
                         (user.name, stronger, user.password_hash, time.time()))
        try:
            self.store.write(upsert)
            log.info("console: password hash of %s upgraded (kept in the transcript "
                     "database, table console_users)", user.name)
        except StoreError as exc:
            log.warning("console: password hash of %s not upgraded: %s", user.name, exc)
