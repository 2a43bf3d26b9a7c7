"""The review queue's grouping, computed off the request path and kept until the queue
changes.

Clustering 2,000 utterances takes seconds of CPU on the box that answers calls: a page view
must neither wait for it nor start it again when nothing changed. The grouping is cached
under a key made of the queue's utterances (ids and texts); a page whose queue has another
key gets the last grouping refitted to the queue at once (:func:`.review.refit`), and one
background thread, at low priority, computes the new grouping for the next view. Requests
that come meanwhile only replace the queue waiting to be grouped, so at most one
clustering runs and one waits, whatever the traffic.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .review import Group, cluster, item_key, refit

log = logging.getLogger("callbot.console")
NICE = 10            # the grouping thread yields the cores to the calls


def queue_key(items: list[dict[str, Any]]) -> str:
    """Identifies a queue's content: same utterances, same texts, same key."""
    h = hashlib.sha256()
    for it in items:
        h.update(f"{item_key(it)}\x1f{it.get('text') or ''}\x1e".encode("utf-8"))
    return h.hexdigest()


@dataclass(frozen=True)
class Grouping:
    groups: list[Group]
    ready: bool              # False: refitted from an older grouping (or none), one computing


class ReviewGroups:
    """The last grouping and the thread that computes the next one."""

    def __init__(self, compute: Callable[[list[dict[str, Any]]], list[Group]] = cluster):
        self.compute = compute
        self.computed = 0                     # clusterings run (each a distinct queue)
        self._key: str | None = None
        self._groups: list[Group] = []
        self._pending: tuple[str, list[dict[str, Any]]] | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)

    def get(self, items: list[dict[str, Any]]) -> Grouping:
        """The grouping of ``items``: the cached one when the queue is unchanged; otherwise
        the last one refitted, and the new one scheduled. Never clusters on this thread."""
        key = queue_key(items)
        with self._lock:
            if key == self._key:
                return Grouping(self._groups, ready=True)
            self._pending = (key, items)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="review-grouping",
                                                daemon=True)
                self._thread.start()
            last = self._groups
        return Grouping(refit(last, items), ready=False)

    def wait(self, timeout: float) -> bool:
        """Until no grouping is computing or waiting (False if still busy at ``timeout``)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._thread is None, timeout)

    def _run(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
        except (AttributeError, OSError):
            pass
        while True:
            with self._lock:
                if self._pending is None:
                    self._thread = None
                    self._idle.notify_all()
                    return
                key, items = self._pending
                self._pending = None
            try:
                groups = self.compute(items)
            except Exception:       # noqa: BLE001 - the page keeps the refitted grouping
                log.exception("console: grouping the review queue failed")
                continue
            with self._lock:
                self.computed += 1
                self._key, self._groups = key, groups
