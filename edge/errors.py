"""Exceptions of the edge agent.

One root, everything below it::

    EdgeError
    ├── ConfigError          the configuration is invalid; ``problems`` lists what, where
    ├── InventoryError       the inventory file cannot be read or is invalid
    ├── PreflightError       the profiles and the inventory do not fit together; ``problems`` lists all
    ├── BufferError_         the SQLite buffer cannot be opened, read or written (wraps sqlite3
    │   │                    errors, keeping SQLite's reason and code)
    │   └── BufferFull       alarm-class readings alone fill the size cap; intake waits
    └── MqttError            an MQTT connection failed or was refused
        ├── UplinkUnavailable    not connected (publish refused, or the link dropped in flight)
        ├── NegativeAck          the broker answered a PUBLISH with a failure reason code
        │   └── NoSubscribers    ... or with "no matching subscribers": nobody has it
        ├── ConnectionRefused    the field broker refused CONNECT (`edge.mqttcodec`; reason in words)
        └── ProtocolViolation    the field broker sent a malformed or misplaced packet (`edge.mqttcodec`)
            └── PacketTooLarge   a packet above the Maximum Packet Size we announced

Lower-layer errors (``sqlite3.Error``, ``OSError``, ``pydantic.ValidationError``) are translated at
the module that meets them, with ``raise ... from exc``.
"""

from __future__ import annotations

from device_profiles.config_view import ConfigProblems


class EdgeError(Exception):
    """Root of every exception the edge agent raises."""


class ConfigError(ConfigProblems, EdgeError):
    """The configuration is invalid: ``problems`` lists every problem found, not just the first."""


class InventoryError(EdgeError):
    """The inventory file cannot be read or is invalid."""


class PreflightError(EdgeError):
    """The configuration cannot run: its profiles and inventory do not load, or do not fit together.

    Attributes:
        problems: every problem found, each naming the file and the entry or profile at fault.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        count = f"{len(problems)} problems" if len(problems) != 1 else "1 problem"
        super().__init__(f"{count}:\n" + "\n".join(f"  - {p}" for p in problems))


class BufferError_(EdgeError):  # the builtin BufferError means something else
    """The SQLite buffer cannot be opened, read or written.

    Attributes:
        sqlite_error: SQLite's error code (``SQLITE_FULL``: the disk, or the page cap, is full),
            None when the error is not SQLite's.
    """

    def __init__(self, message: str, *, sqlite_error: str | None = None) -> None:
        self.sqlite_error = sqlite_error
        super().__init__(message)


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


class NoSubscribers(NegativeAck):
    """The broker accepted a PUBLISH but no subscription matched it (MQTT v5 reason code 0x10):
    nobody has the message. Seen when the cloud broker restarted and the ingest has not
    subscribed again yet (Mosquitto 2.0 does not restore shared subscriptions): the uplink keeps
    the batch and sends it again shortly."""
