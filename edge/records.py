"""The values the buffer takes and gives back: an `Intake` to commit, the `DeviceRow` and
`QuarantineEntry` it carries, a formed `Batch`, and `BufferStats`. Plain data, no SQLite: the
normaliser builds intakes without touching the store (`edge.buffer` re-exports them all)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from edge.pending import PendingDevice

#: the two classes of readings, batches and buffer tables: alarms first
ALARM: Final = 0
TELEMETRY: Final = 1
CLASS_NAMES: Final = ("alarm", "telemetry")
#: the buffer's table of each class's chunks
TABLES: Final = ("alarm", "telemetry")


@dataclass(slots=True)
class DeviceRow:
    """A device's persisted liveness and state (state: the encoded last state values)."""

    last_seen_us: int
    offline: bool = False
    state: bytes | None = None


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    at_us: int
    topic: str
    reason: str
    message: str
    payload: bytes


@dataclass(slots=True)
class Intake:
    """One commit's worth of input: encoded readings per class, device updates, quarantine."""

    alarm: list[bytes] = field(default_factory=list)
    telemetry: list[bytes] = field(default_factory=list)
    #: received-at seconds of the oldest and newest reading in this intake.
    at_min: int = 0
    at_max: int = 0
    devices: dict[str, DeviceRow] = field(default_factory=dict)
    quarantine: list[QuarantineEntry] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    #: devices heard or named that the inventory does not list (`edge.pending`), by id
    pending: dict[str, PendingDevice] = field(default_factory=dict)

    def add_pending(self, device: PendingDevice) -> None:
        known = self.pending.get(device.device_id)
        if known is None:
            self.pending[device.device_id] = device
        else:
            known.absorb(device)

    def __len__(self) -> int:
        return len(self.alarm) + len(self.telemetry)

    def add_reading(self, data: bytes, *, alarm: bool, at_s: int) -> None:
        (self.alarm if alarm else self.telemetry).append(data)
        if not self.at_min or at_s < self.at_min:
            self.at_min = at_s
        self.at_max = max(self.at_max, at_s)


@dataclass(frozen=True, slots=True)
class Batch:
    seq: int
    batch_class: int
    count: int
    at_min: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class BufferStats:
    alarm_readings: int
    telemetry_readings: int
    batched_readings: int
    batches: int
    oldest_at: int | None
    disk_bytes: int
    cap_bytes: int
    counters: dict[str, int]
    #: devices heard or discovered that the inventory lacks (`edge.pending`)
    pending_devices: int = 0

    @property
    def depth(self) -> int:
        return self.alarm_readings + self.telemetry_readings + self.batched_readings
