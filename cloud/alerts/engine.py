"""The rule engine: feed rows and the passing of time in, `Action` s out.

`Engine.step` evaluates one feed row (what one ingest transaction stored for one community);
`Engine.tick` runs the time-based checks (absence, pending ``for`` periods, ``keep_firing_for``,
``clear_after``, no data, inactivity, the sun); `Engine.take_dirty` hands the state of the
communities that changed to the ledger, which saves it with the checkpoint; `Engine.restore`
starts from what was saved. The engine has no rollback: if a transaction fails, the service
builds a new engine from the committed state.

**Time.** With the wall clock, engine time is the wall time the service passes in. With the data
clock, each community's time is the newest device time of its telemetry (alarm batches may run
ahead of it and do not move it), and `step` runs the time-based checks itself whenever that clock
has moved `CHECK_EVERY_US`.

**Late readings.** A reading whose device time is older than the device's newest reading already
evaluated is *late*: newer information supersedes it. It never starts a condition (threshold,
composite, state, absence) and, if older than what a rule last evaluated for that device, it
neither continues nor clears one: so a late reading cannot open an incident for a condition newer
readings show is over. It still counts as door activity of a resident if it is newer than the last
activity known. Events differ: a latched event (SOS) fires whenever it arrives, started at its
device time (an SOS delivered after an outage still reaches staff); a non-latched event fires
unless a clear event newer than it was already seen. An incident is never detected before the
condition began: the ledger takes the later of the engine time and the device time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Final, Literal
from zoneinfo import ZoneInfo

import msgspec

from cloud.alerts.actions import make_action
from cloud.alerts.compiled import RuleIndex
from cloud.alerts.feed import FeedRow
from cloud.alerts.model import Action, ActionKind, Directory, Evidence, RuleCommandOut, SubjectKind
from cloud.alerts.rulebase import CLEAR_OP, compare
from cloud.alerts.rules import (
    CompositeRule,
    EventRule,
    Rule,
    RuleBook,
    StateDurationRule,
    ThresholdRule,
)
from cloud.alerts.state import (
    DECODER,
    ENCODER,
    US,
    CommunityState,
    DeviceState,
    GatewayState,
    ResidentState,
    RuleState,
)
from cloud.alerts.timers import FALLBACK_INTERVAL_S, GATEWAY_UP, SEP, TimeChecks
from cloud.ingest.envelope import ALARM, WireReading
from device_profiles.solar import elevation_deg
from device_profiles.standard import CLOUD_QUALITY

#: With the data clock, time-based checks run when a community's clock moved this far (2 min).
CHECK_EVERY_US: Final = 120 * US
_DOOR_EVENTS: Final = frozenset({"door_opened", "door_closed"})


class Engine(TimeChecks):
    """Rules over one partition's communities; see the module docstring."""

    def __init__(self, *, rules: RuleBook, directory: Directory, clock: Literal["wall", "data"]) -> None:
        self._rules = rules
        self._dir = directory
        self._data_clock = clock == "data"
        self._states: dict[str, CommunityState] = {}
        self._dirty: set[str] = set()
        self._compiled: dict[int, RuleIndex] = {}
        self._members: dict[str, list[str]] = defaultdict(list)
        for d in directory.devices.values():
            self._members[d.community_id].append(d.device_id)
        self._zones: dict[str, ZoneInfo] = {}
        self._sun: dict[tuple[str, int], float] = {}
        self._actions: list[Action] = []

    # -- state ---------------------------------------------------------------------------------

    def restore(self, states: Iterable[tuple[str, bytes]]) -> None:
        for key, blob in states:
            self._states[key] = DECODER.decode(blob)

    def take_dirty(self) -> dict[str, bytes | None]:
        out: dict[str, bytes | None] = {c: ENCODER.encode(self._states[c]) for c in sorted(self._dirty)}
        self._dirty.clear()
        return out

    def snapshot(self) -> dict[str, int]:
        states = self._states.values()
        return {
            "communities": len(self._states),
            "devices": sum(len(s.devices) for s in states),
            "rule_states": sum(len(s.rules) for s in states),
            "firing": sum(st.firing for s in states for st in s.rules.values())
            + sum(r.firing for s in states for r in s.residents.values())
            + sum(g.firing for s in states for g in s.gateways.values()),
        }

    def clocks(self, *, wall_us: int) -> dict[str, int]:
        """Each known community's time (Unix us): its data clock, or `wall_us` (0: no data yet)."""
        out = {}
        for cid in self._members.keys() | self._states.keys():
            cs = self._states.get(cid)
            out[cid] = (cs.clock_us if cs is not None else 0) if self._data_clock else wall_us
        return out

    def rules_of(self, community_id: str) -> tuple[Rule, ...]:
        """The rules of `community_id` (the shipped defaults with its overrides)."""
        return self._rules.for_community(community_id)

    def _rules_of(self, community_id: str) -> RuleIndex:
        rules = self._rules.for_community(community_id)
        compiled = self._compiled.get(id(rules))
        if compiled is None:
            types = {d.device_type for d in self._dir.devices.values()}
            compiled = self._compiled[id(rules)] = RuleIndex.of(rules, types)
        return compiled

    def _community(self, community_id: str, now: int) -> CommunityState:
        cs = self._states.get(community_id)
        if cs is None:
            cs = self._states[community_id] = CommunityState()
            for device_id in self._members.get(community_id, ()):
                info = self._dir.devices[device_id]
                cs.devices[device_id] = DeviceState(
                    device_type=info.device_type,
                    profile=info.profile,
                    gateway_id=info.gateway_id,
                    interval_s=info.report_interval_s,
                )
                if info.resident_id and info.living_alone and info.device_type == "door_contact":
                    cs.residents.setdefault(info.resident_id, ResidentState(device_id=device_id))
        if cs.since_us == 0 and now > 0:
            cs.since_us = cs.checked_us = now
        return cs

    # -- the feed ------------------------------------------------------------------------------

    def step(self, row: FeedRow, *, wall_us: int) -> list[Action]:
        """Evaluate one feed row; the actions it causes (also those of time checks it runs)."""
        cid = row.community_id
        cs = self._community(cid, 0 if self._data_clock else wall_us)
        rules = self._rules_of(cid)
        out: list[Action] = []
        self._actions = out
        self._dirty.add(cid)
        data = self._data_clock
        for env in row.envelopes:
            telemetry = env.batch_class != ALARM
            gw = cs.gateways.get(env.gateway_id)
            if gw is not None and gw.state not in GATEWAY_UP and env.readings:
                self._gateway_up(cs, rules, cid, env.gateway_id, gw, cs.clock_us if data else wall_us)
            gclock = cs.gateway_clock_us.get(env.gateway_id, 0)
            for r in env.readings:
                if not data:
                    self._reading(cs, rules, cid, env.gateway_id, r, wall_us)
                    continue
                if telemetry and r.ts_us > gclock:
                    gclock = cs.gateway_clock_us[env.gateway_id] = r.ts_us
                # the data clock moves reading by reading, so an action's time is its reading's
                # time, and time-based checks run as the clock passes them
                if telemetry and r.ts_us > cs.clock_us:
                    cs.clock_us = r.ts_us
                    if cs.since_us == 0:
                        cs.since_us = cs.checked_us = r.ts_us
                self._reading(cs, rules, cid, env.gateway_id, r, cs.clock_us)
                if cs.clock_us - cs.checked_us >= CHECK_EVERY_US:
                    self._check(cs, rules, cid, cs.clock_us)
        now = cs.clock_us if data else wall_us
        for obs in row.statuses:
            at = now if data else obs.at_us
            gw = cs.gateways.get(obs.gateway_id)
            if gw is None or at >= gw.at_us:
                if gw is not None and obs.state in GATEWAY_UP and gw.state not in GATEWAY_UP:
                    self._gateway_up(cs, rules, cid, obs.gateway_id, gw, at)
                firing = gw.firing if gw is not None else False
                cs.gateways[obs.gateway_id] = GatewayState(state=obs.state, at_us=at, firing=firing)
        return out

    def tick(self, *, wall_us: int) -> list[Action]:
        """Time-based checks of every community (with the data clock, at its own clock)."""
        out: list[Action] = []
        self._actions = out
        for cid in list(self._members.keys() | self._states.keys()):
            cs = self._community(cid, 0 if self._data_clock else wall_us)
            now = cs.clock_us if self._data_clock else wall_us
            if now <= 0 or (self._data_clock and now - cs.checked_us < CHECK_EVERY_US):
                continue
            before = len(out)
            self._check(cs, self._rules_of(cid), cid, now)
            if len(out) > before or not self._data_clock:
                self._dirty.add(cid)
        return out

    def _reading(
        self, cs: CommunityState, rules: RuleIndex, cid: str, gateway_id: str, r: WireReading, now: int
    ) -> None:
        dev = cs.devices.get(r.device_id)
        if dev is None:
            cs.absence_due_us = 0  # a new device: its deadline may come first
            dev = cs.devices[r.device_id] = DeviceState(
                device_type=r.device_type,
                profile=r.profile,
                gateway_id=gateway_id,
                interval_s=self._dir.profile_intervals.get(r.profile, FALLBACK_INTERVAL_S),
            )
        ts = r.ts_us
        late = ts < dev.last_us
        if not late and CLOUD_QUALITY not in r.quality:  # the cloud's note is no sign of life
            if dev.last_us == 0 or ts > dev.last_us:
                dev.last_us = ts
            for a in rules.absence:
                key = a.id + SEP + r.device_id
                st = cs.rules.get(key)
                if st is not None and st.firing:
                    del cs.rules[key]
                    self._emit(
                        "clear",
                        a,
                        cid,
                        r.device_id,
                        "device",
                        st.started,
                        max(now, ts),
                        [Evidence(time_us=ts, device_id=r.device_id, note="reported again")],
                    )
        t = rules.type_rules(r.device_type)
        metrics = r.metrics
        for th in t.thresholds:
            v = metrics.get(th.metric)
            if v is not None:
                self._threshold(cs, th, cid, r.device_id, v, ts, late, now)
        for co in t.composites:
            self._composite(cs, co, cid, r.device_id, metrics, ts, late, now)
        for sd in t.states:
            v = metrics.get(sd.metric)
            if v is not None:
                self._state(cs, sd, cid, r.device_id, v, ts, late, now)
        if r.events:
            for e in r.events:
                for er in t.events.get(e, ()):
                    self._event(cs, er, cid, r.device_id, e, ts, now)
                for er in t.clears.get(e, ()):
                    self._event_clear(cs, er, cid, r.device_id, e, ts, now)
                for er in t.notes.get(e, ()):  # the ledger notes it on the open incident, if any
                    evidence = [Evidence(time_us=ts, device_id=r.device_id, event=e)]
                    self._emit("note", er, cid, r.device_id, "device", ts, max(now, ts), evidence, event=e)
        if rules.inactivity and r.device_type == "door_contact":
            self._activity(cs, rules, cid, r, late, now)

    # -- kinds ---------------------------------------------------------------------------------

    def _threshold(
        self,
        cs: CommunityState,
        rule: ThresholdRule,
        cid: str,
        device: str,
        v: float,
        ts: int,
        late: bool,
        now: int,
    ) -> None:
        key = rule.id + SEP + device
        st = cs.rules.get(key)
        if st is not None and ts < st.seen:
            return
        if st is not None and st.firing:
            active = not compare(CLEAR_OP[rule.op], v, rule.clear_value)
        else:
            active = compare(rule.op, v, rule.value)
        if active:
            if st is None:
                if late:
                    return
                st = cs.rules[key] = RuleState(since=ts)
            st.seen, st.value, st.until = ts, v, 0
            if not st.firing:
                if st.since == 0:
                    st.since = ts
                if ts - st.since >= rule.for_ * US:
                    self._fire(st, rule, cid, device, max(now, ts), _metric(ts, device, rule.metric, v), v)
            return
        if st is None:
            return
        st.seen, st.value = ts, v
        self._stop(
            cs, key, st, rule, rule.keep_firing_for, cid, device, ts, now, _metric(ts, device, rule.metric, v)
        )

    def _composite(
        self,
        cs: CommunityState,
        rule: CompositeRule,
        cid: str,
        device: str,
        metrics: dict[str, float],
        ts: int,
        late: bool,
        now: int,
    ) -> None:
        values = [metrics.get(c.metric) for c in rule.all]
        if rule.all and None in values:
            return
        holds = all(compare(c.op, v, c.value) for c, v in zip(rule.all, values, strict=True) if v is not None)
        if rule.any:
            some = [compare(c.op, metrics[c.metric], c.value) for c in rule.any if c.metric in metrics]
            if not some:
                return
            holds = holds and any(some)
        key = rule.id + SEP + device
        st = cs.rules.get(key)
        if st is not None and ts < st.seen:
            return
        first = rule.all[0] if rule.all else rule.any[0]
        evidence = [
            Evidence(time_us=ts, device_id=device, metric=c.metric, value=metrics[c.metric])
            for c in (*rule.all, *rule.any)
            if c.metric in metrics
        ]
        if holds:
            if st is None:
                if late:
                    return
                st = cs.rules[key] = RuleState(since=ts)
            st.seen, st.until = ts, 0
            st.value = metrics.get(first.metric, 0.0)
            if not st.firing and ts - st.since >= rule.for_ * US:
                self._fire(st, rule, cid, device, max(now, ts), evidence, st.value)
            return
        if st is None:
            return
        st.seen = ts
        self._stop(cs, key, st, rule, rule.keep_firing_for, cid, device, ts, now, evidence)

    def _state(
        self,
        cs: CommunityState,
        rule: StateDurationRule,
        cid: str,
        device: str,
        v: float,
        ts: int,
        late: bool,
        now: int,
    ) -> None:
        key = rule.id + SEP + device
        st = cs.rules.get(key)
        if st is not None and ts < st.seen:
            return
        if v == rule.equals:
            if st is None:
                if late:
                    return
                st = cs.rules[key] = RuleState(value=1.0)
            st.seen, st.value = ts, 1.0
            if self._sun_ok(rule, cid, device, ts):
                if st.since == 0:
                    st.since = ts
                if not st.firing and ts - st.since >= rule.for_ * US:
                    self._fire(st, rule, cid, device, max(now, ts), _metric(ts, device, rule.metric, v), v)
            elif st.firing:
                self._stop(cs, key, st, rule, 0.0, cid, device, ts, now, [Evidence(time_us=ts, note="sun")])
            else:
                st.since = 0
            return
        if st is None:
            return
        st.seen = ts
        self._stop(cs, key, st, rule, 0.0, cid, device, ts, now, _metric(ts, device, rule.metric, v))

    def _sun_ok(self, rule: StateDurationRule, cid: str, device: str, t_us: int) -> bool:
        """The rule's sun condition at the community's place (the mean of its devices' positions:
        within a community the sun's elevation differs by hundredths of a degree)."""
        if rule.sun is None:
            return True
        # the sun moves a quarter of a degree a minute: one computation per community and minute
        key = (cid, t_us // 60_000_000)
        elevation = self._sun.get(key)
        if elevation is None:
            if len(self._sun) > 100_000:
                self._sun.clear()
            lat, lon = self._place(cid, device)
            elevation = self._sun[key] = elevation_deg(lat, lon, t_us)
        return elevation > rule.sun_above_deg if rule.sun == "day" else elevation < rule.sun_below_deg

    def _event(
        self, cs: CommunityState, rule: EventRule, cid: str, device: str, event: str, ts: int, now: int
    ) -> None:
        evidence = [Evidence(time_us=ts, device_id=device, event=event)]
        if rule.latched:
            self._emit("fire", rule, cid, device, "device", ts, max(now, ts), evidence, event=event)
            return
        key = rule.id + SEP + device
        st = cs.rules.get(key)
        if st is not None and st.firing:
            if ts >= st.until:
                st.until = st.seen = ts
            self._emit("repeat", rule, cid, device, "device", st.started, max(now, ts), evidence, event=event)
            return
        if st is not None and ts < st.seen:  # cleared by a newer clear event: stale
            return
        st = cs.rules[key] = RuleState(firing=True, since=ts, started=ts, seen=ts, until=ts)
        self._emit("fire", rule, cid, device, "device", ts, max(now, ts), evidence, event=event)

    def _event_clear(
        self, cs: CommunityState, rule: EventRule, cid: str, device: str, event: str, ts: int, now: int
    ) -> None:
        key = rule.id + SEP + device
        st = cs.rules.get(key)
        if st is None or ts < st.seen:
            return
        st.seen = ts
        if st.firing:
            st.firing = False
            self._emit(
                "clear",
                rule,
                cid,
                device,
                "device",
                st.started,
                max(now, ts),
                [Evidence(time_us=ts, device_id=device, event=event)],
            )

    def _activity(
        self, cs: CommunityState, rules: RuleIndex, cid: str, r: WireReading, late: bool, now: int
    ) -> None:
        info = self._dir.devices.get(r.device_id)
        if info is None or info.resident_id is None or not info.living_alone:
            return
        res = cs.residents.get(info.resident_id)
        if res is None:
            res = cs.residents[info.resident_id] = ResidentState(device_id=r.device_id)
        count = r.metrics.get("open_count")
        active = bool(_DOOR_EVENTS.intersection(r.events)) or r.metrics.get("contact_open") == 1
        if count is not None and not late:  # the opening counter moved (it wraps: any change)
            if res.open_count >= 0 and count != res.open_count:
                active = True
            res.open_count = count
        if not active or r.ts_us <= res.last_us:
            return
        res.last_us = r.ts_us
        res.deadline_us = 0
        if res.firing:
            res.firing = False
            for rule in rules.inactivity:
                self._emit(
                    "clear",
                    rule,
                    cid,
                    info.resident_id,
                    "resident",
                    res.last_us,
                    max(now, r.ts_us),
                    [Evidence(time_us=r.ts_us, device_id=r.device_id, note="door activity")],
                    device=r.device_id,
                )

    def _gateway_up(
        self, cs: CommunityState, rules: RuleIndex, cid: str, gateway: str, gw: GatewayState, now: int
    ) -> None:
        cs.absence_due_us = 0  # its devices are watched again
        gw.state, gw.at_us = "online", max(gw.at_us, now)
        if gw.firing:
            gw.firing = False
            for rule in rules.gateway:
                self._emit(
                    "clear",
                    rule,
                    cid,
                    gateway,
                    "gateway",
                    gw.at_us,
                    now,
                    [Evidence(time_us=now, gateway_id=gateway, note="online")],
                    gateway=gateway,
                )

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
        """The condition no longer holds at `ts`: reset a pending state, or clear a firing one
        (after ``keep_firing_for``)."""
        if not st.firing:
            del cs.rules[key]
            return
        if keep_s > 0:
            if st.until == 0:
                st.until = ts
            if ts - st.until < keep_s * US:
                return
        del cs.rules[key]
        self._emit("clear", rule, cid, device, "device", st.started, max(now, ts), evidence)

    # -- actions -----------------------------------------------------------------------------------

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
        st.firing = True
        st.started = st.since or at
        self._emit("fire", rule, cid, device, "device", st.started, at, evidence, value=value)

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
        device_id = subject if subject_kind == "device" else device
        info = self._dir.devices.get(device_id) if device_id else None
        dev = self._states[cid].devices.get(device_id) if device_id else None
        action = make_action(
            kind,
            rule,
            community_id=cid,
            subject=subject,
            subject_kind=subject_kind,
            started=started,
            at=at,
            evidence=evidence,
            device_id=device_id,
            device_type=info.device_type if info else dev.device_type if dev else "",
            gateway_id=gateway or (info.gateway_id if info else dev.gateway_id if dev else None),
            info=info,
            value=value,
            event=event,
        )
        if kind == "fire" and rule.command is not None and device_id is not None:
            action = self._with_command(action, rule, info.profile if info else dev.profile if dev else "")
        self._actions.append(action)

    def _with_command(self, action: Action, rule: Rule, profile: str) -> Action:
        """The fire with the rule's command, if the device's model carries it (else as it is)."""
        command = rule.command
        assert command is not None  # noqa: S101 - the caller checked
        confirm = self._dir.profile_commands.get(profile, {}).get(command.name)
        if confirm is None:
            return action
        out = RuleCommandOut(
            name=command.name, params=dict(command.params), confirm=confirm, ttl_s=int(command.ttl)
        )
        return msgspec.structs.replace(action, command=out)

    def _place(self, cid: str, device: str) -> tuple[float, float]:
        community = self._dir.communities.get(cid)
        if community is not None:
            return community.lat, community.lon
        info = self._dir.devices.get(device)
        if info is not None:
            return info.lat, info.lon
        return 31.23, 121.47  # nowhere known: Shanghai, where the defaults are set

    def _zone(self, cid: str) -> ZoneInfo:
        zone = self._zones.get(cid)
        if zone is None:
            community = self._dir.communities.get(cid)
            zone = self._zones[cid] = ZoneInfo(
                community.timezone if community else self._dir.default_timezone
            )
        return zone


def _metric(ts: int, device: str, metric: str, value: float) -> list[Evidence]:
    return [Evidence(time_us=ts, device_id=device, metric=metric, value=value)]
