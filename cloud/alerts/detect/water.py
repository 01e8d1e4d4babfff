"""Water rising under a manhole cover: a fitted rise rate, and when it reaches the overflow level.

A straight line through each cover's readings of the last ``window`` (one `numpy.bincount` pass
for all covers, `cloud.alerts.detect.history.LineFit`) gives the rise rate and the level now; a
cover rising at ``min_rate`` mm/min or faster, already at ``floor_mm``, that reaches
``overflow_mm`` within ``horizon`` at that rate is flagged with the projected time: staff can
open the drains or cordon the street before the fixed ``water_level_high`` rule fires at the
overflow level itself.
"""

from __future__ import annotations

import numpy as np

from cloud.alerts.detect.finding import Finding, Place, clock, span
from cloud.alerts.detect.history import History, LineFit
from cloud.alerts.detect.kinds import WaterTrendRule
from cloud.alerts.model import Evidence


def detect(rule: WaterTrendRule, history: History, now: int, place: Place) -> list[Finding]:
    n = len(history.devices)
    devs = history.select(device_types=rule.device_types)
    s = history.get(rule.metric).window(now - int(rule.window), now + 1)
    if not len(devs) or not len(s):
        return []
    fit = LineFit(series=s, at=now, n_devices=n)
    rate = fit.slope * 60  # mm per minute
    with np.errstate(invalid="ignore", divide="ignore"):
        minutes = (rule.overflow_mm - fit.level) / rate
    out = []
    for d in devs:
        i = int(d)
        if fit.n[i] < rule.min_points or not rate[i] >= rule.min_rate or not fit.level[i] >= rule.floor_mm:
            continue
        if not minutes[i] * 60 <= rule.horizon:
            continue
        device = history.devices[i]
        level = float(fit.level[i])
        left = max(0.0, float(minutes[i]) * 60)
        at_zh, at_en = clock(now + left, now, place.zone)
        left_zh, left_en = span(left)
        if level >= rule.overflow_mm:
            en = f"Water at {level:.0f} mm and still rising {rate[i]:.1f} mm/min, over the overflow level"
            zh = f"水位 {level:.0f} mm，已超过溢流水位且仍以每分钟 {rate[i]:.1f} mm 上涨"
        else:
            en = (
                f"Water rising {rate[i]:.1f} mm/min (now {level:.0f} mm): at this rate it reaches the"
                f" overflow level {rule.overflow_mm:.0f} mm in about {left_en} (around {at_en})"
            )
            zh = (
                f"水位每分钟上涨 {rate[i]:.1f} mm（当前 {level:.0f} mm），按此速度约 {left_zh}后"
                f"（{at_zh} 左右）达到溢流水位 {rule.overflow_mm:.0f} mm"
            )
        out.append(
            Finding(
                rule=rule.id,
                device_id=device.device_id,
                started_s=now,
                value=round(left / 60, 1),
                why_en=en + ". Clear the drains and warn the street.",
                why_zh=zh + "，请疏通排水并提醒过往行人。",
                evidence=(
                    Evidence(
                        time_us=now * 1_000_000, device_id=device.device_id, metric=rule.metric, value=level
                    ),
                ),
            )
        )
    return out
