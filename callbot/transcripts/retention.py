"""Retention: transcripts and recordings older than [transcripts] retention_days go.

``purge(config)`` is what `callbot transcripts purge` runs, and what the SIP side's
supervisor process runs once a day. It also closes, as errors, the calls a crashed process
left open for longer than any call lasts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from .store import TranscriptStore, open_store

log = logging.getLogger("callbot.transcripts")


@dataclass(frozen=True)
class PurgeReport:
    before: float          # everything that started before this time is gone
    calls: int
    turns: int
    recordings: int
    closed: int            # calls left open by a crash, closed as errors


def _delete_recordings(folder: Path, names: list[str], before: float) -> int:
    """The purged calls' files, then any older file left behind (a call never written)."""
    gone = 0
    for name in names:
        try:
            (folder / name).unlink()
            gone += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.error("transcripts: cannot delete recording %s: %s", folder / name, exc.strerror)
    if folder.is_dir():
        for path in sorted(folder.rglob("*.wav")):
            try:
                if path.stat().st_mtime < before:
                    path.unlink()
                    gone += 1
            except OSError:
                pass
        for sub in sorted((p for p in folder.iterdir() if p.is_dir()), reverse=True):
            try:
                sub.rmdir()          # only when empty
            except OSError:
                pass
    return gone


def purge_store(store: TranscriptStore, retention_days: int, now: float | None = None
                ) -> PurgeReport:
    now = time.time() if now is None else now
    before = now - retention_days * 86400
    store.flush()
    closed = store.close_stale()
    calls, turns, names = store.purge(before)
    files = _delete_recordings(store.recordings, names, before)
    return PurgeReport(before=before, calls=calls, turns=turns, recordings=files, closed=closed)


def purge(config: Config, now: float | None = None) -> PurgeReport:
    """Apply the retention of ``config`` to its store and recordings folder."""
    store = open_store(config)
    try:
        return purge_store(store, config.transcripts.retention_days, now)
    finally:
        store.close()
