"""A community's stored history as the detectors read it: flat numpy arrays, one per metric.

A `Series` holds one metric's readings (or one kind of moment, such as door activity) of all the
devices of a community in three arrays sorted by device, then time: ``dev`` (the device's index
in `History.devices`), ``t`` (Unix seconds) and ``v`` (the value). Everything a detector needs per
device (the last value before a time, the readings in a window, a straight line through them) is
then one `numpy.searchsorted` or one `numpy.bincount` over all devices at once: no Python loop
per device. The service fills a `History` from TimescaleDB (`cloud.alerts.detect.source`); the
benchmark fills it from a simulation; tests build it by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from cloud.alerts.model import DeviceInfo

#: Names of the series that are not a stored metric.
ACTIVITY: Final = "activity"  # door activity of residents: contact opened, door_opened events
MESSAGES: Final = "messages"  # messages received per device and hour (t: the hour, v: how many)
FULL_POWER: Final = "power_full_w"  # a lamp's power at full output, normalised to 100 % dim level

_SHIFT: Final = 34  # key = device << 34 | seconds: seconds fit until the year 2514

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


class Series:
    """One metric of a community's devices, sorted by device then time.

    Build it with `Series.of` (any order; sorted there). ``starts[d]:starts[d+1]`` are the
    positions of device ``d``.
    """

    __slots__ = ("dev", "keys", "starts", "t", "v")

    def __init__(self, *, dev: I64, t: I64, v: F64, n_devices: int) -> None:
        self.dev = dev
        self.t = t
        self.v = v
        self.keys: I64 = (dev << _SHIFT) | t
        self.starts: I64 = np.searchsorted(dev, np.arange(n_devices + 1, dtype=np.int64)).astype(np.int64)

    @classmethod
    def of(
        cls,
        dev: Iterable[int] | npt.ArrayLike,
        t: Iterable[int] | npt.ArrayLike,
        v: Iterable[float] | npt.ArrayLike | None = None,
        *,
        n_devices: int,
    ) -> Series:
        d = np.asarray(dev, dtype=np.int64)
        ts = np.asarray(t, dtype=np.int64)
        vs = np.ones(len(d)) if v is None else np.asarray(v, dtype=np.float64)
        if not (len(d) == len(ts) == len(vs)):
            raise ValueError("dev, t and v differ in length")
        if len(ts) and (ts.min() < 0 or ts.max() >= 1 << _SHIFT):
            raise ValueError("times must be Unix seconds after 1970")
        order = np.lexsort((ts, d))
        return cls(dev=d[order], t=ts[order], v=vs[order], n_devices=n_devices)

    @classmethod
    def empty(cls, n_devices: int) -> Series:
        return cls.of([], [], [], n_devices=n_devices)

    def __len__(self) -> int:
        return len(self.t)

    def key(self, dev: I64 | int, t: I64 | int) -> I64:
        return (np.asarray(dev, dtype=np.int64) << _SHIFT) | np.asarray(t, dtype=np.int64)

    def last_at(self, devs: I64, now: int) -> tuple[I64, F64]:
        """Per device of `devs`: time and value of its last reading at or before `now` (-1, nan: none)."""
        pos = np.searchsorted(self.keys, self.key(devs, now), side="right") - 1
        ok = (pos >= 0) & (self.dev[np.maximum(pos, 0)] == devs) if len(self) else np.zeros(len(devs), bool)
        safe = np.maximum(pos, 0)
        t = np.where(ok, self.t[safe] if len(self) else 0, -1).astype(np.int64)
        v = np.where(ok, self.v[safe] if len(self) else np.nan, np.nan)
        return t, v

    def first_from(self, devs: I64, start: int, now: int) -> I64:
        """Per device: time of its first reading in ``[start, now]`` (-1: none)."""
        pos = np.searchsorted(self.keys, self.key(devs, start), side="left")
        if not len(self):
            return np.full(len(devs), -1, dtype=np.int64)
        safe = np.minimum(pos, len(self) - 1)
        ok = (pos < len(self)) & (self.dev[safe] == devs) & (self.t[safe] <= now)
        return np.where(ok, self.t[safe], -1).astype(np.int64)

    def next_after(self, devs: I64, t: I64) -> I64:
        """Per (device, time) pair: the time of the device's first reading after `t` (-1: none)."""
        pos = np.searchsorted(self.keys, self.key(devs, t), side="right")
        if not len(self):
            return np.full(np.shape(t), -1, dtype=np.int64)
        safe = np.minimum(pos, len(self) - 1)
        ok = (pos < len(self)) & (self.dev[safe] == devs)
        return np.where(ok, self.t[safe], -1).astype(np.int64)

    def window(self, start: int, end: int) -> Series:
        """The readings with ``start <= t < end`` (every device)."""
        keep = (self.t >= start) & (self.t < end)
        return Series(dev=self.dev[keep], t=self.t[keep], v=self.v[keep], n_devices=len(self.starts) - 1)


class LineFit:
    """Least-squares straight lines ``v = level + slope * (t - at)``, one per device, from one
    pass of `numpy.bincount` over a series (``n``: readings per device; ``span``: seconds
    between each device's first and last reading)."""

    __slots__ = ("level", "n", "slope", "span")

    def __init__(self, *, series: Series, at: int, n_devices: int) -> None:
        s = series
        x = (s.t - at).astype(np.float64)
        n = np.bincount(s.dev, minlength=n_devices).astype(np.float64)
        sx = np.bincount(s.dev, x, minlength=n_devices)
        sy = np.bincount(s.dev, s.v, minlength=n_devices)
        sxx = np.bincount(s.dev, x * x, minlength=n_devices)
        sxy = np.bincount(s.dev, x * s.v, minlength=n_devices)
        den = n * sxx - sx * sx
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = np.where(den > 0, (n * sxy - sx * sy) / np.where(den > 0, den, 1.0), np.nan)
            level = np.where(n > 0, (sy - slope * sx) / np.where(n > 0, n, 1.0), np.nan)
        first = np.full(n_devices, np.inf)
        last = np.full(n_devices, -np.inf)
        np.minimum.at(first, s.dev, x)
        np.maximum.at(last, s.dev, x)
        self.n = n
        self.slope: F64 = slope
        self.level: F64 = level
        self.span: F64 = np.where(n > 0, last - first, 0.0)


def group_median(group: I64, values: F64, n_groups: int) -> tuple[F64, I64]:
    """Median of `values` per group id (``0 <= group < n_groups``) and the count per group."""
    count = np.bincount(group, minlength=n_groups).astype(np.int64)
    out = np.full(n_groups, np.nan)
    if len(values):
        order = np.lexsort((values, group))
        sv = values[order]
        starts = np.concatenate(([0], np.cumsum(count)[:-1]))
        has = count > 0
        lo = starts[has] + (count[has] - 1) // 2
        hi = starts[has] + count[has] // 2
        out[has] = (sv[lo] + sv[hi]) / 2
    return out, count


class History:
    """What the detectors read about one community up to `now` (Unix seconds).

    Args:
        devices: the community's devices (index = position).
        series: metric name (or `ACTIVITY`, `MESSAGES`) -> its series over these devices.
        intervals: each device's report interval in seconds (from its profile), by position.
    """

    __slots__ = ("devices", "index", "intervals", "memo", "series")

    def __init__(
        self,
        *,
        devices: Sequence[DeviceInfo],
        series: Mapping[str, Series],
        intervals: Sequence[float] | None = None,
    ) -> None:
        self.devices = tuple(devices)
        self.index = {d.device_id: i for i, d in enumerate(self.devices)}
        self.series = dict(series)
        #: what a detector derived from this history and may reuse at a later `now` (the same arrays)
        self.memo: dict[tuple[object, ...], object] = {}
        given = intervals if intervals is not None else [d.report_interval_s for d in self.devices]
        self.intervals: F64 = np.asarray(given, dtype=np.float64)

    def get(self, name: str) -> Series:
        found = self.series.get(name)
        return found if found is not None else Series.empty(len(self.devices))

    def select(self, *, device_types: Sequence[str], living_alone: bool = False) -> I64:
        """Indexes of the devices of `device_types` (empty: all), only those of residents living
        alone if `living_alone`."""
        return np.asarray(
            [
                i
                for i, d in enumerate(self.devices)
                if (not device_types or d.device_type in device_types)
                and (d.living_alone or not living_alone)
            ],
            dtype=np.int64,
        )
