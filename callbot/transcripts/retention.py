"""Retention: transcripts and recordings older than [transcripts] retention_days go.

``purge(config)`` is what `callbot transcripts purge` runs, and what the SIP side's
supervisor process runs once a day. It also closes, as errors, the calls a crashed process
left open for longer than any call lasts, and deletes what no call row accounts for any
more: turns and reviews whose call is gone (a call deleted by hand, a call row that was
never written), and recordings that no call names. Those would otherwise escape the
retention for ever, since it selects by the call's start. Nothing younger than a call can
last is taken for an orphan: a call's row may be written after its first turns.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from .db import Connection
from .store import STALE_OPEN_S, TranscriptStore, open_store

log = logging.getLogger("callbot.transcripts")


@dataclass(frozen=True)
class PurgeReport:
    before: float          # everything that started before this time is gone
    calls: int
    turns: int
    recordings: int        # orphan recordings included
    closed: int            # calls left open by a crash, closed as errors
    orphan_turns: int = 0  # turns whose call row was gone (counted in ``turns`` too)


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


def _delete_orphan_rows(conn: Connection, settled: float) -> int:
    """Turns and reviews of calls that have no row, older than ``settled``."""
    turns = conn.execute("DELETE FROM turns WHERE at < ? AND NOT EXISTS "
                         "(SELECT 1 FROM calls c WHERE c.id = turns.call_id)", (settled,))
    conn.execute("DELETE FROM reviews WHERE at < ? AND NOT EXISTS "
                 "(SELECT 1 FROM calls c WHERE c.id = reviews.call_id)", (settled,))
    return turns.rowcount


def _delete_orphan_recordings(store: TranscriptStore, settled: float) -> int:
    """Recordings that no call row names, last written before ``settled``."""
    folder = store.recordings
    if not folder.is_dir():
        return 0
    named = {r["recording"] for r in store.read(lambda conn: conn.rows(
        "SELECT recording FROM calls WHERE recording IS NOT NULL"))}
    gone = 0
    for path in sorted(folder.rglob("*.wav")):
        try:
            if (path.relative_to(folder).as_posix() not in named
                    and path.stat().st_mtime < settled):
                path.unlink()
                gone += 1
        except OSError as exc:
            log.error("transcripts: cannot delete recording %s: %s", path, exc.strerror)
    return gone


def purge_store(store: TranscriptStore, retention_days: int, now: float | None = None
                ) -> PurgeReport:
    now = time.time() if now is None else now
    before = now - retention_days * 86400
    settled = now - STALE_OPEN_S
    store.flush()
    closed = store.close_stale()
    calls, turns, names = store.purge(before)
    orphans = store.write(lambda conn: _delete_orphan_rows(conn, settled))
    files = _delete_orphan_recordings(store, settled)
    files += _delete_recordings(store.recordings, names, before)
    return PurgeReport(before=before, calls=calls, turns=turns + orphans, recordings=files,
                       closed=closed, orphan_turns=orphans)


def purge(config: Config, now: float | None = None) -> PurgeReport:
    """Apply the retention of ``config`` to its store and recordings folder."""
    store = open_store(config)
    try:
        return purge_store(store, config.transcripts.retention_days, now)
    finally:
        store.close()
