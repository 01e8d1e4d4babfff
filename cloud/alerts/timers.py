"""The engine's time-based checks: absence, gateways, pending ``for`` periods,
``keep_firing_for``, ``clear_after``, no data, inactivity and the sun, at engine time ``now``.

A mixin of `cloud.alerts.engine.Engine`, apart so each module stays one concern; the methods it
uses from the engine are declared below.
"""

from __future__ import annotations

from typing import Final
from zoneinfo import ZoneInfo

from cloud.alerts.compiled import RuleIndex
from cloud.alerts.model import ActionKind, Directory, Evidence, SubjectKind
from cloud.alerts.rules import (
    CompositeRule,
    EventRule,
    Rule,
    StateDurationRule,
    ThresholdRule,
)
from cloud.alerts.state import US, CommunityState, RuleState, active_deadline

#: Report interval of a device whose profile nobody declared.
FALLBACK_INTERVAL_S: Final = 3600.0
#: A cleared rule state is kept this long to recognise late data, then dropped.
KEEP_CLEARED_US: Final = 86_400 * US
SEP: Final = "\x1f"
NEVER_US: Final = 2**62
#: With the data clock, a gateway's devices are timed by the gateway's own clock while it lags the
#: community's by at most this (a backlog draining); a gateway silent longer is silent.
GATEWAY_LAG_US: Final = 3600 * US
GATEWAY_UP: Final = frozenset({"online"})


class TimeChecks:
    """The time-based half of the engine."""

    _dir: Directory

    def _fire(
        self,
        st: RuleState,
        rule: Rule,
        cid: str,
        device: str,
        at: int,
        evidence: list[Evidence],
        value: float,
    ) -> None:
        raise NotImplementedError

    def _emit(
        self,
        kind: ActionKind,
        rule: Rule,
        cid: str,
        subject: str,
        subject_kind: SubjectKind,
        started: int,
        at: int,
        evidence: list[Evidence],
        *,
        value: float | None = None,
        event: str | None = None,
        device: str | None = None,
        gateway: str | None = None,
    ) -> None:
        raise NotImplementedError

    def _stop(
        self,
        cs: CommunityState,
        key: str,
        st: RuleState,
        rule: Rule,
        keep_s: float,
        cid: str,
        device: str,
        ts: int,
        now: int,
        evidence: list[Evidence],
    ) -> None:
        raise NotImplementedError

    def _sun_ok(self, rule: StateDurationRule, cid: str, device: str, t_us: int) -> bool:
        raise NotImplementedError

    def _zone(self, cid: str) -> ZoneInfo:
        raise NotImplementedError

    def _check(self, cs: CommunityState, rules: RuleIndex, cid: str, now: int) -> None:
        """The time-based checks of one community at engine time `now`."""
        cs.checked_us = now
        if rules.absence and now >= cs.absence_due_us:
            self._absence(cs, rules, cid, now)
        for g in rules.gateway:
            for gateway_id, gw in cs.gateways.items():
                if gw.state not in GATEWAY_UP and not gw.firing and now - gw.at_us >= g.after * US:
                    gw.firing = True
                    self._emit(
                        "fire",
                        g,
                        cid,
                        gateway_id,
                        "gateway",
                        gw.at_us,
                        now,
                        [Evidence(time_us=gw.at_us, gateway_id=gateway_id, note=gw.state)],
                        gateway=gateway_id,
                    )
        for key, st in list(cs.rules.items()):
            rule_id, _, device = key.partition(SEP)
            rule = rules.by_id.get(rule_id)
            if rule is None:
                del cs.rules[key]  # the rule was removed or switched off
                continue
            self._timers(cs, key, st, rule, cid, device, now)
        for resident_id, res in cs.residents.items():
            for rule in rules.inactivity:
                if res.firing:
                    continue
                start = res.last_us or cs.since_us
                if res.deadline_us == 0:
                    res.deadline_us = active_deadline(
                        start, rule.hours * 3600, tz=self._zone(cid), window_s=rule.window_s
                    )
                if now >= res.deadline_us:
                    res.firing = True
                    note = (
                        "no door activity since" if res.last_us else "no door activity since watching began"
                    )
                    self._emit(
                        "fire",
                        rule,
                        cid,
                        resident_id,
                        "resident",
                        start,
                        now,
                        [Evidence(time_us=start, device_id=res.device_id, note=note)],
                        device=res.device_id,
                    )

    def _absence(self, cs: CommunityState, rules: RuleIndex, cid: str, now: int) -> None:
        """Fire for devices silent too long (with the data clock: by their gateway's clock);
        remember when the next one can be due, so the devices are not gone through again before
        then (a report only moves a deadline later; a new device, a gateway back, reset it)."""
        due = NEVER_US
        # the devices of a gateway that said it is offline are `gateway_offline`'s, not one
        # incident each (when the gateway is back, its devices are gone through again)
        offline = {g for g, s in cs.gateways.items() if s.state not in GATEWAY_UP}
        clocks = cs.gateway_clock_us
        for a in rules.absence:
            for device_id, dev in cs.devices.items():
                if not a.applies_to(dev.device_type) or dev.gateway_id in offline:
                    continue
                last = dev.last_us or cs.since_us
                deadline = last + round(a.after_intervals * dev.interval_s * US)
                key = a.id + SEP + device_id
                gateway_now = clocks.get(dev.gateway_id, now)
                ref = gateway_now if now - gateway_now <= GATEWAY_LAG_US else now
                if ref <= deadline:
                    due = min(due, deadline + 1)
                    continue
                if key in cs.rules:
                    continue  # already firing
                st = cs.rules[key] = RuleState(since=last, started=last, seen=last)
                note = "never reported" if dev.last_us == 0 else "last report"
                evidence = [Evidence(time_us=last, device_id=device_id, note=note)]
                self._fire(st, a, cid, device_id, now, evidence, (now - last) / US)
        cs.absence_due_us = due

    def _timers(
        self, cs: CommunityState, key: str, st: RuleState, rule: Rule, cid: str, device: str, now: int
    ) -> None:
        dev = cs.devices.get(device)
        last = dev.last_us if dev is not None else 0
        interval = dev.interval_s if dev is not None else FALLBACK_INTERVAL_S
        if isinstance(rule, ThresholdRule):
            silent = now - last > (rule.no_data_after or 3 * interval) * US
            if silent and rule.no_data == "clear":
                self._stop(
                    cs,
                    key,
                    st,
                    rule,
                    0.0,
                    cid,
                    device,
                    now,
                    now,
                    [Evidence(time_us=last, device_id=device, note="no data")],
                )
                return
            if silent and rule.no_data == "alert" and not st.firing:
                self._fire(
                    st,
                    rule,
                    cid,
                    device,
                    now,
                    [Evidence(time_us=last, device_id=device, note="no data")],
                    st.value,
                )
                return
            self._pending(
                cs, key, st, rule, rule.for_, rule.keep_firing_for, cid, device, now, last, interval
            )
        elif isinstance(rule, CompositeRule):
            self._pending(
                cs, key, st, rule, rule.for_, rule.keep_firing_for, cid, device, now, last, interval
            )
        elif isinstance(rule, StateDurationRule):
            if st.value == 1.0 and rule.sun is not None:
                if self._sun_ok(rule, cid, device, now):
                    if st.since == 0:
                        st.since = now
                elif st.firing:
                    self._stop(
                        cs, key, st, rule, 0.0, cid, device, now, now, [Evidence(time_us=now, note="sun")]
                    )
                    return
                else:
                    st.since = 0
            fresh = now - last <= (rule.fresh_for or 2 * interval) * US
            if st.since and not st.firing and fresh and now - st.since >= rule.for_ * US:
                self._fire(
                    st,
                    rule,
                    cid,
                    device,
                    now,
                    [Evidence(time_us=last, device_id=device, metric=rule.metric, value=rule.equals)],
                    rule.equals,
                )
            elif not st.firing and not st.value and now - st.seen > KEEP_CLEARED_US:
                del cs.rules[key]
        elif isinstance(rule, EventRule):
            if st.firing and rule.clear_after is not None and now - st.until >= rule.clear_after * US:
                st.firing = False
                st.seen = max(st.seen, now)
                self._emit(
                    "clear",
                    rule,
                    cid,
                    device,
                    "device",
                    st.started,
                    now,
                    [Evidence(time_us=st.until, device_id=device, note="no event since")],
                )
            elif not st.firing and now - st.seen > KEEP_CLEARED_US:
                del cs.rules[key]

    def _pending(
        self,
        cs: CommunityState,
        key: str,
        st: RuleState,
        rule: ThresholdRule | CompositeRule,
        for_s: float,
        keep_s: float,
        cid: str,
        device: str,
        now: int,
        last: int,
        interval: float,
    ) -> None:
        if st.firing:
            if st.until and now - st.until >= keep_s * US:
                del cs.rules[key]
                self._emit(
                    "clear",
                    rule,
                    cid,
                    device,
                    "device",
                    st.started,
                    now,
                    [Evidence(time_us=st.until, device_id=device, note="condition over")],
                )
            return
        fresh = now - last <= 2 * interval * US
        if fresh and st.since and now - st.since >= for_s * US:
            if isinstance(rule, ThresholdRule):
                last_seen = Evidence(time_us=st.seen, device_id=device, metric=rule.metric, value=st.value)
            else:
                last_seen = Evidence(time_us=st.seen, device_id=device, note="last reading: still holds")
            began = Evidence(time_us=st.since, device_id=device, note="condition began")
            self._fire(st, rule, cid, device, now, [began, last_seen], st.value)
