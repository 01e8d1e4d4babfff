"""A community's rules indexed for the engine's hot path: by device type and kind, events by name."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from cloud.alerts.rules import (
    AbsenceRule,
    CompositeRule,
    EventRule,
    InactivityRule,
    Rule,
    StateDurationRule,
    ThresholdRule,
)


@dataclass(slots=True)
class TypeRules:
    thresholds: list[ThresholdRule] = field(default_factory=list)
    composites: list[CompositeRule] = field(default_factory=list)
    states: list[StateDurationRule] = field(default_factory=list)
    events: dict[str, list[EventRule]] = field(default_factory=lambda: defaultdict(list))
    clears: dict[str, list[EventRule]] = field(default_factory=lambda: defaultdict(list))
    notes: dict[str, list[EventRule]] = field(default_factory=lambda: defaultdict(list))


@dataclass(slots=True)
class RuleIndex:
    """One community's rules, indexed for the hot path."""

    by_type: dict[str, TypeRules]
    by_id: dict[str, Rule]
    absence: list[AbsenceRule]
    gateway: list[AbsenceRule]
    inactivity: list[InactivityRule]

    @classmethod
    def of(cls, rules: Iterable[Rule], device_types: Iterable[str]) -> RuleIndex:
        rules = list(rules)
        out = cls(by_type={}, by_id={r.id: r for r in rules}, absence=[], gateway=[], inactivity=[])
        for r in rules:
            if isinstance(r, AbsenceRule):
                (out.gateway if r.scope == "gateway" else out.absence).append(r)
            elif isinstance(r, InactivityRule):
                out.inactivity.append(r)
        for device_type in device_types:
            out.type_rules(device_type)
        return out

    def type_rules(self, device_type: str) -> TypeRules:
        found = self.by_type.get(device_type)
        if found is not None:
            return found
        t = TypeRules()
        for r in self.by_id.values():
            if not r.applies_to(device_type):
                continue
            if isinstance(r, ThresholdRule):
                t.thresholds.append(r)
            elif isinstance(r, CompositeRule):
                t.composites.append(r)
            elif isinstance(r, StateDurationRule):
                t.states.append(r)
            elif isinstance(r, EventRule):
                for e in r.events:
                    t.events[e].append(r)
                for e in r.clear_events:
                    t.clears[e].append(r)
                for e in r.note_events:
                    t.notes[e].append(r)
        self.by_type[device_type] = t
        return t
