"""Login lockout: at most ``max_failures`` password checks per user name and per address.

An attempt is counted *before* its password is checked, under one lock: parallel guesses
cannot all pass the check before any of them is counted (a check-then-act race would let
a burst of POSTs try far more passwords than the limit). The count of a key is forgotten
``lockout_s`` after its last attempt, or when a login with it succeeds.

The table is an LRU of at most ``cap`` keys, so a flood of invented user names cannot grow
the console's memory; an evicted key is the one least recently tried, and the address key
of a flood stays fresh (it is tried by every attempt), so the flood itself is still locked.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

CAP = 10_000        # keys remembered at most (user names and addresses)


@dataclass
class _Entry:
    attempts: int = 0            # counted since the last lockout or success
    last: float = 0.0            # time of the last counted attempt
    locked_until: float = 0.0


class LoginGuard:
    """Attempts per key (``user:NAME``, ``addr:IP``); a key is locked for ``lockout_s`` once
    ``max_failures`` attempts were counted for it without a success."""

    def __init__(self, max_failures: int, lockout_s: float, cap: int = CAP):
        self.max_failures = max_failures
        self.lockout_s = lockout_s
        self.cap = cap
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def admit(self, *keys: str) -> float:
        """Count an attempt for every key, before its password is checked: 0.0 means go
        ahead; otherwise the seconds of lockout left, and nothing is counted or checked."""
        now = time.time()
        with self._lock:
            entries = [self._entry(k, now) for k in keys]
            wait = max((e.locked_until - now for e in entries), default=0.0)
            if wait > 0:
                return wait
            for e in entries:
                e.attempts += 1
                e.last = now
                if e.attempts >= self.max_failures:   # this one is checked, the next waits
                    e.locked_until = now + self.lockout_s
                    e.attempts = 0
            self._trim(now)
            return 0.0

    def locked_for(self, *keys: str) -> float:
        """Seconds left of the longest lockout among ``keys`` (0: not locked)."""
        now = time.time()
        with self._lock:
            return max([0.0] + [e.locked_until - now for k in keys
                                if (e := self._entries.get(k)) is not None])

    def succeeded(self, *keys: str) -> None:
        """The password was right: its keys start again from zero."""
        with self._lock:
            for k in keys:
                self._entries.pop(k, None)

    def _entry(self, key: str, now: float) -> _Entry:
        e = self._entries.get(key)
        if e is None or self._expired(e, now):
            e = self._entries[key] = _Entry()
        self._entries.move_to_end(key)
        return e

    def _expired(self, e: _Entry, now: float) -> bool:
        return e.locked_until <= now and e.last + self.lockout_s <= now

    def _trim(self, now: float) -> None:
        """Drop expired keys from the old end, then the least recently tried past the cap."""
        while self._entries:
            key, e = next(iter(self._entries.items()))
            if not self._expired(e, now):
                break
            del self._entries[key]
        while len(self._entries) > self.cap:
            self._entries.popitem(last=False)
