"""A text progress bar on stderr, for the long steps (model install, training, rendering)."""

from __future__ import annotations

import sys
import time


class Progress:
    """``with Progress("Rendering", total) as p: p.advance()``; quiet when stderr is not a tty
    except for a final line, so logs stay readable."""

    def __init__(self, label: str, total: int, unit: str = "", stream=None):
        self.label, self.total, self.unit = label, max(0, total), unit
        self.stream = stream or sys.stderr
        self.done = 0
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.monotonic()
        self._last = 0.0

    def __enter__(self) -> "Progress":
        self._draw(force=True)
        return self

    def __exit__(self, *exc) -> None:
        self._draw(force=True, end=True)

    def advance(self, n: int = 1) -> None:
        self.done += n
        self._draw()

    def _fmt(self, n: int) -> str:
        if self.unit == "B":
            return f"{n / 1e6:.1f} MB"
        return str(n)

    def _draw(self, force: bool = False, end: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        frac = self.done / self.total if self.total else 1.0
        bar = "#" * int(frac * 30)
        text = (f"{self.label}: [{bar:<30}] {frac * 100:5.1f}% "
                f"{self._fmt(self.done)}/{self._fmt(self.total)} {now - self.start:.0f}s")
        if self.tty:
            self.stream.write("\r" + text + ("\n" if end else ""))
            self.stream.flush()
        elif end or force and self.done == 0:
            self.stream.write(text + "\n")
            self.stream.flush()
