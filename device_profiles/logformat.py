"""Log line formats shared by the edge agent and the cloud services.

``JsonFormatter``: one JSON object per line, ``{"ts": "2025-01-01T00:00:00.000Z", "level": "info",
"logger": "edge.uplink", "event": "batch_acked", "seq": 17}``; ``TextFormatter``: the same as
``2025-01-01T00:00:00.000Z INFO edge.uplink batch_acked seq=17``. Keyword fields travel in the
record's ``fields`` attribute (``logger.log(..., extra={"fields": {...}})``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec

_json = msgspec.json.Encoder()


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
        fields = getattr(record, "fields", None)
        if fields:
            doc.update(fields)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return _json.encode(doc).decode(errors="replace")


class TextFormatter(logging.Formatter):
    """``ts LEVEL logger event key=value ...``; values with spaces are JSON-quoted."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_ts(record), record.levelname, record.name, record.getMessage()]
        for key, value in (getattr(record, "fields", None) or {}).items():
            text = str(value)
            if not text or any(c.isspace() or c in '"=' for c in text):
                text = _json.encode(text).decode(errors="replace")
            parts.append(f"{key}={text}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line
