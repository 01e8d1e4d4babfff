"""The live progress line on a terminal (sent, rate, errors, simulated clock); silent in pipes."""

from __future__ import annotations

import sys
import time
from typing import IO

from rich.console import Console
from rich.live import Live
from rich.text import Text

from simulators.clock import iso


class Progress:
    """Redraws one status line at most `hz` times a second, only when `stream` is a terminal."""

    def __init__(self, *, stream: IO[str] | None = None, hz: float = 4.0, force: bool | None = None) -> None:
        out = stream if stream is not None else sys.stderr
        self._console = Console(file=out, force_terminal=force)
        self.enabled = self._console.is_terminal if force is None else force
        self._period = 1.0 / hz
        self._last = 0.0
        self._t0 = time.monotonic()
        self._live: Live | None = None
        if self.enabled:
            self._live = Live(Text(""), console=self._console, refresh_per_second=hz, transient=True)
            self._live.start()

    def update(self, *, sent: int, errors: int, sim_ms: int, force: bool = False) -> None:
        if self._live is None:
            return
        now = time.monotonic()
        if not force and now - self._last < self._period:
            return
        self._last = now
        rate = sent / max(now - self._t0, 1e-9)
        line = Text.assemble(
            ("linli sim ", "bold"),
            f"sent {sent:,}  ",
            f"{rate:,.0f} msg/s  ",
            (f"errors {errors:,}  ", "red" if errors else ""),
            ("sim ", "dim"),
            iso(sim_ms)[:19].replace("T", " "),
        )
        self._live.update(line)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
