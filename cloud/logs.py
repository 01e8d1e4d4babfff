"""Log output of the cloud services: text lines (the default) or one JSON object per line.

    configure("info", fmt="json")

installs one handler on the root logger (stderr), so the ``linli.cloud.*`` loggers and the
libraries' own loggers share it. ``log_format = "json"`` writes ``{"ts": "2025-01-01T00:00:00.000Z",
"level": "info", "logger": "linli.cloud.ingest", "event": "ingest running as ..."}``, the shape the
edge agent writes (its records also carry fields); ``"text"`` writes ``ts LEVEL logger message``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Literal, TextIO


def _ts(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _ts(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{_ts(record)} {record.levelname} {record.name} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


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
