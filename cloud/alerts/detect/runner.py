"""Running the detectors: a community's history in, findings out, and findings turned into the
same `Action` s (so the same incidents, workflow and pushes) as the engine's rules.

`run_detectors` evaluates every detector rule of a community on its `History` at `now`.
`DetectionState` remembers, per community, when detection last ran and which (rule, device)
pairs are firing: a finding that is new fires an incident, one that disappears clears it, one
that persists does nothing. The state is saved in ``alert_state`` (key ``detect:<community>``)
in the transaction that writes the actions, like the engine's, so a restart neither repeats nor
loses an incident.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Final, TypeGuard

import msgspec

from cloud.alerts.actions import make_action
from cloud.alerts.detect import battery, drift, lamps, routine, water
from cloud.alerts.detect.finding import Finding, Place
from cloud.alerts.detect.history import History
from cloud.alerts.detect.kinds import (
    BatteryLifeRule,
    DetectorRule,
    LampDriftRule,
    LampTimingRule,
    ReportDriftRule,
    RoutineRule,
    WaterTrendRule,
)
from cloud.alerts.model import Action, DeviceInfo, Directory
from cloud.alerts.rules import Rule

#: alert_state keys of detection start with this (the engine's are community ids).
STATE_PREFIX: Final = "detect:"
US: Final = 1_000_000

Detect = Callable[..., list[Finding]]
DETECTORS: Final[Mapping[type, Detect]] = {
    RoutineRule: routine.detect,
    LampDriftRule: lamps.drift,
    LampTimingRule: lamps.timing,
    WaterTrendRule: water.detect,
    BatteryLifeRule: battery.detect,
    ReportDriftRule: drift.detect,
}


def detector_rules(rules: Iterable[Rule]) -> list[DetectorRule]:
    """The rules a detector evaluates (`DETECTORS` names every kind)."""
    return [r for r in rules if _is_detector(r)]


def _is_detector(rule: Rule) -> TypeGuard[DetectorRule]:
    return type(rule) in DETECTORS


def run_detectors(rules: Sequence[DetectorRule], history: History, now: int, place: Place) -> list[Finding]:
    """Every finding of `rules` on `history` at `now` (Unix seconds)."""
    out: list[Finding] = []
    for rule in rules:
        out.extend(DETECTORS[type(rule)](rule, history, now, place))
    return out


class CommunityDetection(msgspec.Struct):
    """One community's detection state: when each rule last ran, and what fires
    (``rule|device`` -> start, Unix seconds)."""

    last_run: dict[str, int] = msgspec.field(default_factory=dict)
    firing: dict[str, int] = msgspec.field(default_factory=dict)


_ENC: Final = msgspec.msgpack.Encoder()
_DEC: Final = msgspec.msgpack.Decoder(CommunityDetection)


class DetectionState:
    """What fires, per community; `apply` turns a run's findings into fire and clear actions."""

    def __init__(self, *, directory: Directory) -> None:
        self._dir = directory
        self._states: dict[str, CommunityDetection] = {}
        self._dirty: set[str] = set()

    def restore(self, states: Iterable[tuple[str, bytes]]) -> None:
        for key, blob in states:
            if key.startswith(STATE_PREFIX):
                self._states[key.removeprefix(STATE_PREFIX)] = _DEC.decode(blob)

    def take_dirty(self) -> dict[str, bytes | None]:
        out: dict[str, bytes | None] = {
            STATE_PREFIX + c: _ENC.encode(self._states[c]) for c in sorted(self._dirty)
        }
        self._dirty.clear()
        return out

    def due(self, community_id: str, rules: Sequence[DetectorRule], now: int) -> list[DetectorRule]:
        """The rules whose ``every`` has passed since they last ran in the community."""
        st = self._states.get(community_id)
        last = st.last_run if st else {}
        return [r for r in rules if now - last.get(r.id, 0) >= r.every]

    def firing(self, community_id: str) -> dict[str, int]:
        st = self._states.get(community_id)
        return dict(st.firing) if st else {}

    def apply(
        self,
        community_id: str,
        rules: Sequence[DetectorRule],
        findings: Sequence[Finding],
        now: int,
    ) -> list[Action]:
        """Record a run of `rules` at `now` with their `findings`: fire the new ones, clear the
        ones of these rules that are gone."""
        st = self._states.setdefault(community_id, CommunityDetection())
        self._dirty.add(community_id)
        by_id = {r.id: r for r in rules}
        for r in rules:
            st.last_run[r.id] = now
        out: list[Action] = []
        seen: set[str] = set()
        for f in findings:
            key = f"{f.rule}|{f.device_id}"
            seen.add(key)
            if key in st.firing:
                continue
            st.firing[key] = f.started_s
            out.append(self._action("fire", by_id[f.rule], community_id, f.device_id, f.started_s, now, f))
        for key in sorted(k for k in st.firing if k not in seen and k.partition("|")[0] in by_id):
            started = st.firing.pop(key)
            rule_id, _, device_id = key.partition("|")
            out.append(self._action("clear", by_id[rule_id], community_id, device_id, started, now, None))
        return out

    def _action(
        self,
        kind: str,
        rule: DetectorRule,
        community_id: str,
        device_id: str,
        started: int,
        now: int,
        finding: Finding | None,
    ) -> Action:
        info: DeviceInfo | None = self._dir.devices.get(device_id)
        resident = info.resident_id if info and isinstance(rule, RoutineRule) else None
        return make_action(
            "fire" if kind == "fire" else "clear",
            rule,
            community_id=community_id,
            subject=resident or device_id,
            subject_kind="resident" if resident else "device",
            started=started * US,
            at=now * US,
            evidence=list(finding.evidence) if finding else [],
            device_id=device_id,
            device_type=info.device_type if info else "",
            gateway_id=info.gateway_id if info else None,
            info=info,
            value=finding.value if finding else None,
            why=(finding.why_zh, finding.why_en) if finding else ("", ""),
        )
