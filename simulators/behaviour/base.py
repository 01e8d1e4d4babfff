"""What behaviour models share: the per-device runtime record, samples, and the engine they talk to.

A model owns the device-type-specific state (``SimDevice.state``) and answers two questions:
what does a periodic report say now (`Behaviour.report`), and what happens at a time the model
asked to be woken (`Behaviour.act`: a door opening, an SOS press, dusk). Battery, radio and
faults are the engine's: models return only their own metrics and events.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Final, Protocol

from device_profiles.inventory import Device
from simulators.rand import RandomStream
from simulators.shape import ProfileShape

#: `Behaviour.act` code meaning "send a report now" (a state change the engine or a scenario made).
REPORT_NOW: Final = 0

#: Metrics and events of one message, before the profile's shape filters and snaps them.
Sample = tuple[dict[str, float], tuple[str, ...]]

_OFFSETS: dict[int, int] = {}

#: A scheduled window ``[from_ms, to_ms)``.
Window = tuple[int, int]


def in_windows(windows: list[Window] | None, t_ms: int) -> bool:
    if not windows:
        return False
    return any(a <= t_ms < b for a, b in windows)


class Tag:
    """Marks messages of one device that carry a condition (ground truth ``conditions``).

    Args:
        start_ms, end_ms: the window the messages' send time must fall in.
        condition_id: the condition's id in the ground truth.
        when: a further test on (metrics, events); None accepts every message in the window.
        once: tag only the first matching message.
    """

    __slots__ = ("condition_id", "end_ms", "once", "start_ms", "when")

    def __init__(
        self,
        *,
        start_ms: int,
        end_ms: int,
        condition_id: str,
        when: Any = None,
        once: bool = False,
    ) -> None:
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.condition_id = condition_id
        self.when = when
        self.once = once


class SimDevice:
    """One simulated device at run time (everything the engine needs per message, in slots)."""

    __slots__ = (
        "battery",
        "battery_low",
        "behaviour",
        "device",
        "discharge",
        "drain",
        "fade",
        "held",
        "index",
        "interval_ms",
        "lqi",
        "offset_ms",
        "path_loss",
        "shape",
        "silent",
        "skew_ms",
        "state",
        "tags",
    )

    def __init__(
        self, *, index: int, device: Device, shape: ProfileShape, behaviour: Behaviour, interval_ms: int
    ) -> None:
        self.index = index
        self.device = device
        self.shape = shape
        self.behaviour = behaviour
        self.interval_ms = interval_ms
        #: local clock offset from UTC, from the longitude (the routine's "07:00" is local time).
        hours = round(device.location.lon / 15)
        self.offset_ms = _OFFSETS.get(hours) or _OFFSETS.setdefault(hours, hours * 3_600_000)
        self.battery: float | None = None
        self.battery_low = False
        self.drain = 0.0
        #: a battery running flat by time, not by message: (from ms, level then, points per ms)
        self.discharge: tuple[int, float, float] | None = None
        #: radio trouble: (from ms, silent from ms, silent until ms); losses ramp up in between
        self.fade: tuple[int, int, int] | None = None
        #: radio baselines as small ints (shared objects: 100,000 devices stay small): path loss in
        #: dB (RSSI is its negative) and Zigbee link quality.
        self.path_loss = 90
        self.lqi = 150
        self.skew_ms = 0
        self.silent: list[Window] | None = None
        self.tags: list[Tag] | None = None
        self.held: Any = None
        self.state: Any = None

    @property
    def device_id(self) -> str:
        return self.device.device_id

    def local_day_start(self, t_ms: int) -> int:
        """UTC epoch ms of the local midnight starting the day that contains `t_ms`."""
        day = 86_400_000
        return (t_ms + self.offset_ms) // day * day - self.offset_ms

    def local_hour(self, t_ms: int) -> float:
        return ((t_ms + self.offset_ms) % 86_400_000) / 3_600_000


class Context(Protocol):
    """The engine, as models see it."""

    @property
    def rs(self) -> RandomStream: ...

    def schedule(self, t_ms: int, dev: SimDevice, code: int) -> None:
        """Call ``dev.behaviour.act(dev, t_ms, code, ...)`` at simulated time `t_ms`."""

    def natural_condition(
        self, t_ms: int, record: dict[str, Any], dev: SimDevice, *, until_ms: int | None
    ) -> str:
        """Record a condition the device's own behaviour caused; returns its id and tags its messages."""
        ...


class Behaviour(ABC):
    """A device type's behaviour model. One instance serves every device of its type."""

    device_type: ClassVar[str]

    def __init__(self, rs: RandomStream, ctx: Context) -> None:
        self.rs = rs
        self.ctx = ctx

    @abstractmethod
    def setup(self, dev: SimDevice, start_ms: int) -> None:
        """Create ``dev.state`` and schedule the device's first actions."""

    @abstractmethod
    def report(self, dev: SimDevice, t_ms: int) -> Sample:
        """The device's periodic report at `t_ms`."""

    def act(self, dev: SimDevice, t_ms: int, code: int) -> Sample | None:
        """A scheduled action; returns what the device sends then, or None."""
        if code == REPORT_NOW:
            return self.report(dev, t_ms)
        raise ValueError(f"{type(self).__name__}: unknown action code {code}")

    def command(
        self, dev: SimDevice, t_ms: int, name: str, params: Mapping[str, bool | int | str]
    ) -> tuple[Sample | None, str]:
        """A command the device received at `t_ms` (`simulators.commands`): what it sends at once
        (its report showing the effect, or None) and the effect in words for the ground truth.
        ``configure`` is the engine's (the report interval); the models add their own."""
        return None, f"ignored: a {self.device_type} does nothing on {name}"
