"""Routine deviation: a resident living alone quiet for longer than is plausible for *this*
resident at *this* time of day.

The model is the resident's own history of door activity. Let ``L`` be the last activity and
``g = now - L`` the quiet time so far. For each of the last ``history`` days ``k``, the anchor
``L - k days`` is the same clock time on an earlier day, and ``D_k`` is how long the door then
stayed quiet after it (to the next activity). The ``D_k`` are what this resident usually does
after that time of day: after 19:42 most residents are quiet until the morning, so 11 hours of
quiet at 07:00 is normal, while after 07:30 the same resident is usually out again within an hour
or two. Each day weighs ``0.5 ** (k / half_life)`` (recent days count more, so a routine that
changes for good is learnt within days, not alarmed about every day), and days of the other kind
(weekdays against weekends) weigh ``other_day_weight`` more.

The resident is flagged when ``g`` exceeds the weighted ``quantile`` of the ``D_k`` by ``margin``
(and ``min_gap``), and the weighted share of days at least as quiet, the *probability* of so
long a quiet time, is ``max_probability`` or less. The incident starts when the quiet time
crossed that bound. A resident with less than ``min_history`` of history is left to the fixed
``inactivity`` rule (the cold start).

Vectorised: anchors for every resident and day form one (residents x days) matrix; the next
activity after each anchor is one `numpy.searchsorted`; weighted quantiles are one sort along
the days axis.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import numpy as np
import numpy.typing as npt

from cloud.alerts.detect.finding import DAY_S, Finding, Place, clock, span
from cloud.alerts.detect.history import ACTIVITY, F64, I64, MESSAGES, History, Series
from cloud.alerts.detect.kinds import RoutineRule
from cloud.alerts.model import Evidence

_WEEKEND: Final = 5  # Saturday and Sunday: datetime.weekday() >= 5
#: residents sampled for the community's quiet times by hour, and the fewest samples that count
_POPULATION: Final = 200
_MIN_POOL: Final = 50


class RoutineModel:
    """The routine figures of every selected resident at `now` (arrays over `devs`)."""

    __slots__ = ("days", "devs", "fire", "gap", "known", "last", "prob", "started", "usual")

    def __init__(
        self, *, devs: I64, last: I64, gap: I64, known: I64, usual: F64, prob: F64, days: I64
    ) -> None:
        self.devs = devs
        self.last = last
        self.gap = gap
        self.known = known
        self.usual = usual
        self.prob = prob
        self.days = days
        self.fire: npt.NDArray[np.bool_] = np.zeros(len(devs), dtype=bool)
        self.started: I64 = np.zeros(len(devs), dtype=np.int64)


def _quiet_after(
    acts: Series, devs: I64, anchors: I64, *, start: int, within: int, until: int | None = None
) -> tuple[F64, npt.NDArray[np.bool_]]:
    """Per (resident, day): the activity of that day nearest the anchor (within `within` seconds,
    not before `start`), and how long the door stayed quiet after it (to an activity by `until`)."""
    if not len(acts):
        return np.zeros(anchors.shape), np.zeros(anchors.shape, dtype=bool)
    d = np.broadcast_to(devs[:, None], anchors.shape)
    last = len(acts) - 1
    before = np.searchsorted(acts.keys, acts.key(d, anchors), side="right") - 1
    after = before + 1
    b = np.clip(before, 0, last)
    a = np.clip(after, 0, last)
    ok_b = (before >= 0) & (acts.dev[b] == d)
    ok_a = (after <= last) & (acts.dev[a] == d)
    dist_b = np.where(ok_b, anchors - acts.t[b], np.iinfo(np.int64).max)
    dist_a = np.where(ok_a, acts.t[a] - anchors, np.iinfo(np.int64).max)
    pos = np.where(dist_b <= dist_a, b, a)
    dist = np.minimum(dist_b, dist_a)
    nxt = np.clip(pos + 1, 0, last)
    valid = (dist <= within) & (acts.t[pos] >= start) & (pos + 1 <= last) & (acts.dev[nxt] == d)
    if until is not None:
        valid &= acts.t[nxt] <= until
    quiet = np.where(valid, acts.t[nxt] - acts.t[pos], 0).astype(np.float64)
    return quiet, valid


def _population(rule: RoutineRule, history: History, devs: I64, now: int, place: Place) -> list[F64]:
    """Per local hour of the day: how long the door stayed quiet after each activity in that hour,
    for up to `_POPULATION` residents of the community over the last 28 days, sorted. Computed
    once a day (memo on the history)."""
    offset = place.utc_offset(now)
    key = ("routine_population", rule.id, (now + offset) // DAY_S)
    found = history.memo.get(key)
    if found is not None:
        return found  # type: ignore[return-value]
    acts = history.get(ACTIVITY)
    sample = devs[:: max(1, len(devs) // _POPULATION)]
    pick = np.isin(acts.dev, sample)
    dev, t = acts.dev[pick], acts.t[pick]
    follows = (dev[1:] == dev[:-1]) & (t[:-1] >= now - 28 * DAY_S) & (t[1:] <= now)
    quiet = (t[1:] - t[:-1])[follows].astype(np.float64)
    hour = ((t[:-1][follows] + offset) % DAY_S) // 3600
    table = [np.sort(quiet[hour == h]) for h in range(24)]
    history.memo[key] = table
    return table


def _reporting(rule: RoutineRule, history: History, devs: I64, last: I64, now: int) -> npt.NDArray[np.bool_]:
    """Whether each door contact sent at least ``min_reports`` of its periodic reports over the
    quiet time (complete hours): a door contact losing its messages shows no openings either, and
    that is a device's trouble (``report_interval_drift``, ``device_silent``), not the resident's."""
    msgs = history.get(MESSAGES)
    if not len(msgs):
        return np.ones(len(devs), dtype=bool)
    csum = np.concatenate([[0.0], np.cumsum(msgs.v)])
    first_hour = (last // 3600 + 1) * 3600
    this_hour = now // 3600 * 3600
    lo = np.searchsorted(msgs.keys, msgs.key(devs, first_hour), side="left")
    hi = np.searchsorted(msgs.keys, msgs.key(devs, this_hour), side="left")
    got = csum[hi] - csum[lo]
    expected = np.maximum(this_hour - first_hour, 0) / history.intervals[devs]
    alive: npt.NDArray[np.bool_] = (expected < 3) | (got >= rule.min_reports * expected)
    return alive


def model(rule: RoutineRule, history: History, now: int, place: Place) -> RoutineModel:
    """Evaluate the routine model of every resident living alone with a door contact."""
    devs = history.select(device_types=rule.device_types, living_alone=True)
    acts = history.get(ACTIVITY)
    last, _ = acts.last_at(devs, now)
    first = acts.first_from(devs, now - int(rule.history), now)
    has = last >= 0
    gap = np.where(has, now - last, 0).astype(np.int64)
    known = np.where(has, now - first, 0).astype(np.int64)
    n_days = int(rule.history // DAY_S)
    k = np.arange(1, n_days + 1, dtype=np.int64)
    anchors = last[:, None] - k[None, :] * DAY_S  # (residents, days): the same clock time, k days ago
    start, within = now - int(rule.history), int(rule.match_within)
    quiet, valid = _quiet_after(acts, devs, anchors, start=start, within=within)
    valid &= has[:, None]
    weekday = datetime.fromtimestamp(now, tz=place.zone).weekday()
    same_kind = ((weekday - k) % 7 >= _WEEKEND) == (weekday >= _WEEKEND)
    w_day = 0.5 ** (k * DAY_S / rule.half_life) * np.where(same_kind, 1.0, rule.other_day_weight)
    w = np.where(valid, w_day[None, :], 0.0)
    total = w.sum(axis=1)
    order = np.argsort(np.where(valid, quiet, np.inf), axis=1)
    q_sorted = np.take_along_axis(quiet, order, axis=1)
    cum = np.cumsum(np.take_along_axis(w, order, axis=1), axis=1)
    at = np.argmax(cum >= rule.quantile * total[:, None] - 1e-12, axis=1)
    usual = np.where(total > 0, q_sorted[np.arange(len(devs)), at], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        as_quiet = (w * (quiet >= gap[:, None])).sum(axis=1)
        prob = np.where(total > 0, as_quiet / np.where(total > 0, total, 1), 1.0)
    days = valid.sum(axis=1).astype(np.int64)
    m = RoutineModel(devs=devs, last=last, gap=gap, known=known, usual=usual, prob=prob, days=days)
    bound = np.maximum(np.nan_to_num(usual, nan=np.inf) + rule.margin, rule.min_gap)
    enough = (known >= rule.min_history) & (days >= rule.min_days)
    m.fire = has & enough & (total > 0) & (gap >= bound) & (prob <= rule.max_probability)
    m.fire &= _reporting(rule, history, devs, last, now)
    if m.fire.any():  # and rare across the community: a long quiet time many residents have is life
        table = _population(rule, history, devs, now, place)
        hour = ((last + place.utc_offset(now)) % DAY_S) // 3600
        for i in np.flatnonzero(m.fire):
            pool = table[int(hour[i])]
            if len(pool) >= _MIN_POOL:
                share = 1.0 - np.searchsorted(pool, gap[i], side="left") / len(pool)
                m.fire[i] = share <= rule.population_max
    m.started = np.where(m.fire, last + np.where(np.isfinite(bound), bound, 0), 0).astype(np.int64)
    return m


def detect(rule: RoutineRule, history: History, now: int, place: Place) -> list[Finding]:
    m = model(rule, history, now, place)
    zone = place.zone
    out = []
    for i in np.flatnonzero(m.fire):
        device = history.devices[int(m.devs[i])]
        last = int(m.last[i])
        usual_zh, usual_en = clock(last + float(m.usual[i]), now, zone)
        since_zh, since_en = clock(last, now, zone)
        hm = since_en.split(" ")[0]
        gap_zh, gap_en = span(int(m.gap[i]))
        days = int(m.days[i])
        seen = round(float(m.prob[i]) * days)
        share = round(rule.quantile * 10)
        p_en = f"on {seen} of the last {days} such days" if seen else f"on none of the last {days} such days"
        p_zh = f"过去 {days} 个类似的日子里" + (f"只有 {seen} 天如此" if seen else "从未如此")
        out.append(
            Finding(
                rule=rule.id,
                device_id=device.device_id,
                started_s=int(m.started[i]),
                value=round(float(m.prob[i]), 4),
                why_en=(
                    f"After door activity around {hm} this resident usually opens the door again by"
                    f" {usual_en.split(' ')[0]} ({share} days in 10); no door activity since {since_en}"
                    f" ({gap_en}): quiet this long {p_en}."
                ),
                why_zh=(
                    f"该居民在 {hm} 前后开门后，通常在 {usual_zh.split(' ')[-1]} 前再次开门"
                    f"（十天中有 {share} 天）；"
                    f"自{since_zh}起已 {gap_zh} 没有开门活动，{p_zh}。"
                ),
                evidence=(
                    Evidence(time_us=last * 1_000_000, device_id=device.device_id, note="last door activity"),
                ),
            )
        )
    return out
