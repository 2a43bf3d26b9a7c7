"""The local journal of transcript writes: what the database has not taken yet survives a crash.

Every operation a call submits is appended here as one JSON line (``{"op", "args", "at"}``)
and synced to disk before ``submit`` returns; the writer thread then applies the lines to the
database in file order and empties the file once it has taken them all. While the database
is down the operations pile up on disk, not in memory: a restart, a SIGKILL or a long outage
loses none, and the next process of the same worker replays them, in order, when it starts.

One file per worker name (``paths.data/journal/<worker>-<hash>.jsonl``, 0600, folder 0700),
locked (``flock``) by its process for its whole life, so two processes never interleave
lines. A second live process of the same name gets a file of its own
(``<worker>-<hash>.<pid>-<n>.jsonl``); the next process of that name adopts it once its
owner is gone. The only line a crash can leave incomplete is the last one (SIGKILL during a
write): it is detected, logged and cut off, never replayed half. The file is bounded by
``[transcripts] journal_max_mb``; an operation that finds it full, or the disk full, is
refused with an error that says what to do, and counted (``<file>.lost``).

Beside each journal, ``<file>.done`` holds how far a long replay has gone, so the backlog
read by another process (:func:`journal_backlog`) drops as the replay progresses, and a
replay cut by a crash resumes there (replaying more would be harmless: operations are
idempotent).
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import CallbotError

log = logging.getLogger("callbot.transcripts")

FOLDER = "journal"
READ_CHUNK = 1 << 20          # bytes read at a time during a replay
_fallbacks = itertools.count(1)


class JournalError(CallbotError):
    """The journal cannot keep an operation (cap reached, disk full, folder unusable)."""


def journal_folder(config: Config) -> Path:
    return config.paths.data / FOLDER


def base_name(worker: str) -> str:
    """A file name for ``worker`` whatever it holds ("host/worker-5070"), unique per name."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", worker)[:60].strip("._") or "worker"
    return f"{safe}-{hashlib.sha1(worker.encode()).hexdigest()[:8]}"


def _line(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def _sidecar(path: Path, what: str) -> Path:
    return path.with_name(path.name + "." + what)


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def _write_int(path: Path, value: int) -> None:
    """Best effort (a hint, not data): a temporary file renamed over the old one."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, f"{value}\n".encode())
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        pass


def _done_offset(path: Path, size: int, fd: int) -> int:
    """Where the replay stopped, if the hint is sound (within the file, at a line start)."""
    done = _read_int(_sidecar(path, "done"))
    if done <= 0 or done > size:
        return 0
    return done if os.pread(fd, 1, done - 1) == b"\n" else 0


def _count_lines(fd: int, start: int, end: int) -> tuple[int, float | None]:
    """Complete lines in [start, end) and the ``at`` of the first one."""
    count, first_at, at = 0, None, start
    while at < end:
        chunk = os.pread(fd, min(READ_CHUNK, end - at), at)
        if not chunk:
            break
        if at == start and b"\n" in chunk:
            try:
                first_at = float(json.loads(chunk[:chunk.index(b"\n")]).get("at"))
            except (ValueError, TypeError, AttributeError):
                pass
        count += chunk.count(b"\n")
        at += len(chunk)
    return count, first_at


def _complete_end(fd: int, size: int) -> int:
    """The end of the last complete line (what follows it was cut by a crash)."""
    at = size
    while at > 0:
        start = max(0, at - 65536)
        chunk = os.pread(fd, at - start, start)
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            return start + nl + 1
        at = start
    return 0


class Journal:
    """One process's journal file, locked by it; thread-safe."""

    def __init__(self, path: Path, fd: int, max_bytes: int):
        self.path = path
        self.max_bytes = max_bytes
        self._fd = fd
        self._lock = threading.Lock()
        size = os.fstat(fd).st_size
        end = _complete_end(fd, size)
        if end < size:
            log.warning("transcripts: the last line of journal %s was cut by a crash during "
                        "its write (%d bytes); it is skipped", path, size - end)
            os.ftruncate(fd, end)
        self._end = end
        self.start = _done_offset(path, end, fd)     # the first line not yet written
        self.pending, _ = _count_lines(fd, self.start, end)

    # --- opening ------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: Path, worker: str, max_bytes: int) -> Journal:
        """``worker``'s journal (created if need be), with what a previous process of the same
        name left in it and in its spare files. JournalError when the folder is unusable."""
        base = base_name(worker)
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
            fd = _open_locked(folder / f"{base}.jsonl")
            path = folder / f"{base}.jsonl"
            if fd is None:        # another live process of the same name holds it
                path = folder / f"{base}.{os.getpid()}-{next(_fallbacks)}.jsonl"
                fd = _open_locked(path)
                log.warning("transcripts: journal %s is held by another process of worker "
                            "%r; this one keeps %s", folder / f"{base}.jsonl", worker, path)
            if fd is None:
                raise OSError(f"{path} is locked")
            try:
                _sync_folder(folder)          # the new file's name survives a power loss
                journal = cls(path, fd, max_bytes)
            except OSError:
                os.close(fd)
                raise
        except OSError as exc:
            raise JournalError(
                f"transcripts: cannot keep a journal in {folder} "
                f"({exc.strerror or exc}): check that paths.data is a writable folder of "
                f"this user") from None
        for spare in sorted(folder.glob(f"{base}.*.jsonl")):
            if spare != path:
                journal._adopt(spare)
        return journal

    def _adopt(self, spare: Path) -> None:
        """Take over the operations a dead process of the same name left in its spare file."""
        try:
            fd = _open_locked(spare, create=False)
        except OSError as exc:
            log.error("transcripts: cannot open %s to write what it holds (%s)", spare,
                      exc.strerror or exc)
            return
        if fd is None:
            return                           # its process is alive
        try:
            size = os.fstat(fd).st_size
            end = _complete_end(fd, size)
            if end < size:
                log.warning("transcripts: the last line of journal %s was cut by a crash "
                            "during its write (%d bytes); it is skipped", spare, size - end)
            start = _done_offset(spare, end, fd)
            data = os.pread(fd, end - start, start) if end > start else b""
            n = data.count(b"\n")
            if data:
                self._append_bytes(data, n)
            lost = _read_int(_sidecar(spare, "lost"))
            if lost:
                self.note_lost(lost)
            for p in (spare, _sidecar(spare, "done"), _sidecar(spare, "lost")):
                p.unlink(missing_ok=True)
            if n:
                log.warning("transcripts: %d operation(s) left in %s by a stopped process "
                            "moved to %s", n, spare, self.path)
        except (OSError, JournalError) as exc:
            log.error("transcripts: the operations left in %s could not be moved to %s "
                      "(%s); they stay there and the next start tries again", spare,
                      self.path, exc)
        finally:
            os.close(fd)

    # --- writing ------------------------------------------------------------------------
    def append(self, records: list[dict[str, Any]]) -> None:
        """Append ``records`` (one line each) and sync them to disk: durable on return.
        JournalError (nothing written) when the cap or the disk is full."""
        self._append_bytes(b"".join(_line(r) for r in records), len(records))

    def _append_bytes(self, data: bytes, lines: int) -> None:
        with self._lock:
            if self._end + len(data) > self.max_bytes:
                raise JournalError(
                    f"transcripts: journal {self.path} is full ([transcripts] journal_max_mb "
                    f"= {self.max_bytes // (1 << 20)}): bring the database back, or raise "
                    f"journal_max_mb if the disk has room")
            try:
                done = 0
                while done < len(data):
                    done += os.write(self._fd, data[done:])
                os.fsync(self._fd)
            except OSError as exc:
                try:
                    os.ftruncate(self._fd, self._end)     # no half line left behind
                except OSError:
                    pass
                raise JournalError(
                    f"transcripts: cannot write journal {self.path} ({exc.strerror or exc}): "
                    f"free space on the disk of paths.data and bring the database "
                    f"back") from None
            self._end += len(data)
            self.pending += lines

    def note_lost(self, n: int) -> None:
        """Count operations that could not be kept, in ``<file>.lost`` (what status shows)."""
        lost = _sidecar(self.path, "lost")
        _write_int(lost, _read_int(lost) + n)

    # --- replaying ----------------------------------------------------------------------
    @property
    def end(self) -> int:
        """The end of the last line synced to disk."""
        with self._lock:
            return self._end

    def read(self, start: int) -> list[tuple[int, dict[str, Any] | None, str]]:
        """Complete lines from byte ``start`` (about READ_CHUNK of them at most): (end offset,
        the record or None, the line's text for a message when it is not JSON)."""
        with self._lock:
            end = self._end
        if start >= end:
            return []
        chunk = os.pread(self._fd, min(READ_CHUNK, end - start), start)
        if start + len(chunk) < end:
            cut = chunk.rfind(b"\n")
            if cut < 0:                                  # one line longer than a chunk
                chunk = os.pread(self._fd, end - start, start)
            else:
                chunk = chunk[:cut + 1]
        out: list[tuple[int, dict[str, Any] | None, str]] = []
        at = start
        for raw in chunk.splitlines(keepends=True):
            at += len(raw)
            try:
                record = json.loads(raw)
                out.append((at, record if isinstance(record, dict) else None, ""))
            except ValueError:
                out.append((at, None, raw[:120].decode(errors="replace")))
        return out

    def written(self, offset: int, lines: int, hint: bool) -> None:
        """``lines`` more are in the database, up to byte ``offset``; ``hint``: record the
        offset for a replay that a crash would cut."""
        with self._lock:
            self.pending = max(0, self.pending - lines)
        if hint:
            _write_int(_sidecar(self.path, "done"), offset)

    def compact(self, offset: int) -> bool:
        """Empty the file if everything in it, up to ``offset``, is in the database."""
        with self._lock:
            if offset != self._end:
                return False
            if self._end:
                os.ftruncate(self._fd, 0)
                self._end = 0
            self.pending = 0
        _sidecar(self.path, "done").unlink(missing_ok=True)
        return True

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)          # the lock goes with it
                self._fd = -1


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_locked(path: Path, create: bool = True) -> int | None:
    """The file opened for appending and locked by this process, or None if another holds it."""
    flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileNotFoundError:
        if create:
            raise
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.fchmod(fd, 0o600)
    return fd


# --- the backlog, read from any process ---------------------------------------------------
@dataclass(frozen=True)
class JournalState:
    """One journal file as seen from outside its process."""

    path: Path
    operations: int           # waiting for the database
    oldest_at: float | None   # when the oldest of them was submitted
    lost: int                 # could not be kept (journal or disk full), ever
    in_use: bool | None       # a live process holds it (None: not checked)


def journal_states(config: Config, check_owner: bool = False) -> list[JournalState]:
    """Every journal of ``paths.data/journal`` holding operations or losses.

    ``check_owner`` tells which files a running process holds; it takes the file's lock for
    an instant, so leave it off where it is polled often.
    """
    folder = journal_folder(config)
    out = []
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            end = _complete_end(fd, os.fstat(fd).st_size)
            count, oldest = _count_lines(fd, _done_offset(path, end, fd), end)
            in_use = None
            if check_owner:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    in_use = False
                except BlockingIOError:
                    in_use = True
        finally:
            os.close(fd)
        lost = _read_int(_sidecar(path, "lost"))
        if count or lost:
            out.append(JournalState(path, count, oldest, lost, in_use))
    return out


def journal_backlog(config: Config) -> int:
    """Operations waiting in the journals of ``config``'s data folder for the database.

    For a metrics exporter or a health check: 0 in normal operation; it grows during a
    database outage and drops as the writers replay once the database is back.
    """
    return sum(s.operations for s in journal_states(config))

