"""The simulation engine: one event heap over simulated time, yielding messages and truth records.

    sim = Simulation(inventory=inventory, start=datetime(2025, 6, 1, tzinfo=UTC), seed=7)
    for item in sim.run(until_ms=sim.start_ms + 3_600_000):
        if isinstance(item, Emission):
            publish(item.topic, item.payload)

The heap holds one periodic report per device, each behaviour model's next action (a door step, an
SOS press, dusk), and engine callbacks (scenario starts, conditions). Work per message is one heap
pop and push, one behaviour step, snapping the values to the profile, and `ProfileSet.encode`.
Nothing here reads the wall clock or performs I/O: pacing and output belong to `runner`.
Same inventory, seed, start, scenarios and faults give the same items, byte for byte.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from heapq import heappop, heappush
from typing import TYPE_CHECKING, Any, Final

import msgspec
import numpy as np
from msgspec import UNSET

from device_profiles import ProfileSet, Reading
from device_profiles.inventory import Inventory
from simulators.behaviour import MODELS, Behaviour, Sample, SimDevice, Tag
from simulators.behaviour.base import REPORT_NOW, Window, in_windows
from simulators.behaviour.battery import LOW_BATTERY_PCT, drain, init_power_and_radio
from simulators.clock import from_ms, iso, to_ms
from simulators.errors import ConfigError, FleetError
from simulators.faults import FaultOptions, corrupt
from simulators.message import Emission, Note
from simulators.rand import RandomStream
from simulators.shape import ProfileShape

if TYPE_CHECKING:
    from simulators.commands import Heard
from simulators.truth import CommandRecord, ConditionRecord, FaultRecord, RunRecord

#: Heap entry kinds.
REPORT: Final = 0
ACTION: Final = 1
STORM: Final = 2
CALLBACK: Final = 3

ESTIMATED: Final = ("estimated_ts",)
_TIME_KEYS: Final = frozenset({"at", "from", "to", "cancelled_at", "last_open_at", "fails_at", "silent_at"})

#: A heap entry is one int, so 100,000 devices fit in little memory: ordered by simulated time,
#: then by scheduling order; it also holds the device index and the operation (kind, plus an
#: action code in the upper bits). Arguments that are not small ints live in `_args`.
_T_SHIFT: Final = 70
_ORDER_SHIFT: Final = 30
_ORDER_MASK: Final = (1 << 40) - 1
_INDEX_SHIFT: Final = 6
_INDEX_MASK: Final = (1 << 24) - 1
_OP_MASK: Final = 63
#: Simulated times must lie here (the decoders refuse device times outside [2000, 2100)).
_MIN_MS: Final = 946_684_800_000
_MAX_MS: Final = 4_102_444_800_000
_PLACEHOLDER: Final = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


def _fill(template: str, names: dict[str, str]) -> str:
    """A topic template with its ``{name}`` levels filled (an unknown name stays as it is)."""
    return _PLACEHOLDER.sub(lambda m: names.get(m.group(1), m.group(0)), template)


def _uuid(seed: int, n: int) -> str:
    """A version-8 UUID for the `n`-th reading of a run (deterministic from the seed)."""
    b = bytearray(hashlib.blake2b(f"linli-sim:{seed}:{n}".encode(), digest_size=16).digest())
    b[6] = (b[6] & 0x0F) | 0x80
    b[8] = (b[8] & 0x3F) | 0x80
    x = b.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


class Simulation:
    """A fleet's behaviour over simulated time, with scenarios and faults.

    Args:
        inventory: the fleet.
        start: simulated start (aware datetime).
        seed: seeds the run's one numpy Generator (ignored when `rs` is given).
        profiles: the profile engine (default: the shipped profiles).
        scenarios: scenarios to inject (`simulators.scenarios.Scenario`).
        faults: faults to inject.
        rs: the run's random stream, when the caller already drew from it (fleet generation).
    """

    def __init__(
        self,
        *,
        inventory: Inventory,
        start: datetime,
        seed: int = 0,
        profiles: ProfileSet | None = None,
        scenarios: Sequence[Any] = (),
        faults: FaultOptions | None = None,
        rs: RandomStream | None = None,
    ) -> None:
        from simulators.inject import apply_scenario  # inject imports this module's types

        self.inventory = inventory
        self.profiles = profiles if profiles is not None else ProfileSet.shipped()
        self.start_ms = to_ms(start)
        self.seed = seed
        self.faults = faults if faults is not None else FaultOptions()
        self.scenarios = tuple(scenarios)
        self._rs = rs if rs is not None else RandomStream(np.random.default_rng(seed))
        if not _MIN_MS <= self.start_ms < _MAX_MS:
            raise ConfigError(
                None, "start", "must lie between 2000 and 2100 (devices report plausible times)"
            )
        self._heap: list[int] = []
        self._args: dict[int, Any] = {}
        self._order = 0
        self._made = 0
        self._sent = 0
        self._conditions = 0
        self._notes: list[Note] = []
        self.now_ms = self.start_ms
        self.counts = {"messages": 0, "malformed": 0, "duplicates": 0, "reordered": 0, "conditions": 0}
        self._encode = self.profiles.encode_message
        self.models: dict[str, Behaviour] = {t: cls(self._rs, self) for t, cls in MODELS.items()}
        self.devices = self._build_devices()
        #: device id -> device, while scenarios are applied (dropped afterwards: 100,000 entries).
        self.by_id = {d.device_id: d for d in self.devices} if self.scenarios else {}
        self.by_gateway: dict[str, list[SimDevice]] = {}
        for dev in self.devices:
            self.by_gateway.setdefault(dev.device.gateway_id, []).append(dev)
        self._notes.append(Note(self.start_ms, self._header()))
        self._device_faults()
        for scenario in self.scenarios:
            apply_scenario(self, scenario)
        self.by_id = {}
        #: devices whose profile carries commands, by id (made at the first command)
        self._commanded = frozenset(p.id for p in self.profiles.profiles.values() if p.commands)
        self._commandable: dict[str, SimDevice] | None = None
        self._acks = 0
        rs = self._rs
        for dev in self.devices:
            dev.behaviour.setup(dev, self.start_ms)
            self._push(self.start_ms + round(rs.random() * dev.interval_ms), dev.index, REPORT, 0)

    # -- construction ---------------------------------------------------------------------------

    def _build_devices(self) -> list[SimDevice]:
        shapes: dict[str, ProfileShape] = {}
        intervals: dict[str, int] = {}
        devices: list[SimDevice] = []
        rs = self._rs
        for i, device in enumerate(self.inventory):
            model = self.models.get(device.device_type)
            if model is None:
                known = ", ".join(sorted(self.models))
                raise FleetError(
                    None, f"devices[{i}]", f"no behaviour model for {device.device_type!r} ({known})"
                )
            profile = self.profiles.profiles.get(device.profile)
            if profile is None:
                raise FleetError(None, f"devices[{i}]", f"unknown profile {device.profile!r}")
            if profile.device_type != device.device_type:
                raise FleetError(
                    None, f"devices[{i}]", f"profile {profile.id} is not for a {device.device_type}"
                )
            shape = shapes.get(profile.id)
            if shape is None:
                shape = shapes[profile.id] = ProfileShape(profile)
            interval_ms = intervals.get(profile.id) or intervals.setdefault(
                profile.id, round(profile.report_interval_s * 1000)
            )
            dev = SimDevice(index=i, device=device, shape=shape, behaviour=model, interval_ms=interval_ms)
            init_power_and_radio(dev, rs)
            devices.append(dev)
        return devices

    def _header(self) -> RunRecord:
        return RunRecord(
            seed=self.seed,
            start=iso(self.start_ms),
            devices=len(self.inventory),
            gateways=len(self.inventory.gateways()),
            scenarios=[s.name for s in self.scenarios],
            faults=self.faults,
        )

    def _device_faults(self) -> None:
        f = self.faults
        rs = self._rs
        if f.clock_skew_min > 0:
            for dev in self.devices:
                if dev.shape.has_ts and rs.chance(f.skew_share):
                    dev.skew_ms = round(rs.uniform(-f.clock_skew_min, f.clock_skew_min) * 60_000)
                    record = FaultRecord(
                        fault="clock_skew", device_id=dev.device_id, skew_s=dev.skew_ms / 1000
                    )
                    self._notes.append(Note(self.start_ms, record))
        if f.silent_share > 0:
            for dev in self.devices:
                if rs.chance(f.silent_share):
                    t = self.start_ms + round(rs.random() * f.silent_within_ms)
                    self.silence(dev, (t, 2**62), reason="fault")

    # -- the API behaviour models and scenarios use ----------------------------------------------

    @property
    def rs(self) -> RandomStream:
        return self._rs

    def _push(self, t_ms: int, index: int, kind: int, arg: Any) -> None:
        self._order += 1
        if type(arg) is int and 0 <= arg < 16:
            op = kind | arg << 2
        else:
            op = kind | 15 << 2
            self._args[self._order] = arg
        heappush(self._heap, (((t_ms << 40 | self._order) << 24 | max(index, 0)) << 6) | op)

    def schedule(self, t_ms: int, dev: SimDevice, code: int) -> None:
        self._push(t_ms, dev.index, ACTION, code)

    def report_now(self, t_ms: int, dev: SimDevice) -> None:
        """Have `dev` send a report at `t_ms` (a state change a scenario made)."""
        self._push(t_ms, dev.index, ACTION, REPORT_NOW)

    def at(self, t_ms: int, callback: Callable[[int], None]) -> None:
        """Call ``callback(t_ms)`` when the simulation reaches `t_ms`."""
        self._push(t_ms, 0, CALLBACK, callback)

    def storm(self, t_ms: int, dev: SimDevice, end_ms: int, step_ms: int) -> None:
        """Extra reports from `dev` every ~`step_ms` in [t_ms, end_ms) (a gateway storm)."""
        self._push(t_ms, dev.index, STORM, (end_ms, step_ms))

    def _condition_note(self, t_ms: int, record: dict[str, Any], source: str) -> tuple[str, Note]:
        """The `ConditionRecord` of `record` (times in epoch ms become ISO 8601); a key the record
        does not define is a `msgspec.ValidationError` (a programming error, caught by the tests)."""
        self._conditions += 1
        cid = f"c{self._conditions}"
        body: dict[str, Any] = {"id": cid, "at": iso(t_ms), "source": source}
        for key, value in record.items():
            body[key] = iso(value) if key in _TIME_KEYS and isinstance(value, int) else value
        return cid, Note(t_ms, msgspec.convert(body, ConditionRecord))

    def natural_condition(
        self, t_ms: int, record: dict[str, Any], dev: SimDevice, *, until_ms: int | None
    ) -> str:
        cid, note = self._condition_note(t_ms, record, "behaviour")
        self._notes.append(note)
        self.counts["conditions"] += 1
        end = until_ms if until_ms is not None and until_ms > t_ms else t_ms + 1
        self.tag(dev, Tag(start_ms=t_ms, end_ms=end, condition_id=cid, once=end == t_ms + 1))
        return cid

    def scenario_condition(self, t_ms: int, record: dict[str, Any], scenario: str) -> str:
        """A condition a scenario injects; its record is written when the simulation reaches `t_ms`."""
        cid, note = self._condition_note(t_ms, record, f"scenario:{scenario}")

        def write(now: int) -> None:
            self._notes.append(note)
            self.counts["conditions"] += 1

        self.at(t_ms, write)
        return cid

    def tag(self, dev: SimDevice, tag: Tag) -> None:
        dev.tags = [*(dev.tags or []), tag]

    def silence(self, dev: SimDevice, window: Window, *, reason: str, scenario: str | None = None) -> str:
        """`dev` sends nothing during `window`; returns the ``device_silent`` condition id."""
        start, end = window
        dev.silent = [*(dev.silent or []), window]
        record: dict[str, Any] = {
            "condition": "device_silent",
            "device_id": dev.device_id,
            "from": start,
            "to": end if end < 2**62 else None,
        }
        if scenario is not None:
            return self.scenario_condition(start, record, scenario)
        fault = FaultRecord(fault="silent", device_id=dev.device_id, from_=iso(start))
        cid, note = self._condition_note(start, record, "fault")

        def write(now: int) -> None:
            self._notes.append(Note(now, fault))
            self._notes.append(note)
            self.counts["conditions"] += 1

        self.at(start, write)
        return cid

    # -- running --------------------------------------------------------------------------------

    def run(self, *, until_ms: int | None = None) -> Iterator[Emission | Note]:
        """Emissions and notes in simulated-time order, until `until_ms` (None: forever).

        May be called again with a later `until_ms` to continue where the last call stopped.
        """
        heap = self._heap
        notes = self._notes
        devices = self.devices
        rs = self._rs
        while heap:
            if notes:
                yield from notes
                notes.clear()
            key = heap[0]
            t = key >> _T_SHIFT
            if until_ms is not None and t >= until_ms:
                break
            heappop(heap)
            self.now_ms = t
            op = key & _OP_MASK
            kind = op & 3
            code = op >> 2
            arg: Any = self._args.pop(key >> _ORDER_SHIFT & _ORDER_MASK) if code == 15 else code
            if kind == CALLBACK:
                arg(t)
                continue
            index = key >> _INDEX_SHIFT & _INDEX_MASK
            dev = devices[index]
            mark = len(notes)
            sample: Sample | None
            if kind == REPORT:
                self._order += 1
                nxt = t + round(dev.interval_ms * rs.uniform(0.9, 1.1))
                heappush(heap, ((nxt << 40 | self._order) << 24 | index) << 6 | REPORT)
                sample = dev.behaviour.report(dev, t)
            elif kind == STORM:
                end, step = arg
                nxt = t + round(step * rs.uniform(0.7, 1.3))
                if nxt < end:
                    self._push(nxt, index, STORM, arg)
                sample = dev.behaviour.report(dev, t)
            else:
                sample = dev.behaviour.act(dev, t, arg)
            if sample is None:
                continue
            if (dev.silent is not None and in_windows(dev.silent, t)) or (
                dev.fade is not None and self._faded(dev.fade, t)
            ):
                del notes[mark:]
                continue
            out = self._emit(dev, t, sample[0], sample[1])
            if notes:
                yield from notes
                notes.clear()
            if out is not None:
                yield from out
        if notes:
            yield from notes
            notes.clear()

    def obey(self, t_ms: int, heard: list[Heard]) -> tuple[list[Emission | Note], list[tuple[str, bytes]]]:
        """Commands the devices received (`simulators.commands`), acted on at `t_ms`: the ground
        truth's ``command`` records and the reports that show their effect, in order, and the
        network's acknowledgements to publish as they are (confirmed LoRaWAN downlinks)."""
        if self._commandable is None:
            self._commandable = {
                d.device_id: d for d in self.devices if d.shape.profile_id in self._commanded
            }
        out: list[Emission | Note] = []
        acks: list[tuple[str, bytes]] = []
        for h in heard:
            command = h.command
            dev = self._commandable.get(command.device_id)
            if dev is None:
                continue
            sample: Sample | None
            if dev.silent is not None and in_windows(dev.silent, t_ms):
                sample, effect = None, "not received: the device is silent (fault)"
            elif command.name == "configure":
                seconds = int(command.params["report_interval_s"])
                dev.interval_ms = seconds * 1000
                sample, effect = dev.behaviour.report(dev, t_ms), f"reports every {seconds} s from now"
            else:
                sample, effect = dev.behaviour.command(dev, t_ms, command.name, command.params)
            emitted = self._emit(dev, t_ms, sample[0], sample[1]) if sample is not None else None
            out.extend(self._notes)
            self._notes.clear()
            record = CommandRecord(
                at=iso(t_ms),
                device_id=command.device_id,
                name=command.name,
                params=command.params,
                topic=h.topic,
                effect=effect,
                report=emitted[-1].seq if emitted else UNSET,
            )
            out.append(Note(t_ms, record))
            out.extend(emitted or ())
            spec = h.profile.commands[command.name]
            if spec.ack_topic is not None and not effect.startswith("not received"):
                self._acks += 1
                names = {**command.topic_vars, "device_id": command.device_id}
                topic = _fill(spec.ack_topic, names)
                doc = {
                    "time": iso(t_ms),
                    "deviceInfo": {"devEui": command.device_id},
                    "queueItemId": _uuid(self.seed, 1 << 40 | self._acks),
                    "acknowledged": True,
                    "fCntDown": self._acks,
                }
                acks.append((topic, msgspec.json.encode(doc)))
        return out, acks

    def _faded(self, fade: tuple[int, int, int], t: int) -> bool:
        """Whether a fading radio loses the message sent at `t`."""
        start, silent, end = fade
        if t < start or t >= end:
            return False
        return t >= silent or self._rs.random() < (t - start) / (silent - start)

    def flush_held(self) -> Iterator[Emission]:
        """Messages still held back for reordering (sent late, but nothing newer was sent)."""
        for dev in self.devices:
            held = dev.held
            if held is not None:
                dev.held = None
                for em in held:
                    em.reordered = False
                    em.t_ms = max(em.t_ms, self.now_ms)
                    yield self._sequenced(em)

    def _sequenced(self, em: Emission) -> Emission:
        em.seq = self._sent
        self._sent += 1
        c = self.counts
        c["messages"] += 1
        if em.malformed:
            c["malformed"] += 1
        if em.duplicate:
            c["duplicates"] += 1
        if em.reordered:
            c["reordered"] += 1
        return em

    def _emit(
        self, dev: SimDevice, t: int, metrics: dict[str, float], events: tuple[str, ...]
    ) -> list[Emission] | None:
        """The message(s) `dev` sends at `t` (none while one is held back for reordering)."""
        rs = self._rs
        shape = dev.shape
        level = drain(dev, t)
        if level is not None:
            metrics["battery_pct"] = level
        if shape.has_rssi:
            metrics["rssi_dbm"] = rs.normal(0.0, 2.0) - dev.path_loss
        if shape.has_lqi:
            metrics["link_quality"] = dev.lqi + rs.normal(0.0, 6.0)
        carried = shape.carry(metrics)
        # battery_low as the pipeline sees it: the level the payload reports (rounded by some
        # dialects; absent from others), the first time it is under LOW_BATTERY_PCT.
        reported = carried.get("battery_pct")
        if reported is not None and not dev.battery_low and reported < LOW_BATTERY_PCT:
            dev.battery_low = True
            record = {"condition": "battery_low", "device_id": dev.device_id, "battery_pct": round(reported)}
            self.natural_condition(t, record, dev, until_ms=None)
        carried_events = tuple(sorted({e for e in events if e in shape.events})) if events else ()
        device = dev.device
        if shape.has_ts:
            ts_ms = t + dev.skew_ms
            if shape.whole_seconds:
                ts_ms -= ts_ms % 1000
            received = from_ms(t)
            ts = received if ts_ms == t else from_ms(ts_ms)
            quality: tuple[str, ...] = ()
        else:
            ts = received = from_ms(t)
            quality = ESTIMATED
        self._made += 1
        reading = Reading(
            device_id=device.device_id,
            device_type=device.device_type,
            ts=ts,
            received_at=received,
            metrics=carried,
            events=carried_events,
            quality=quality,
            profile=shape.profile_id,
            reading_id=_uuid(self.seed, self._made) if shape.has_reading_id else "",
        )
        topic, payload, reading_id = self._encode(reading)
        if not shape.has_reading_id:
            # The dialect has no message id: the id is the one the decoder derives from the payload.
            reading = msgspec.structs.replace(reading, reading_id=reading_id)
        tags = self._tags(dev, t, carried, carried_events) if dev.tags is not None else ()
        em = Emission(
            seq=-1,
            t_ms=t,
            topic=topic,
            payload=payload,
            reading=reading,
            gateway_id=device.gateway_id,
            skew_ms=dev.skew_ms if shape.has_ts else 0,
            conditions=tags,
        )
        f = self.faults
        if not (f.malformed or f.duplicate or f.reordered):
            return [self._sequenced(em)]
        group = [em]
        u = rs.random()
        if u < f.malformed:
            em.payload, em.malform = corrupt(payload, rs, is_json=shape.is_json)
            em.malformed = True
        elif u < f.malformed + f.duplicate:
            group.append(
                Emission(
                    seq=-1,
                    t_ms=t,
                    topic=topic,
                    payload=payload,
                    reading=reading,
                    gateway_id=em.gateway_id,
                    skew_ms=em.skew_ms,
                    conditions=tags,
                    duplicate=True,
                )
            )
        held = dev.held
        if f.reordered and shape.has_ts and not em.malformed and held is None and rs.random() < f.reordered:
            for g in group:
                g.reordered = True
            dev.held = group
            return None
        if held is not None:
            dev.held = None
            for g in held:
                g.t_ms = t
            group.extend(held)
        return [self._sequenced(g) for g in group]

    def _tags(
        self, dev: SimDevice, t: int, metrics: dict[str, float], events: tuple[str, ...]
    ) -> tuple[str, ...]:
        found: list[str] = []
        keep: list[Tag] = []
        for tag in dev.tags or ():
            if t >= tag.end_ms:
                continue
            if t >= tag.start_ms and (tag.when is None or tag.when(metrics, events)):
                found.append(tag.condition_id)
                if tag.once:
                    continue
            keep.append(tag)
        dev.tags = keep or None
        return tuple(found)
