"""Southbound: one field message in, zero or more encoded readings (or a quarantine entry) out.

For each message, in order:

1. decode with `device_profiles` (``received_at`` = gateway time); a `DecodeError` goes to
   quarantine with its reason code;
2. a device this gateway does not serve (not in the inventory) goes to quarantine
   (``unknown_device``), is counted (``unknown_device_messages``) and logged (``unknown_device``)
   once per device per ``unknown_log_interval_s``, with the count of its messages in between; one
   that no gateway's inventory lists becomes a pending device (`edge.discovery`). Zigbee2MQTT's
   ``bridge/devices`` list goes to the discovery instead of the decoder;
3. a ``reading_id`` seen among the last ``normalise.dedupe_ids_remembered``
   readings is dropped and counted.
   Readings flagged ``estimated_ts`` are exempt: their id hashes the payload only (no device time,
   no message id), so two identical presses of a button would look like one;
4. a device time more than ``normalise.max_clock_skew_s`` away from
   gateway time is replaced by gateway time; the reading gets quality flag ``clock_skew`` and keeps
   the device time as ``device_ts_us``;
5. liveness: a device marked offline produces a ``device_online`` reading first;
6. state-change events are derived from consecutive values per device and appended to ``events``:
   ``contact_open`` 0->1 ``door_opened``, 1->0 ``door_closed``; ``cover_open``: ``cover_opened`` /
   ``cover_closed``; ``lamp_on``: ``lamp_switched_on`` / ``lamp_switched_off``. The first value
   ever seen from a device produces no event; the last values are persisted with the readings;
7. the reading is classed (`Classifier`) and added to the intake as alarm or telemetry.

Nothing here raises on bad input: every message ends as readings, a quarantine entry or a counted
duplicate. Even a bug met on one message (in a decoder or in a step above) only quarantines that
message (``internal_error``, logged as ``normalise_failed``): see `_MESSAGE_BUGS` for what that
covers.
"""

from __future__ import annotations

import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Final

import msgspec

from device_profiles import STATE_EVENTS, DecodeError, ProfileSet, Reading
from edge.buffer import Intake, QuarantineEntry
from edge.discovery import Discovery
from edge.envelope import WireReading, encode_reading, to_us, wire_reading
from edge.inventory import InventoryView
from edge.liveness import Liveness
from edge.logs import get_logger

_log = get_logger("edge.normalise")

#: What a bug in decoding or normalising one message can raise. Decoding is built never to raise
#: (a compiled decoder raises `Rejected`, which the engine returns as a `DecodeError`), so these
#: are bugs met on parsed JSON, bytes and numbers: arithmetic, lookups, types and values
#: (UnicodeError and msgspec's DecodeError are ValueErrors), `struct.error` from a binary body,
#: `msgspec.EncodeError` from encoding the reading, RecursionError from a nested path. The message
#: is quarantined (``internal_error``) and intake goes on. Anything else (MemoryError, a
#: cancellation) is not about this message and is not caught.
_MESSAGE_BUGS: Final = (
    ArithmeticError,
    AttributeError,
    LookupError,
    TypeError,
    ValueError,
    RecursionError,
    struct.error,
    msgspec.MsgspecError,
)

#: Unknown device ids remembered for rate-limiting their log lines (the oldest forgotten first).
UNKNOWN_IDS_REMEMBERED: Final = 10_000


class Classifier:
    """Alarm-class when any event is in `alarm_events` or any metric is at or above its threshold
    in `alarm_metrics`; telemetry otherwise."""

    def __init__(self, *, alarm_events: Iterable[str], alarm_metrics: Mapping[str, float]) -> None:
        self.alarm_events = frozenset(alarm_events)
        self.alarm_metrics = dict(alarm_metrics)

    def is_alarm(self, events: Iterable[str], metrics: Mapping[str, float]) -> bool:
        if not self.alarm_events.isdisjoint(events):
            return True
        for name, threshold in self.alarm_metrics.items():
            value = metrics.get(name)
            if value is not None and value >= threshold:
                return True
        return False


class UnknownDevices:
    """Says when to log a device that is not in the inventory: its first message, then at most
    once per `interval_s`, with how many of its messages came in between. Remembers at most
    `max_ids` devices (the longest-unlogged forgotten first), so a flood of ids cannot grow it."""

    def __init__(self, *, interval_s: float, max_ids: int, monotonic: Callable[[], float]) -> None:
        self.interval_s = interval_s
        self.max_ids = max_ids
        self.monotonic = monotonic
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()  # id -> (logged at, since)

    def __len__(self) -> int:
        return len(self._seen)

    def seen(self, device_id: str) -> int | None:
        """Record one message; returns the messages to report (this one included) when it is time
        to log the device, else None."""
        now = self.monotonic()
        entry = self._seen.get(device_id)
        if entry is not None and now - entry[0] < self.interval_s:
            self._seen[device_id] = (entry[0], entry[1] + 1)
            return None
        count = 1 if entry is None else entry[1] + 1
        self._seen[device_id] = (now, 0)
        self._seen.move_to_end(device_id)
        while len(self._seen) > self.max_ids:
            self._seen.popitem(last=False)
        return count


class RecentIds:
    """The last `size` reading ids seen, to drop repeats: a dict for lookups and a ring for their
    order (about 30 bytes per id besides the id, against about 100 in an `OrderedDict`)."""

    __slots__ = ("_ids", "_next", "_ring")

    def __init__(self, size: int) -> None:
        self._ids: dict[str, None] = {}
        self._ring: list[str | None] = [None] * size
        self._next = 0

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, reading_id: str) -> bool:
        return reading_id in self._ids

    def add(self, reading_id: str) -> None:
        """Remember an id not yet remembered, forgetting the oldest when full."""
        ring = self._ring
        if not ring:
            return
        oldest = ring[self._next]
        if oldest is not None:
            del self._ids[oldest]
        ring[self._next] = reading_id
        self._ids[reading_id] = None
        self._next = (self._next + 1) % len(ring)


class Normaliser:
    """Turns field messages into intake entries (see the module docstring for the steps)."""

    def __init__(
        self,
        *,
        profiles: ProfileSet,
        inventory: InventoryView,
        liveness: Liveness,
        classifier: Classifier,
        max_clock_skew_s: float,
        dedupe_ids_remembered: int,
        state_events: bool = True,
        unknown_log_interval_s: float = 600.0,
        discovery: Discovery | None = None,
        wall: Callable[[], float],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.discovery = discovery
        self.bridge_topic = discovery.bridge_topic if discovery is not None else None
        self.profiles = profiles.with_device_map(inventory.profile_map())
        self.inventory = inventory
        self.liveness = liveness
        self.classifier = classifier
        self.skew_us = int(max_clock_skew_s * 1_000_000)
        self.dedupe_ids_remembered = dedupe_ids_remembered
        self.state_events = state_events
        self.wall = wall
        self._recent = RecentIds(dedupe_ids_remembered)
        self.received = 0
        self.quarantined = 0
        self.duplicates = 0
        self.skewed = 0
        self.unknown = UnknownDevices(
            interval_s=unknown_log_interval_s, max_ids=UNKNOWN_IDS_REMEMBERED, monotonic=monotonic
        )
        # Commands (`edge.downlink`): the last uplink topic of each device whose profile carries
        # commands (its variables fill a command's topic), the changes since `edge.downlink` took
        # them, and the readings of the devices it waits on for a confirmation.
        self.commanded = frozenset(p.id for p in profiles.profiles.values() if p.commands)
        self.last_topics: dict[str, str] = {}
        self.topic_changes: dict[str, str] = {}
        self.watched: frozenset[str] = frozenset()
        self.observe: Callable[[str, Mapping[str, float]], None] | None = None

    def reload(self, *, profiles: ProfileSet, inventory: InventoryView) -> None:
        self.profiles = profiles.with_device_map(inventory.profile_map())
        self.commanded = frozenset(p.id for p in profiles.profiles.values() if p.commands)
        self.inventory = inventory
        self.liveness.inventory = inventory
        if self.discovery is not None:
            self.discovery.reload(profiles=profiles, inventory=inventory)

    def add(self, reading: WireReading, intake: Intake) -> bool:
        """Class and encode one reading into the intake; returns whether it is alarm-class."""
        alarm = self.classifier.is_alarm(reading.events, reading.metrics)
        intake.add_reading(encode_reading(reading), alarm=alarm, at_s=reading.received_at_us // 1_000_000)
        return alarm

    def handle(self, topic: str, payload: bytes, intake: Intake) -> bool:
        """Process one message into `intake`. Returns whether it added an alarm-class reading."""
        try:
            return self._handle(topic, payload, intake)
        except _MESSAGE_BUGS as exc:
            _log.error("normalise_failed", topic=topic, error=repr(exc))
            self.quarantine(
                intake, int(self.wall() * 1_000_000), topic, payload, "internal_error", repr(exc)[:500]
            )
            return False

    def _handle(self, topic: str, payload: bytes, intake: Intake) -> bool:
        self.received += 1
        now = self.wall()
        received_at = datetime.fromtimestamp(now, UTC)
        now_us = to_us(received_at)
        if topic == self.bridge_topic and self.discovery is not None:
            self.discovery.bridge(topic, payload, intake, now_us)
            return False
        result = self.profiles.decode(topic, payload, received_at)
        if isinstance(result, DecodeError):
            self.quarantine(intake, now_us, topic, payload, result.reason, result.message)
            return False
        reading: Reading = result
        device = self.inventory.get(reading.device_id)
        if device is None:
            owner = self.inventory.owner(reading.device_id)
            why = f"device {reading.device_id!r} is not in this gateway's inventory"
            if owner:
                why += f" (the inventory assigns it to gateway {owner!r})"
            self.quarantine(intake, now_us, topic, payload, "unknown_device", why)
            intake.counters["unknown_device_messages"] = intake.counters.get("unknown_device_messages", 0) + 1
            if owner is None and self.discovery is not None:
                self.discovery.heard(reading, topic, payload, intake, now_us)
            messages = self.unknown.seen(reading.device_id)
            if messages is not None:
                _log.warning(
                    "unknown_device",
                    device_id=reading.device_id,
                    topic=topic,
                    profile=reading.profile,
                    owner=owner,
                    messages=messages,
                    detail=why,
                )
            return False
        estimated = "estimated_ts" in reading.quality
        if not estimated and self.dedupe_ids_remembered:
            rid = reading.reading_id
            if rid in self._recent:
                self.duplicates += 1
                intake.counters["duplicates_dropped"] = intake.counters.get("duplicates_dropped", 0) + 1
                return False
            self._recent.add(rid)
        ts = device_ts = None
        quality = None
        if not estimated and abs(to_us(reading.ts) - now_us) > self.skew_us:
            self.skewed += 1
            ts, device_ts = received_at, reading.ts
            quality = tuple(sorted({*reading.quality, "clock_skew"}))
        mem, online, persist = self.liveness.seen(device, now_us)
        alarm = False
        if online is not None:
            alarm |= self.add(online, intake)
        events = reading.events
        if self.state_events:
            derived = []
            for metric, value in reading.metrics.items():
                pair = STATE_EVENTS.get(metric)
                if pair is None:
                    continue
                state = mem.state
                before = state.get(metric) if state is not None else None
                now_on = value != 0
                if before is not None and (before != 0) != now_on:
                    derived.append(pair[0] if now_on else pair[1])
                if before != value:
                    if state is None:
                        state = mem.state = {}
                    state[metric] = value
                    persist = True
            if derived:
                events = (*events, *derived)
        if reading.profile in self.commanded:
            device_id = reading.device_id
            if self.last_topics.get(device_id) != topic:
                self.last_topics[device_id] = self.topic_changes[device_id] = topic
            if device_id in self.watched and self.observe is not None:
                self.observe(device_id, reading.metrics)
        wire = wire_reading(reading, events=events, quality=quality, ts=ts, device_ts=device_ts)
        alarm |= self.add(wire, intake)
        if persist:
            mem.persisted_seen_us = mem.last_seen_us
            intake.devices[device.device_id] = mem.row()
        return alarm

    def quarantine(
        self, intake: Intake, now_us: int, topic: str, payload: bytes, reason: str, message: str
    ) -> None:
        self.quarantined += 1
        intake.quarantine.append(
            QuarantineEntry(at_us=now_us, topic=topic, reason=reason, message=message, payload=payload)
        )
