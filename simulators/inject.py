"""Applying a scenario to a simulation: pick devices, change their behaviour, record the conditions.

Each event type changes what the chosen devices do in a time window, records the condition a
correct pipeline should detect (written to the ground truth when the simulation reaches it), and
tags the messages that carry it. Devices named ``auto`` are drawn from the run's random stream
among the suitable ones, never twice, and never a device silenced by fault injection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from device_profiles import Event
from simulators.behaviour import DoorBehaviour, ManholeBehaviour, SimDevice, StreetlightBehaviour, Tag
from simulators.behaviour.sos import SCENARIO_PRESS
from simulators.clock import MS_PER_DAY, MS_PER_HOUR
from simulators.errors import ScenarioError
from simulators.scenarios import (
    BatteryDraining,
    DevicesSilent,
    GatewayStorm,
    LampDegrading,
    LampFailure,
    LampOnDaytime,
    ManholeLifted,
    RadioFading,
    ResidentInactive,
    Scenario,
    SosPress,
    duration_ms,
    resolve_at,
)

if TYPE_CHECKING:
    from simulators.simulation import Simulation

Check = Callable[[dict[str, float], tuple[str, ...]], bool]


def _lamp_on(metrics: dict[str, float], events: tuple[str, ...]) -> bool:
    return metrics.get("lamp_on") == 1.0


def _lamp_on_no_power(metrics: dict[str, float], events: tuple[str, ...]) -> bool:
    return metrics.get("lamp_on") == 1.0 and metrics.get("power_w") == 0.0


def _cover_open(metrics: dict[str, float], events: tuple[str, ...]) -> bool:
    return metrics.get("cover_open") == 1.0


def _pressed(metrics: dict[str, float], events: tuple[str, ...]) -> bool:
    return Event.SOS_PRESSED in events


class _Picker:
    def __init__(self, sim: Simulation, scenario: Scenario, index: int) -> None:
        self.sim = sim
        self.where = f"events[{index}]"
        self.scenario = scenario
        used: set[str] = getattr(sim, "_scenario_used", set())
        sim._scenario_used = used  # type: ignore[attr-defined]
        self.used = used

    def fail(self, field: str, detail: str) -> ScenarioError:
        return ScenarioError(f"scenario {self.scenario.name}", f"{self.where}.{field}", detail)

    def device(
        self, spec: str, device_type: str, test: Callable[[SimDevice], bool] | None = None
    ) -> SimDevice:
        sim = self.sim
        if spec != "auto":
            dev = sim.by_id.get(spec)
            if dev is None:
                raise self.fail("device", f"{spec!r} is not in the inventory")
            if dev.device.device_type != device_type:
                raise self.fail("device", f"{spec!r} is a {dev.device.device_type}, not a {device_type}")
            if test is not None and not test(dev):
                raise self.fail("device", f"{spec!r} does not suit this event")
            self.used.add(spec)
            return dev
        candidates = [
            d
            for d in sim.devices
            if d.device.device_type == device_type
            and d.silent is None
            and d.device_id not in self.used
            and (test is None or test(d))
        ]
        if not candidates:
            raise self.fail("device", f"the fleet has no (unused) {device_type} for this event")
        dev = sim.rs.choice(candidates)
        self.used.add(dev.device_id)
        return dev


def apply_scenario(sim: Simulation, scenario: Scenario) -> None:
    """Inject every event of `scenario` into `sim` (before its devices are set up)."""
    for i, event in enumerate(scenario.events):
        pick = _Picker(sim, scenario, i)
        name = scenario.name
        if isinstance(event, ResidentInactive):
            dev = pick.device(event.device, "door_contact", lambda d: bool(d.device.living_alone))
            t = resolve_at(event, start_ms=sim.start_ms, offset_ms=dev.offset_ms)
            end = t + round(event.hours * MS_PER_HOUR)
            model = dev.behaviour
            assert isinstance(model, DoorBehaviour)  # noqa: S101 - chosen by device type
            model.quiet(dev, (t, end))
            record = _record(
                "resident_inactive", dev, t, end, hours=event.hours, resident_id=dev.device.resident_id
            )
            _tag(sim, dev, sim.scenario_condition(t, record, name), t, end)
        elif isinstance(event, ManholeLifted):
            dev = pick.device(event.device, "manhole_cover")
            t = resolve_at(event, start_ms=sim.start_ms, offset_ms=dev.offset_ms)
            end = t + duration_ms(event.duration)
            manhole = dev.behaviour
            assert isinstance(manhole, ManholeBehaviour)  # noqa: S101
            manhole.lift(dev, (t, end), event.tilt_deg)
            sim.report_now(t, dev)
            sim.report_now(end, dev)
            record = _record("manhole_open", dev, t, end, tilt_deg=event.tilt_deg)
            _tag(sim, dev, sim.scenario_condition(t, record, name), t, end, _cover_open)
        elif isinstance(event, LampFailure | LampOnDaytime):
            dev = pick.device(event.device, "streetlight")
            t = resolve_at(event, start_ms=sim.start_ms, offset_ms=dev.offset_ms)
            end = t + duration_ms(event.duration)
            light = dev.behaviour
            assert isinstance(light, StreetlightBehaviour)  # noqa: S101
            failed = isinstance(event, LampFailure)
            light.override(dev, "failed" if failed else "forced_on", (t, end))
            sim.report_now(t, dev)
            sim.report_now(end, dev)
            record = _record("lamp_failure" if failed else "lamp_on_daytime", dev, t, end)
            check = _lamp_on_no_power if failed else _lamp_on
            _tag(sim, dev, sim.scenario_condition(t, record, name), t, end, check)
        elif isinstance(event, SosPress):
            dev = pick.device(event.device, "sos_button")
            t = resolve_at(event, start_ms=sim.start_ms, offset_ms=dev.offset_ms)
            sim.schedule(t, dev, SCENARIO_PRESS)
            record = _record(
                Event.SOS_PRESSED,
                dev,
                t,
                None,
                resident_id=dev.device.resident_id,
                event=Event.SOS_PRESSED,
                cancelled_at=None,
            )
            cid = sim.scenario_condition(t, record, name)
            sim.tag(dev, Tag(start_ms=t, end_ms=t + 1, condition_id=cid, when=_pressed, once=True))
        elif isinstance(event, GatewayStorm):
            _storm(sim, pick, event, name)
        elif isinstance(event, DevicesSilent):
            _silent(sim, pick, event, name)
        elif isinstance(event, LampDegrading | BatteryDraining | RadioFading):
            _slow(sim, pick, event, name)


def _record(condition: str, dev: SimDevice, start: int, end: int | None, **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"condition": condition, "device_id": dev.device_id}
    if end is not None:
        record["from"] = start
        record["to"] = end
    record.update(extra)
    return record


def _tag(sim: Simulation, dev: SimDevice, cid: str, start: int, end: int, when: Check | None = None) -> None:
    sim.tag(dev, Tag(start_ms=start, end_ms=end, condition_id=cid, when=when))


def _storm(sim: Simulation, pick: _Picker, event: GatewayStorm, name: str) -> None:
    if event.gateway == "auto":
        gateways = sorted(g for g in sim.by_gateway if g not in pick.used)
        if not gateways:
            raise pick.fail("gateway", "the fleet has no (unused) gateway")
        gateway = sim.rs.choice(gateways)
    elif event.gateway in sim.by_gateway:
        gateway = event.gateway
    else:
        raise pick.fail("gateway", f"{event.gateway!r} is not a gateway of the inventory")
    pick.used.add(gateway)
    devices = sim.by_gateway[gateway]
    t = resolve_at(event, start_ms=sim.start_ms, offset_ms=devices[0].offset_ms)
    end = t + duration_ms(event.duration)
    record = {
        "condition": "gateway_storm",
        "gateway_id": gateway,
        "from": t,
        "to": end,
        "factor": event.factor,
        "devices": len(devices),
    }
    cid = sim.scenario_condition(t, record, name)
    factor = event.factor

    def begin(now: int) -> None:
        rs = sim.rs
        for dev in devices:
            step = max(1000, round(dev.interval_ms / (factor - 1)))
            sim.storm(now + round(rs.random() * step), dev, end, step)

    sim.at(t, begin)
    for dev in devices:
        _tag(sim, dev, cid, t, end)


def _silent(sim: Simulation, pick: _Picker, event: DevicesSilent, name: str) -> None:
    if event.devices:
        chosen = []
        for device_id in event.devices:
            dev = sim.by_id.get(device_id)
            if dev is None:
                raise pick.fail("devices", f"{device_id!r} is not in the inventory")
            chosen.append(dev)
    else:
        kinds = (
            [event.device_type] if event.device_type else sorted({d.device.device_type for d in sim.devices})
        )
        chosen = []
        for k in range(event.count):
            chosen.append(pick.device("auto", kinds[k % len(kinds)]))
    for dev in chosen:
        t = resolve_at(event, start_ms=sim.start_ms, offset_ms=dev.offset_ms)
        end = t + duration_ms(event.duration)
        cid = sim.silence(dev, (t, end), reason="scenario", scenario=name)
        sim.report_now(end, dev)
        sim.tag(dev, Tag(start_ms=end, end_ms=2**62, condition_id=cid, once=True))


def _slow(
    sim: Simulation, pick: _Picker, event: LampDegrading | BatteryDraining | RadioFading, name: str
) -> None:
    """The slow conditions (the detectors': docs/detection.md), recorded with their onset."""
    if isinstance(event, LampDegrading):
        dev = pick.device(event.device, "streetlight")
        t = resolve_at(event, start_ms=sim.start_ms, offset_ms=dev.offset_ms)
        fail = t + round(event.days * MS_PER_DAY)
        end = fail + duration_ms(event.failed_for)
        light = dev.behaviour
        assert isinstance(light, StreetlightBehaviour)  # noqa: S101 - chosen by device type
        light.degrade(dev, t, fail, event.to_ratio)
        light.override(dev, "failed", (fail, end))
        record = _record("lamp_degrading", dev, t, end, fails_at=fail, to_ratio=event.to_ratio)
        sim.scenario_condition(t, record, name)
    elif isinstance(event, BatteryDraining):
        dev = pick.device(event.device, event.device_type)
        t = resolve_at(event, start_ms=sim.start_ms, offset_ms=dev.offset_ms)
        rate = event.from_pct / (event.days * MS_PER_DAY)
        dev.discharge = (t, event.from_pct, rate)
        if dev.battery is not None and t <= sim.start_ms:
            dev.battery = event.from_pct
        empty = t + round(event.days * MS_PER_DAY)
        record = _record("battery_draining", dev, t, empty, from_pct=event.from_pct, days=event.days)
        sim.scenario_condition(t, record, name)
    else:
        dev = pick.device(event.device, event.device_type)
        t = resolve_at(event, start_ms=sim.start_ms, offset_ms=dev.offset_ms)
        silent = t + duration_ms(event.ramp)
        end = silent + duration_ms(event.silent_for)
        dev.fade = (t, silent, silent)  # losses ramp up; then the silence, a condition of its own
        record = _record("radio_fading", dev, t, end, silent_at=silent)
        _tag(sim, dev, sim.scenario_condition(t, record, name), t, silent)  # the messages that got through
        cid = sim.silence(dev, (silent, end), reason="scenario", scenario=name)
        sim.report_now(end, dev)
        sim.tag(dev, Tag(start_ms=end, end_ms=2**62, condition_id=cid, once=True))
