"""Actions as staff read them: an `Action` with its titles and details formatted from the rule's
templates, and the device, resident and gateway it concerns."""

from __future__ import annotations

from typing import Any

from cloud.alerts.model import Action, ActionKind, DeviceInfo, Evidence, SubjectKind
from cloud.alerts.rules import (
    AbsenceRule,
    CompositeRule,
    EventRule,
    InactivityRule,
    Rule,
    StateDurationRule,
    ThresholdRule,
)

#: Evidence items an action carries at most.
MAX_EVIDENCE = 8


def make_action(
    kind: ActionKind,
    rule: Rule,
    *,
    community_id: str,
    subject: str,
    subject_kind: SubjectKind,
    started: int,
    at: int,
    evidence: list[Evidence],
    device_id: str | None,
    device_type: str,
    gateway_id: str | None,
    info: DeviceInfo | None,
    value: float | None = None,
    event: str | None = None,
    why: tuple[str, str] = ("", ""),
) -> Action:
    """The action, its templates filled in (`cloud.alerts.rulebase.PLACEHOLDERS`); `why` is a
    detector's explanation (zh, en) for ``{why}``."""
    resident_id = subject if subject_kind == "resident" else (info.resident_id if info else None)
    fields: dict[str, Any] = {
        "rule": rule.id,
        "device_id": device_id or "",
        "device_type": device_type,
        "resident_id": resident_id or "",
        "gateway_id": gateway_id or "",
        "community_id": community_id,
        "building": (info.building or "") if info else "",
        "unit": (info.unit or "") if info else "",
        "room": (info.room or "") if info else "",
        "metric": _rule_metric(rule),
        "value": "" if value is None else f"{value:g}",
        "threshold": _threshold(rule),
        "duration": _duration(rule),
        "event": event or "",
        "why": why[0],
    }
    english = {**fields, "why": why[1]}
    return Action(
        kind=kind,
        rule=rule.id,
        subject=subject,
        subject_kind=subject_kind,
        severity=rule.severity,
        latched=isinstance(rule, EventRule) and rule.latched,
        community_id=community_id,
        gateway_id=gateway_id,
        device_id=device_id,
        resident_id=resident_id,
        title_zh=rule.title.zh.format_map(fields),
        title_en=rule.title.en.format_map(english),
        detail_zh=rule.detail.zh.format_map(fields),
        detail_en=rule.detail.en.format_map(english),
        started_us=started,
        at_us=at,
        evidence=tuple(evidence[:MAX_EVIDENCE]),
    )


def _rule_metric(rule: Rule) -> str:
    if isinstance(rule, ThresholdRule | StateDurationRule):
        return rule.metric
    if isinstance(rule, CompositeRule):
        return ", ".join(c.metric for c in (*rule.all, *rule.any))
    return ""


def _threshold(rule: Rule) -> str:
    if isinstance(rule, ThresholdRule):
        return f"{rule.value:g}"
    if isinstance(rule, CompositeRule):
        return ", ".join(f"{c.metric} {c.op} {c.value:g}" for c in (*rule.all, *rule.any))
    return ""


def _duration(rule: Rule) -> str:
    if isinstance(rule, InactivityRule):
        return f"{rule.hours:g} h"
    if isinstance(rule, ThresholdRule | CompositeRule | StateDurationRule) and rule.for_:
        return _human(rule.for_)
    if isinstance(rule, AbsenceRule):
        return f"{rule.after_intervals:g} x interval" if rule.scope == "device" else _human(rule.after)
    return ""


def _human(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
