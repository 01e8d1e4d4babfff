"""Scoring the detectors on a collected run against its ground truth.

Each detector runs over the whole fleet at its own ``every`` from the end of the warm-up to the
end of the run (the same code the alert service runs; the history arrays hold the whole run, and
every detector reads only what lies before its ``now``). A detector's **episode** on a device
runs from the first run that finds it to the first that does not. An episode is a **true
positive** when it begins inside a condition of its kind on that device (widened by
``late_s``), else a **false positive**; a condition is **detected** when an episode begins
inside it. The **lead** is how much earlier than the fixed rule (or the failure) the episode
began: the ``resident_inactive`` rule (12 hours of active time, 07:00-22:00), the failure of a
degrading lamp, the overflow (the ``water_level_high`` rule: 1,000 mm held two minutes), the
``device_silent`` rule (four report intervals after the last message).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

import numpy as np

from cloud.alerts.detect import battery
from cloud.alerts.detect.finding import Finding, Place
from cloud.alerts.detect.kinds import BatteryLifeRule, DetectorRule, RoutineRule
from cloud.alerts.detect.runner import DETECTORS, run_detectors
from cloud.alerts.state import active_deadline
from simulators.detection.collect import Collected
from simulators.truth import ConditionRecord

#: (device, from, to, moment of the fixed rule or the failure: None if it never came)
Case = tuple[str, int, int, int | None]

H: Final = 3600
DAY: Final = 86_400
US: Final = 1_000_000


def _s(iso: Any) -> int:
    return int(datetime.fromisoformat(str(iso)).timestamp())


class Episode:
    __slots__ = ("device", "first", "last")

    def __init__(self, device: str, first: int) -> None:
        self.device = device
        self.first = first
        self.last = first


def episodes(
    rule: DetectorRule, collected: Collected, place: Place, start: int, end: int
) -> tuple[list[Episode], float, int]:
    """Every episode of `rule` over ``[start, end)``; CPU seconds spent and runs made."""
    history = collected.history()
    detect: Callable[..., list[Finding]] = DETECTORS[type(rule)]
    open_: dict[str, Episode] = {}
    done: list[Episode] = []
    cpu = 0.0
    runs = 0
    for now in range(start, end, int(rule.every)):
        t0 = time.process_time()
        found = detect(rule, history, now, place)
        cpu += time.process_time() - t0
        runs += 1
        seen = set()
        for f in found:
            seen.add(f.device_id)
            ep = open_.get(f.device_id)
            if ep is None:
                open_[f.device_id] = Episode(f.device_id, now)
            else:
                ep.last = now
        for device in [d for d in open_ if d not in seen]:
            done.append(open_.pop(device))
    done.extend(open_.values())
    return done, cpu, runs


def score(
    eps: list[Episode],
    cases: list[Case],
    *,
    late_s: int,
    faulty: dict[str, list[tuple[int, int]]] | None = None,
) -> dict[str, Any]:
    """`cases`: (device, from, to, moment of the fixed rule or failure, None if none)."""
    by_device: dict[str, list[tuple[int, int, int | None]]] = {}
    for device, a, b, fixed in cases:
        by_device.setdefault(device, []).append((a, b, fixed))
    tp = fp = on_faulty = 0
    first: dict[tuple[str, int], int] = {}
    for ep in eps:
        hit = None
        for a, b, _ in by_device.get(ep.device, []):
            if a <= ep.first <= b + late_s:
                hit = a
        if hit is None:
            fp += 1
            if faulty and any(a <= ep.first <= b for a, b in faulty.get(ep.device, ())):
                on_faulty += 1
            continue
        tp += 1
        key = (ep.device, hit)
        first[key] = min(first.get(key, ep.first), ep.first)
    leads = []
    for device, a, _, fixed in cases:
        t = first.get((device, a))
        if t is not None and fixed is not None:
            leads.append((fixed - t) / H)
    detected = len(first)
    extra = {"false_positives_on_failing_radios": on_faulty} if faulty is not None else {}
    return extra | {
        "cases": len(cases),
        "detected": detected,
        "recall": round(detected / len(cases), 3) if cases else None,
        "episodes": len(eps),
        "false_positives": fp,
        "precision": round(tp / (tp + fp), 3) if tp + fp else None,
        "median_lead_h": round(statistics.median(leads), 2) if leads else None,
        "leads_h_p10": round(float(np.percentile(leads, 10)), 2) if leads else None,
    }


def conditions(collected: Collected, name: str) -> list[ConditionRecord]:
    return [c for c in collected.conditions if c.condition == name]


def routine_cases(
    collected: Collected, rule: RoutineRule, zone: ZoneInfo, fixed_hours: float, active: tuple[int, int]
) -> list[Case]:
    acts = collected.series["activity"]
    out: list[Case] = []
    for c in conditions(collected, "resident_inactive"):
        device = str(c.device_id)
        a, b = _s(c.from_), _s(c.to)
        d = collected.index[device]
        last, _ = acts.last_at(np.asarray([d], dtype=np.int64), a)
        fixed = active_deadline(int(last[0]) * US, fixed_hours * H, tz=zone, window_s=active) // US
        out.append((device, a, b, fixed if fixed <= b else None))
    return out


def lamp_cases(collected: Collected) -> list[Case]:
    return [
        (str(c.device_id), _s(c.from_), _s(c.fails_at), _s(c.fails_at))
        for c in conditions(collected, "lamp_degrading")
    ]


def failing_radios(collected: Collected) -> dict[str, list[tuple[int, int]]]:
    """Per device: the windows its radio was fading or silent (ground truth)."""
    out: dict[str, list[tuple[int, int]]] = {}
    for c in collected.conditions:
        if c.condition in ("radio_fading", "device_silent"):
            end = _s(c.to) if c.to else 2**62
            out.setdefault(str(c.device_id), []).append((_s(c.from_), end))
    return out


def fading_cases(collected: Collected) -> list[Case]:
    msgs = collected.message_keys
    out: list[Case] = []
    for c in conditions(collected, "radio_fading"):
        device = str(c.device_id)
        d = collected.index[device]
        silent = _s(c.silent_at)
        last, _ = msgs.last_at(np.asarray([d], dtype=np.int64), silent)
        fixed = int(last[0]) + int(4 * collected.devices[d].report_interval_s)
        out.append((device, _s(c.from_), _s(c.to), fixed))
    return out


def overflow_cases(collected: Collected, horizon_s: int) -> list[Case]:
    """Each cover's overflows: the first reading at 1,000 mm or more after being under 800 mm;
    the detector's window is the `horizon_s` before it."""
    s = collected.series["water_level_mm"]
    out: list[Case] = []
    for d in np.unique(s.dev):
        lo, hi = s.starts[d], s.starts[d + 1]
        high = False
        for t, v in zip(s.t[lo:hi], s.v[lo:hi], strict=True):
            if not high and v >= 1000:
                high = True
                out.append((collected.devices[int(d)].device_id, int(t) - horizon_s, int(t), int(t) + 120))
            elif high and v < 800:
                high = False
    return out


def battery_accuracy(
    collected: Collected, rule: BatteryLifeRule, *, ahead_days: float, start: int, end: int
) -> dict[str, Any]:
    """For every device whose battery reaches ``empty_pct`` in the run (with enough history
    before): the days left predicted `ahead_days` before, against `ahead_days`. Separately for the
    batteries the scenario drains (the target) and those that ran down by themselves (slow: a
    1 % step of a dialect that reports whole per cents is a week of their drain)."""
    s = collected.series["battery_pct"]  # six-hour means, as the database gives them
    history = collected.history()
    draining = {str(c.device_id) for c in conditions(collected, "battery_draining")}
    errors: dict[bool, list[float | None]] = {True: [], False: []}
    for d in np.unique(s.dev):
        lo, hi = s.starts[d], s.starts[d + 1]
        under = np.flatnonzero(s.v[lo:hi] <= rule.empty_pct)
        if not len(under):
            continue
        eol = int(s.t[lo + under[0]])
        at = eol - int(ahead_days * DAY)
        if at < start + rule.min_span + DAY or eol > end:
            continue
        rows = {o.device_id: o for o in battery.outlook(rule, history, at)}
        device_id = collected.devices[int(d)].device_id
        o = rows.get(device_id)
        errors[device_id in draining].append(None if o is None else o.days_left - ahead_days)
    return {"draining": _accuracy(errors[True]), "natural": _accuracy(errors[False])}


def _accuracy(errors: list[float | None]) -> dict[str, Any]:
    known = [abs(e) for e in errors if e is not None]
    within = sum(1 for e in known if e <= 3)
    return {
        "devices": len(errors),
        "predicted": len(known),
        "within_3_days": within,
        "share_within_3_days": round(within / len(errors), 3) if errors else None,
        "median_abs_error_days": round(statistics.median(known), 2) if known else None,
        "max_abs_error_days": round(max(known), 2) if known else None,
    }


def cpu_per_community(
    collected: Collected, rules: list[DetectorRule], places: dict[str, Place], now: int
) -> dict[str, float]:
    """CPU ms of one run of every detector per community (best of three), and of the fleet."""
    members: dict[str, list[int]] = {}
    for i, dev in enumerate(collected.devices):
        members.setdefault(dev.community_id, []).append(i)
    out = {}
    for cid, idx in sorted(members.items()):
        h = collected.history(idx)
        best = float("inf")
        for _ in range(3):
            t0 = time.process_time()
            run_detectors(rules, h, now, places[cid])
            best = min(best, time.process_time() - t0)
        out[cid] = round(best * 1000, 1)
    whole = collected.history()
    place = next(iter(places.values()))
    best = float("inf")
    for _ in range(3):
        t0 = time.process_time()
        run_detectors(rules, whole, now, place)
        best = min(best, time.process_time() - t0)
    out["fleet"] = round(best * 1000, 1)
    return out
