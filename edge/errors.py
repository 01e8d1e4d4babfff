"""Exceptions of the edge agent.

One root, everything below it::

    EdgeError
    ├── ConfigError          the configuration is invalid; ``problems`` lists what, where
    ├── InventoryError       the inventory file cannot be read or is invalid
    ├── BufferError_         the SQLite buffer cannot be opened or written (wraps sqlite3 errors)
    │   └── BufferFull       alarm-class readings alone fill the size cap; intake waits
    └── MqttError            an MQTT connection failed or was refused
        ├── UplinkUnavailable    not connected (publish refused, or the link dropped in flight)
        └── NegativeAck          the broker answered a PUBLISH with a failure reason code

Lower-layer errors (``sqlite3.Error``, ``OSError``, ``pydantic.ValidationError``) are translated at
the module that meets them, with ``raise ... from exc``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class EdgeError(Exception):
    """Root of every exception the edge agent raises."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a configuration.

    Attributes:
        key: the dotted key at fault (``cloud.tls.client_cert``), '' for the whole file.
        detail: what is wrong with it.
        source: where the value came from: the file's path or the environment variable's name
            ('' when not known).
    """

    key: str
    detail: str
    source: str = ""

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.key}: {self.detail}" if self.key else f"{where}{self.detail}"


class ConfigError(EdgeError):
    """The configuration is invalid: every problem found, not just the first.

    Attributes:
        problems: each problem, in the order found (at least one).
        key: the first problem's key ('' for the whole file).
        detail: the first problem's detail.
    """

    def __init__(self, key: str = "", detail: str = "", *, problems: Sequence[ConfigProblem] = ()) -> None:
        self.problems = tuple(problems) or (ConfigProblem(key, detail),)
        self.key = self.problems[0].key
        self.detail = self.problems[0].detail
        if len(self.problems) == 1:
            super().__init__(str(self.problems[0]))
        else:
            lines = "".join(f"\n  {p}" for p in self.problems)
            super().__init__(f"{len(self.problems)} problems in the configuration:{lines}")


class InventoryError(EdgeError):
    """The inventory file cannot be read or is invalid."""


class BufferError_(EdgeError):  # the builtin BufferError means something else
    """The SQLite buffer cannot be opened or written."""


class BufferFull(BufferError_):
    """Alarm-class readings alone fill the size cap, so nothing can be evicted to make room.

    Attributes:
        used_bytes: disk used by the buffer.
        cap_bytes: the configured cap.
    """

    def __init__(self, used_bytes: int, cap_bytes: int) -> None:
        self.used_bytes = used_bytes
        self.cap_bytes = cap_bytes
        super().__init__(f"buffer holds {used_bytes} bytes of alarm readings, the cap is {cap_bytes}")


class MqttError(EdgeError):
    """An MQTT connection failed, was refused or dropped.

    Attributes:
        reason: the broker's reason code or paho's error, as text.
    """

    def __init__(self, message: str, *, reason: str = "") -> None:
        self.reason = reason
        super().__init__(message)


class UplinkUnavailable(MqttError):
    """Not connected: a publish was refused, or the connection dropped before its PUBACK."""


class NegativeAck(MqttError):
    """The broker answered a PUBLISH with a failure reason code.

    Attributes:
        mid: the packet id of the refused PUBLISH.
    """

    def __init__(self, mid: int, reason: str) -> None:
        self.mid = mid
        super().__init__(f"PUBLISH {mid} refused: {reason}", reason=reason)
