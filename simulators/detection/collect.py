"""A simulation's history as the detectors read it from the database, without the database.

`collect` runs a `Simulation` and keeps, per device, what `cloud.alerts.detect.source` would read:
door activity (``contact_open`` = 1), lamps' power at full output (normalised to 100 %),
``lamp_on``, water levels, six-hourly battery means, and messages per hour. It also keeps every
message's time (for the fixed ``device_silent`` rule's moment) and the ground-truth conditions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from cloud.alerts.detect.history import ACTIVITY, FULL_POWER, MESSAGES, History, Series
from cloud.alerts.model import DeviceInfo
from simulators.message import Emission
from simulators.simulation import Simulation
from simulators.truth import ConditionRecord

_SIX_HOURS = 6 * 3600


class Collected:
    """Everything a bench run needs after the simulation (arrays over `devices`)."""

    def __init__(
        self,
        *,
        devices: Sequence[DeviceInfo],
        series: dict[str, Series],
        message_dev: npt.NDArray[np.int64],
        message_t: npt.NDArray[np.int64],
        conditions: list[ConditionRecord],
        messages: int,
    ) -> None:
        self.devices = list(devices)
        self.index = {d.device_id: i for i, d in enumerate(self.devices)}
        self.series = series
        self.message_keys = Series(
            dev=message_dev, t=message_t, v=np.ones(len(message_t)), n_devices=len(self.devices)
        )
        self.conditions = conditions
        self.messages = messages

    def history(self, members: Sequence[int] | None = None) -> History:
        """The whole fleet's history, or that of the devices `members` (one community)."""
        if members is None:
            return History(devices=self.devices, series=self.series)
        pick = np.asarray(members, dtype=np.int64)
        remap = np.full(len(self.devices), -1, dtype=np.int64)
        remap[pick] = np.arange(len(pick))
        out: dict[str, Series] = {}
        for name, s in self.series.items():
            keep = remap[s.dev] >= 0
            out[name] = Series.of(remap[s.dev[keep]], s.t[keep], s.v[keep], n_devices=len(pick))
        return History(devices=[self.devices[i] for i in pick], series=out)


def collect(sim: Simulation, devices: Sequence[DeviceInfo], *, until_ms: int) -> Collected:
    index = {d.device_id: i for i, d in enumerate(devices)}
    act_d: list[int] = []
    act_t: list[int] = []
    lamp: dict[str, tuple[list[int], list[int], list[float]]] = {
        k: ([], [], []) for k in (FULL_POWER, "lamp_on", "water_level_mm", "battery_pct")
    }
    msg_d: list[int] = []
    msg_t: list[int] = []
    conditions: list[ConditionRecord] = []
    for item in sim.run(until_ms=until_ms):
        if not isinstance(item, Emission):
            record: Any = item.record
            if isinstance(record, ConditionRecord):
                conditions.append(record)
            continue
        r = item.reading
        d = index[r.device_id]
        t = (item.t_ms + item.skew_ms) // 1000
        msg_d.append(d)
        msg_t.append(t)
        m = r.metrics
        if m.get("contact_open") == 1.0 or "door_opened" in r.events:
            act_d.append(d)
            act_t.append(t)
        for name in ("lamp_on", "water_level_mm", "battery_pct"):
            v = m.get(name)
            if v is not None:
                lst = lamp[name]
                lst[0].append(d)
                lst[1].append(t)
                lst[2].append(v)
        dim = m.get("dim_pct")
        power = m.get("power_w")
        if dim is not None and power is not None and dim >= 90.0 and m.get("lamp_on") == 1.0:
            lst = lamp[FULL_POWER]
            lst[0].append(d)
            lst[1].append(t)
            lst[2].append(power * 100.0 / dim)
    n = len(devices)
    series = {ACTIVITY: Series.of(act_d, act_t, n_devices=n)}
    for name, (dd, tt, vv) in lamp.items():
        series[name] = Series.of(dd, tt, vv, n_devices=n)
    series["battery_pct"] = _bucket_mean(series["battery_pct"], _SIX_HOURS, n)
    md = np.asarray(msg_d, dtype=np.int64)
    mt = np.asarray(msg_t, dtype=np.int64)
    hours, counts = np.unique((md << 34) | (mt // 3600 * 3600), return_counts=True)
    series[MESSAGES] = Series.of(hours >> 34, hours & ((1 << 34) - 1), counts.astype(np.float64), n_devices=n)
    order = np.lexsort((mt, md))
    return Collected(
        devices=devices,
        series=series,
        message_dev=md[order],
        message_t=mt[order],
        conditions=conditions,
        messages=len(msg_t),
    )


def _bucket_mean(s: Series, width: int, n: int) -> Series:
    """Means per device and `width`-second bucket, at the bucket's middle (the database's query)."""
    if not len(s):
        return s
    keys, inverse = np.unique((s.dev << 34) | (s.t // width * width), return_inverse=True)
    sums = np.bincount(inverse, s.v)
    counts = np.bincount(inverse)
    return Series.of(keys >> 34, (keys & ((1 << 34) - 1)) + width // 2, sums / counts, n_devices=n)
