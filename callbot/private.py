"""Files and folders that hold callers' personal data: owner-only from the moment they exist.

Transcripts, recordings and exports carry callers' words, numbers and voices. They are
created readable by their owner only (files 0600, folders 0700), whatever the process's
umask: setting the mode after the file was written would leave a window in which another
account of the machine could open it, and keep it open.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """``path`` as a folder, created owner-only with any missing parent. A folder that
    already existed keeps its mode: it may be the operator's (``paths.data = "/srv"``)."""
    missing = []
    p = Path(path)
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:      # another process made it first: not ours to chmod
            continue
        os.chmod(folder, DIR_MODE)   # mkdir's mode went through the umask
    return Path(path)


def create_private(path: Path) -> None:
    """Create ``path`` empty and owner-only if it does not exist; make it owner-only if it
    does (a file of ours from before these modes).

    An existing file is never opened here: closing any descriptor of a file drops every
    POSIX lock this process holds on it, and SQLite's connections of the same process rely
    on theirs (a second connection opened this way lost a worker's writes).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        if os.stat(path).st_mode & 0o777 != FILE_MODE:
            os.chmod(path, FILE_MODE)
        return
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def open_private(path: Path, mode: str = "w", **kw: Any) -> IO[Any]:
    """``open(path, mode)`` for writing a new file, created owner-only ("w", "wb", "a")."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode.startswith("a") else os.O_TRUNC)
    fd = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        return os.fdopen(fd, mode, **kw)
    except BaseException:
        os.close(fd)
        raise
