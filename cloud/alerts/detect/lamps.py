"""Streetlights: a lamp that draws less and less at full output, and a lamp that switches at times
the sun does not explain.

**Drift** (`drift`). Each reading at full output (``dim_pct`` at least ``full_dim_pct`` and the
lamp on) gives the lamp's power normalised to 100 %. Its median over the ``recent`` window is
compared with its median over the ``baseline`` before it (the lamp's *own* baseline: lamps of
40 W and 150 W share a street). A straight line through the last week of normalised readings
projects when the lamp reaches ``fail_ratio`` of its baseline, for the explanation. The fixed
``lamp_failure`` rule catches the dead lamp; this catches the dying one.

**Timing** (`timing`). Every switch-on (``lamp_on`` from 0 to 1) is compared with dusk at the
community (the sun ``sun_deg`` below the horizon, `cloud.alerts.sun.dusk_s`); the median offset
over the last ``nights`` evenings beyond ``tolerance`` means a timer or a photocell that no longer
follows the sun (a drifting clock, a covered sensor), long before the lamp burns by day or stays
dark at night long enough for the fixed rules.
"""

from __future__ import annotations

import numpy as np

from cloud.alerts.detect.finding import DAY_S, Finding, Place, clock
from cloud.alerts.detect.history import FULL_POWER, History, LineFit, Series, group_median
from cloud.alerts.detect.kinds import LampDriftRule, LampTimingRule
from cloud.alerts.model import Evidence
from cloud.alerts.sun import dusk_s


def full_output(power: Series, dim: Series, *, full_dim_pct: float) -> Series:
    """Normalised power (W at 100 %) of the readings taken at `full_dim_pct` or more: the series
    `FULL_POWER` from raw ``power_w`` and ``dim_pct`` readings (matched by device and time)."""
    n = len(power.starts) - 1
    if not len(power) or not len(dim):
        return Series.empty(n)
    pos = np.searchsorted(dim.keys, power.keys)
    safe = np.minimum(pos, len(dim) - 1)
    same = (pos < len(dim)) & (dim.keys[safe] == power.keys)
    level = np.where(same, dim.v[safe], 0.0)
    keep = level >= full_dim_pct
    return Series(dev=power.dev[keep], t=power.t[keep], v=power.v[keep] * 100.0 / level[keep], n_devices=n)


def drift(rule: LampDriftRule, history: History, now: int, place: Place) -> list[Finding]:
    n = len(history.devices)
    devs = history.select(device_types=rule.device_types)
    if not len(devs):
        return []
    recent_from = now - int(rule.recent)
    full = history.get(FULL_POWER)
    base = full.window(recent_from - int(rule.baseline), recent_from)
    recent = full.window(recent_from, now + 1)
    base_med, _ = group_median(base.dev, base.v, n)
    recent_med, recent_n = group_median(recent.dev, recent.v, n)
    evening = base.t + place.utc_offset(now) - 43_200  # a night: local noon to the next local noon
    nights = np.unique(base.dev * 100_000 + evening // DAY_S)
    night_count = np.bincount(nights // 100_000, minlength=n)
    week = full.window(now - 7 * DAY_S, now + 1)
    fit = LineFit(series=week, at=now, n_devices=n)
    out = []
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = recent_med / base_med
    for d in devs:
        i = int(d)
        if night_count[i] < rule.min_nights or recent_n[i] < 3 or not ratio[i] <= 1 - rule.drop:
            continue
        device = history.devices[i]
        usual, now_w = float(base_med[i]), float(recent_med[i])
        per_day = float(fit.slope[i]) * DAY_S / usual if fit.n[i] >= 3 else float("nan")
        en = f"Draws {now_w:.0f} W at full output, {1 - ratio[i]:.0%} under its own usual {usual:.0f} W"
        zh = f"满功率时仅 {now_w:.0f} W，比该灯平时的 {usual:.0f} W 低 {1 - ratio[i]:.0%}"
        if per_day < 0:
            days = (float(ratio[i]) - rule.fail_ratio) / -per_day
            en += f"; at this rate it falls under {rule.fail_ratio:.0%} within about {max(days, 0):.0f} days"
            zh += f"；按此速度约 {max(days, 0):.0f} 天内降到 {rule.fail_ratio:.0%} 以下"
        out.append(
            Finding(
                rule=rule.id,
                device_id=device.device_id,
                started_s=now,
                value=round(float(ratio[i]), 4),
                why_en=en + ". Schedule a lamp inspection before it fails.",
                why_zh=zh + "，请在灯具损坏前安排检修。",
                evidence=(
                    Evidence(
                        time_us=now * 1_000_000, device_id=device.device_id, metric="power_w", value=now_w
                    ),
                ),
            )
        )
    return out


def switch_ons(history: History) -> Series:
    """The moments each lamp switched on (``lamp_on`` 0 -> 1), ``v``: 1."""
    s = history.get("lamp_on")
    if len(s) < 2:
        return Series.empty(len(history.devices))
    on = s.v >= 0.5
    rise = np.zeros(len(s), dtype=bool)
    rise[1:] = on[1:] & ~on[:-1] & (s.dev[1:] == s.dev[:-1])
    return Series(dev=s.dev[rise], t=s.t[rise], v=s.v[rise], n_devices=len(history.devices))


def timing(rule: LampTimingRule, history: History, now: int, place: Place) -> list[Finding]:
    n = len(history.devices)
    devs = history.select(device_types=rule.device_types)
    ons = switch_ons(history).window(now - (rule.nights + 1) * DAY_S, now + 1)
    if not len(devs) or not len(ons):
        return []
    # dusk of the evening each switch-on belongs to: the UTC day of (switch-on - 12 h + local noon)
    local = ons.t + place.utc_offset(now)
    days = (local - 43_200) // DAY_S + 1  # evenings: local noon to the next local noon
    cand = np.stack([dusk_s(place.lat, place.lon, days + j, rule.sun_deg) for j in (-1, 0)])
    nearest = cand[np.argmin(np.abs(ons.t[None, :] - cand), axis=0), np.arange(len(ons))]
    off = ons.t - nearest
    keep = np.isfinite(off)
    med, count = group_median(ons.dev[keep], off[keep], n)
    out = []
    for d in devs:
        i = int(d)
        if count[i] < rule.nights or not abs(med[i]) > rule.tolerance:
            continue
        device = history.devices[i]
        minutes = round(float(med[i]) / 60)
        mine = ons.t[ons.dev == i]
        last = int(mine[-1]) if len(mine) else now
        when_zh, when_en = clock(last, now, place.zone)
        side_en = "after" if minutes > 0 else "before"
        side_zh = "晚" if minutes > 0 else "早"
        out.append(
            Finding(
                rule=rule.id,
                device_id=device.device_id,
                started_s=now,
                value=float(minutes),
                why_en=(
                    f"Switches on {abs(minutes)} min {side_en} dusk (median of the last {int(count[i])}"
                    f" evenings; last on at {when_en}): its timer or light sensor no longer follows the sun."
                ),
                why_zh=(
                    f"最近 {int(count[i])} 个傍晚开灯时间比天黑{side_zh} {abs(minutes)} 分钟"
                    f"（最近一次 {when_zh}），定时器或光控可能失准。"
                ),
            )
        )
    return out
