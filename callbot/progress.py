"""One text progress bar on stderr, for every long step (model install, training, rendering).

Called as ``progress(label, done, total)``; redrawn in place on a terminal, one line per
finished step in logs (CI), so both stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

ProgressFn = Callable[[str, int, "int | None"], None]   # (label, done, total or None)


class StderrProgress:
    """A progress bar counting bytes (``unit="B"``) or items."""

    def __init__(self, stream: TextIO | None = None, unit: str = "B") -> None:
        self.stream = stream or sys.stderr
        self.unit = unit
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last = 0.0
        self._ended = ""

    def _amount(self, done: int, total: int | None) -> str:
        if self.unit == "B":
            return f"{done / 1e6:.1f}" + (f"/{total / 1e6:.1f}" if total else "") + " MB"
        return f"{done}" + (f"/{total}" if total else "") + (f" {self.unit}" if self.unit else "")

    def __call__(self, label: str, done: int, total: int | None) -> None:
        end = total is not None and done >= total
        now = time.monotonic()
        if not end and (not self.tty or now - self._last < 0.1) or (end and label == self._ended):
            return
        self._last, self._ended = now, (label if end else "")
        amount = self._amount(done, total)
        if self.tty:
            bar = f"[{'#' * int(30 * done / total):.<30}] " if total else ""
            self.stream.write("\r  " + f"{label} {bar}{amount}\x1b[K" + ("\n" if end else ""))
        else:
            self.stream.write(f"  {label} {amount}\n")
        self.stream.flush()


def silent(label: str, done: int, total: int | None) -> None:
    pass
