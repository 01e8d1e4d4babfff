"""Structured logs on stdout: one JSON object per line (``log_format = "json"``) or plain text.

    log = get_logger("edge.uplink")
    log.info("batch_acked", seq=17, readings=500)

prints ``{"ts": "2025-01-01T00:00:00.000Z", "level": "info", "logger": "edge.uplink",
"event": "batch_acked", "seq": 17, "readings": 500}``. Built on the standard `logging` module, so
levels and handlers work as usual; `configure` installs the handler on the ``edge`` logger. In
text format the same line reads ``2025-01-01T00:00:00.000Z INFO edge.uplink batch_acked seq=17
readings=500`` (the cloud writes the same two formats).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

from device_profiles.logformat import JsonFormatter, TextFormatter


class Logger:
    """A thin keyword-argument front to a stdlib logger."""

    __slots__ = ("_log",)

    def __init__(self, log: logging.Logger) -> None:
        self._log = log

    def _emit(self, level: int, event: str, fields: dict[str, Any], exc_info: bool = False) -> None:
        if self._log.isEnabledFor(level):
            self._log.log(level, event, extra={"fields": _plain(fields)}, exc_info=exc_info)

    def debug(self, event: str, **fields: Any) -> None:
        self._emit(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(logging.WARNING, event, fields)

    def error(self, event: str, *, exc_info: bool = False, **fields: Any) -> None:
        self._emit(logging.ERROR, event, fields, exc_info)


def _plain(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, str | int | float | bool | None) else str(v) for k, v in fields.items()}


def get_logger(name: str) -> Logger:
    return Logger(logging.getLogger(name))


def configure(
    level: str = "info", stream: TextIO | None = None, *, fmt: Literal["json", "text"] = "json"
) -> None:
    """Send the ``edge`` loggers to `stream` (stdout) as JSON lines or text."""
    root = logging.getLogger("edge")
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False
