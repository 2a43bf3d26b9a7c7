"""Stereo call recordings written as the call goes: caller on the left, bot on the right.

Recordings are created owner-only (callers' voices), in owner-only day folders.

The header is written first with the sizes left open and patched when the call ends; a
recording cut short by a crash is repaired from its file size on recovery, so what was
recorded stays playable.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from ..private import open_private, private_dir

RATE = 8000
CHANNELS = 2
SAMPLE_BYTES = 2
HEADER_BYTES = 44


def _header(data_bytes: int) -> bytes:
    byte_rate = RATE * CHANNELS * SAMPLE_BYTES
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, CHANNELS, RATE, byte_rate,
                                    CHANNELS * SAMPLE_BYTES, SAMPLE_BYTES * 8)
            + b"data" + struct.pack("<I", data_bytes))


def interleave(left: bytes, right: bytes) -> bytes:
    """Two 16-bit mono frames → one stereo frame; the shorter side is padded with silence."""
    a = np.frombuffer(left, dtype="<i2")
    b = np.frombuffer(right, dtype="<i2")
    n = max(len(a), len(b))
    out = np.zeros((n, 2), dtype="<i2")
    out[:len(a), 0] = a
    out[:len(b), 1] = b
    return out.tobytes()


class StereoWavWriter:
    """Appends caller/bot frame pairs to a WAV file; buffered, so a frame costs microseconds."""

    def __init__(self, path: Path):
        self.path = path
        private_dir(path.parent)
        self._file = open_private(path, "wb", buffering=64 * 1024)
        self._file.write(_header(0))
        self.data_bytes = 0

    def write(self, caller: bytes, bot: bytes) -> None:
        frame = interleave(caller, bot)
        self._file.write(frame)
        self.data_bytes += len(frame)

    def close(self) -> None:
        if self._file.closed:
            return
        self._file.seek(0)
        self._file.write(_header(self.data_bytes))
        self._file.close()


def repair(path: Path) -> bool:
    """Fix the sizes of a recording whose writer never closed it; True when it was fixed."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return False
    if size < HEADER_BYTES:
        return False
    data = size - HEADER_BYTES
    data -= data % (CHANNELS * SAMPLE_BYTES)
    with open(path, "r+b") as f:
        f.write(_header(data))
    return True
