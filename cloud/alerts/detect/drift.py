"""Silent drift: a device whose reports thin out (radio trouble) before it goes silent.

The history holds messages per device and hour (`cloud.alerts.detect.history.MESSAGES`: the
hourly rollup's count). A device's usual count for each hour of the day is its mean over the
``baseline`` before the ``window`` (at least ``min_baseline`` of it: whole days, since a door
contact sends more by day than by night); it is flagged when the complete hours of the ``window``
brought less than ``ratio`` of what those hours usually bring (and at least ``min_expected``
messages were expected). A device that reports at least hourly is judged by its *silent hours*
instead: more than ``1 - ratio`` of the window's hours without a single message, where it is
usually heard in nine hours of ten or more; a door contact's count falls when its resident stays
in (fewer door messages), its periodic reports do not. The
fixed ``device_silent`` rule fires once nothing arrives for four report intervals; a link that
loses more and more packets shows here first, while a visit can still fix it (a moved router, a
metal door, a failing antenna).
"""

from __future__ import annotations

import numpy as np

from cloud.alerts.detect.finding import Finding, Place, span
from cloud.alerts.detect.history import MESSAGES, History
from cloud.alerts.detect.kinds import ReportDriftRule

_HOUR = 3600


def detect(rule: ReportDriftRule, history: History, now: int, place: Place) -> list[Finding]:
    n = len(history.devices)
    devs = history.select(device_types=rule.device_types)
    counts = history.get(MESSAGES)
    if not len(devs) or not len(counts):
        return []
    end = now // _HOUR * _HOUR  # complete hours only
    start = end - int(rule.window)
    recent = counts.window(start, end)
    base = counts.window(start - int(rule.baseline), start)
    got = np.bincount(recent.dev, recent.v, minlength=n)
    first = np.full(n, np.inf)
    np.minimum.at(first, base.dev, base.t.astype(np.float64))
    covered = np.where(np.isfinite(first), start - first, 0.0)  # a device newer than the baseline
    # the usual count of each hour of the day: a door is busier by day than by night
    hour_of_day = (base.t // _HOUR) % 24
    per_hour = np.bincount(base.dev * 24 + hour_of_day, base.v, minlength=n * 24).reshape(n, 24)
    days = np.maximum(covered / 86_400, 1e-9)
    window_hours = (start // _HOUR + np.arange(int(rule.window) // _HOUR)) % 24
    expected = np.where(covered >= rule.min_baseline, (per_hour[:, window_hours]).sum(axis=1) / days, 0.0)
    rate = expected / max(1, end - start)
    hours = int(rule.window) // _HOUR
    # devices that report at least hourly: hours without any message (door activity adds messages,
    # a resident's quiet removes them, but the periodic reports go on: only a radio loses those)
    heard = np.bincount(recent.dev, minlength=n)
    heard_before = np.bincount(base.dev, minlength=n) / np.maximum(covered / _HOUR, 1)
    hourly = history.intervals <= _HOUR
    out = []
    window_zh, window_en = span(end - start)
    for d in devs:
        i = int(d)
        if covered[i] < rule.min_baseline:
            continue
        device = history.devices[i]
        if hourly[i]:
            silent = hours - int(heard[i])
            if silent < (1 - rule.ratio) * hours or heard_before[i] < 0.9:
                continue
            value = round(float(heard[i]) / hours, 3)
            usually = f"{min(1.0, float(heard_before[i])):.0%}"
            why_en = (
                f"Not a single message in {silent} of the last {hours} hours, where it is usually heard"
                f" every hour ({usually} of hours): its radio link is failing."
            )
            why_zh = (
                f"最近 {hours} 小时中有 {silent} 个小时一条消息也没有，平时每小时都有（{usually}），"
                "无线信号可能变差。"
            )
        else:
            if expected[i] < rule.min_expected or not got[i] < rule.ratio * expected[i]:
                continue
            value = round(float(got[i] / expected[i]), 3)
            usual_zh, usual_en = span(1 / rate[i])
            now_zh, now_en = span((end - start) / got[i]) if got[i] else ("-", "-")
            lately_en = f"now one every {now_en}" if got[i] else "now none"
            lately_zh = f"现在约每 {now_zh} 一条" if got[i] else "现在一条也没有"
            why_en = (
                f"Sent {int(got[i])} messages in the last {window_en} where it usually sends"
                f" {expected[i]:.0f} (one every {usual_en}; {lately_en}): its radio link is failing."
            )
            why_zh = (
                f"最近 {window_zh} 只收到 {int(got[i])} 条消息，平时应有约 {expected[i]:.0f} 条"
                f"（平时每 {usual_zh} 一条，{lately_zh}），无线信号可能变差。"
            )
        out.append(
            Finding(
                rule=rule.id,
                device_id=device.device_id,
                started_s=now,
                value=value,
                why_en=why_en + " Check the signal before it goes silent.",
                why_zh=why_zh + "请在设备失联前检查。",
            )
        )
    return out
