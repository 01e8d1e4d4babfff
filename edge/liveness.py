"""Device liveness: who reported when, and ``device_offline`` / ``device_online`` readings.

Each device has an expected report interval: the configuration's ``liveness.report_intervals_s``
entry for its profile id or device type, else its profile's ``report_interval_s``. A device silent
for more than ``liveness.offline_after_intervals`` times that produces one
``device_offline`` reading (alarm-class by default); its next message produces ``device_online``
first. Last-seen times and the offline flag are persisted in the buffer with the readings they
explain, so a restart neither forgets an offline device nor fabricates one: the check only starts
``startup_grace_s`` after the field broker connected, by when the broker has handed over what it
queued while the agent was away.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import msgspec

from device_profiles import Event
from edge.buffer import DeviceRow
from edge.envelope import WireReading
from edge.inventory import Device, InventoryView

_NS = uuid.UUID("5b0c7c1e-8f0a-4d47-9a4e-6c696e6c6900")
_state_enc = msgspec.msgpack.Encoder()
_state_dec = msgspec.msgpack.Decoder(dict[str, float])


@dataclass(slots=True)
class DeviceMemory:
    """What the agent remembers about one device (mirrors its ``devices`` row)."""

    last_seen_us: int
    persisted_seen_us: int
    offline: bool = False
    #: the last value of each state metric (None until the device sends one: most never do)
    state: dict[str, float] | None = None

    def row(self) -> DeviceRow:
        return DeviceRow(
            last_seen_us=self.last_seen_us,
            offline=self.offline,
            state=_state_enc.encode(self.state) if self.state else None,
        )

    @classmethod
    def from_row(cls, row: DeviceRow) -> DeviceMemory:
        state = _state_dec.decode(row.state) if row.state else None
        return cls(
            last_seen_us=row.last_seen_us,
            persisted_seen_us=row.last_seen_us,
            offline=row.offline,
            state=state,
        )


def synthetic_id(gateway_id: str, device_id: str, event: str, ts_us: int) -> str:
    return str(uuid.uuid5(_NS, f"{gateway_id}\0{device_id}\0{event}\0{ts_us}"))


class Liveness:
    """Expected intervals and the offline/online transitions, over a shared device memory."""

    def __init__(
        self,
        *,
        gateway_id: str,
        inventory: InventoryView,
        profile_intervals: Mapping[str, float],
        overrides: Mapping[str, float],
        offline_after_intervals: float,
        memory: dict[str, DeviceMemory],
    ) -> None:
        self.gateway_id = gateway_id
        self.inventory = inventory
        self.profile_intervals = dict(profile_intervals)
        self.overrides = dict(overrides)
        self.offline_after_intervals = offline_after_intervals
        self.memory = memory

    def interval_s(self, device: Device) -> float:
        for key in (device.profile, device.device_type):
            if key in self.overrides:
                return self.overrides[key]
        return self.profile_intervals.get(device.profile, 3600.0)

    def persist_step_us(self, device: Device) -> int:
        """How far last-seen may run ahead of its persisted value (a tenth of the interval, <= 60 s)."""
        return int(min(60.0, self.interval_s(device) / 10) * 1_000_000)

    def _reading(self, device: Device, event: str, now_us: int) -> WireReading:
        return WireReading(
            device_id=device.device_id,
            device_type=device.device_type,
            ts_us=now_us,
            received_at_us=now_us,
            metrics={},
            events=(event,),
            quality=(),
            profile=device.profile,
            reading_id=synthetic_id(self.gateway_id, device.device_id, event, now_us),
        )

    def enrol(self, now_us: int) -> list[str]:
        """Start the clock for inventory devices never seen; returns their ids (to persist)."""
        new = [d for d in self.inventory.devices if d not in self.memory]
        for d in new:
            self.memory[d] = DeviceMemory(last_seen_us=now_us, persisted_seen_us=0)
        return new

    def seen(self, device: Device, now_us: int) -> tuple[DeviceMemory, WireReading | None, bool]:
        """Record a message from `device`. Returns its memory, a ``device_online`` reading if it
        was offline, and whether its row must be persisted now."""
        mem = self.memory.get(device.device_id)
        if mem is None:
            mem = self.memory[device.device_id] = DeviceMemory(last_seen_us=now_us, persisted_seen_us=0)
        online = None
        if mem.offline:
            mem.offline = False
            online = self._reading(device, Event.DEVICE_ONLINE, now_us)
        mem.last_seen_us = max(mem.last_seen_us, now_us)
        persist = online is not None or mem.last_seen_us - mem.persisted_seen_us >= self.persist_step_us(
            device
        )
        return mem, online, persist

    def check(self, now_us: int) -> list[tuple[Device, WireReading]]:
        """Devices silent for too long that are not yet marked offline: marks them and returns
        their ``device_offline`` readings."""
        out = []
        for device_id, device in self.inventory.devices.items():
            mem = self.memory.get(device_id)
            if mem is None or mem.offline:
                continue
            if now_us - mem.last_seen_us > self.offline_after_intervals * self.interval_s(device) * 1_000_000:
                mem.offline = True
                out.append((device, self._reading(device, Event.DEVICE_OFFLINE, now_us)))
        return out
