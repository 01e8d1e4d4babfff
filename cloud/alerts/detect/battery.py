"""Battery end of life: days left per device from its discharge curve, and the maintenance list.

A straight line through each device's ``battery_pct`` readings of the last ``window`` (all devices
in one `numpy.bincount` pass) gives its discharge rate and its level now; where the line reaches
``empty_pct`` is the device's end of life. A device within ``warn_within`` of it raises an
incident; `outlook` lists every device within ``list_within`` for the weekly maintenance round
(`linli detect batteries`): replacing all the batteries of a building in one visit is cheaper than
a visit per device, and a door contact with a flat battery is a resident nobody watches.
"""

from __future__ import annotations

import msgspec
import numpy as np

from cloud.alerts.detect.finding import DAY_S, Finding, Place
from cloud.alerts.detect.history import History, LineFit
from cloud.alerts.detect.kinds import BatteryLifeRule
from cloud.alerts.model import Evidence


class BatteryOutlook(msgspec.Struct, frozen=True, kw_only=True):
    """One device's battery: its level now, its rate (points a day) and days left to empty."""

    device_id: str
    device_type: str
    building: str | None
    unit: str | None
    level_pct: float
    per_day: float
    days_left: float


def outlook(rule: BatteryLifeRule, history: History, now: int) -> list[BatteryOutlook]:
    """Every device whose battery runs out within ``list_within``, soonest first."""
    n = len(history.devices)
    devs = history.select(device_types=rule.device_types)
    s = history.get(rule.metric).window(now - int(rule.window), now + 1)
    if not len(devs) or not len(s):
        return []
    fit = LineFit(series=s, at=now, n_devices=n)
    per_day = fit.slope * DAY_S
    with np.errstate(invalid="ignore", divide="ignore"):
        left = (fit.level - rule.empty_pct) / -per_day
    out = []
    for d in devs:
        i = int(d)
        if fit.n[i] < 3 or fit.span[i] < rule.min_span or not per_day[i] < 0:
            continue
        if not left[i] * DAY_S <= rule.list_within:
            continue
        info = history.devices[i]
        out.append(
            BatteryOutlook(
                device_id=info.device_id,
                device_type=info.device_type,
                building=info.building,
                unit=info.unit,
                level_pct=round(float(fit.level[i]), 1),
                per_day=round(float(per_day[i]), 3),
                days_left=round(max(0.0, float(left[i])), 1),
            )
        )
    out.sort(key=lambda o: o.days_left)
    return out


def detect(rule: BatteryLifeRule, history: History, now: int, place: Place) -> list[Finding]:
    out = []
    for o in outlook(rule, history, now):
        if o.days_left * DAY_S > rule.warn_within:
            continue
        out.append(
            Finding(
                rule=rule.id,
                device_id=o.device_id,
                started_s=now,
                value=o.days_left,
                why_en=(
                    f"Battery at {o.level_pct:.0f} %, falling {-o.per_day:.2f} points a day: it reaches"
                    f" {rule.empty_pct:g} % in about {o.days_left:.0f} days. Replace it on the next round."
                ),
                why_zh=(
                    f"电量 {o.level_pct:.0f}%，每天下降 {-o.per_day:.2f} 个百分点，约 {o.days_left:.0f} 天后"
                    f"降到 {rule.empty_pct:g}%，请在下次巡检时更换电池。"
                ),
                evidence=(
                    Evidence(
                        time_us=now * 1_000_000, device_id=o.device_id, metric=rule.metric, value=o.level_pct
                    ),
                ),
            )
        )
    return out
