"""Log output of the cloud services: text lines (the default) or one JSON object per line.

    configure("info", fmt="json")

installs one handler on the root logger (stderr), so the ``linli.cloud.*`` loggers and the
libraries' own loggers share it. ``log_format = "json"`` writes ``{"ts": "2025-01-01T00:00:00.000Z",
"level": "info", "logger": "linli.cloud.ingest", "event": "ingest running as ..."}``, the shape the
edge agent writes (its records also carry fields); ``"text"`` writes ``ts LEVEL logger message``.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

from device_profiles.logformat import JsonFormatter, TextFormatter


def configure(
    level: str = "info", stream: TextIO | None = None, *, fmt: Literal["json", "text"] = "text"
) -> None:
    """Send every logger's records at `level` and above to `stream` (stderr) in format `fmt`."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
