"""Silent drift: a device whose reports thin out (radio trouble) before it goes silent.

The history holds messages per device and hour (`cloud.alerts.detect.history.MESSAGES`: the
hourly rollup's count). A device's usual rate is its messages per hour over the ``baseline``
before the ``window``; it is flagged when the complete hours of the ``window`` brought less than
``ratio`` of what that rate predicts (and at least ``min_expected`` messages were expected). The
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
    usual = np.bincount(base.dev, base.v, minlength=n)
    first = np.full(n, np.inf)
    np.minimum.at(first, base.dev, base.t.astype(np.float64))
    covered = np.where(np.isfinite(first), start - first, 0.0)  # a device newer than the baseline
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(covered >= 6 * _HOUR, usual / np.where(covered > 0, covered, 1), 0.0)
    expected = rate * (end - start)
    out = []
    for d in devs:
        i = int(d)
        if expected[i] < rule.min_expected or not got[i] < rule.ratio * expected[i]:
            continue
        device = history.devices[i]
        usual_zh, usual_en = span(1 / rate[i])
        now_zh, now_en = span((end - start) / got[i]) if got[i] else ("-", "-")
        window_zh, window_en = span(end - start)
        lately_en = f"now one every {now_en}" if got[i] else "now none"
        lately_zh = f"现在约每 {now_zh} 一条" if got[i] else "现在一条也没有"
        out.append(
            Finding(
                rule=rule.id,
                device_id=device.device_id,
                started_s=now,
                value=round(float(got[i] / expected[i]), 3),
                why_en=(
                    f"Sent {int(got[i])} messages in the last {window_en} where it usually sends"
                    f" {expected[i]:.0f} (one every {usual_en}; {lately_en}): its radio link is failing."
                    " Check the signal before it goes silent."
                ),
                why_zh=(
                    f"最近 {window_zh} 只收到 {int(got[i])} 条消息，平时应有约 {expected[i]:.0f} 条"
                    f"（平时每 {usual_zh} 一条，{lately_zh}），无线信号可能变差，请在设备失联前检查。"
                ),
            )
        )
    return out
