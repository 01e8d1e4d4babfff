"""Alert rules as data: YAML files, validated once into a `RuleBook`.

A rule file holds a list of rules, and may apply only to some communities::

    community: c001            # optional: a community id, or a list of them
    rules:
      - id: battery_low        # snake_case, unique; a known id overrides keys of the earlier rule
        kind: threshold        # threshold | event | state_duration | absence | inactivity | composite
        device_types: [door_contact, sos_button, manhole_cover]
        severity: minor        # critical | major | minor | info
        metric: battery_pct
        op: "<"
        value: 15
        clear: 20              # hysteresis: clears at >= 20 (the opposite of op, against `clear`)
        title: {zh: "电池电量低 {device_id}", en: "Battery low: {device_id}"}
        detail: {zh: "电量 {value}%", en: "battery at {value} %"}

The shipped defaults (`SHIPPED_DIR`, one file per concern) are read first, then each path given
(a file, or a folder of ``*.yaml`` read in name order). An entry whose ``id`` is already known
overrides only the keys it names (``{id: battery_low, value: 10}``); ``enabled: false`` switches a
rule off. In a file with ``community``, rules and overrides apply to those communities only.
Every problem is collected, with file, rule id and dotted key, and raised together as
`AlertRuleError`; `linli alerts check` prints them.

Durations are strings such as ``90s``, ``5m``, ``2h``, ``1d`` (or plain seconds). Titles and
details are templates: ``{name}`` placeholders from `PLACEHOLDERS`, nothing else (no code).
The kinds and their keys are documented on their classes below and in docs/alerts.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cloud.alerts.detect.kinds import (
    DETECTOR_KINDS,
    BatteryLifeRule,
    LampDriftRule,
    LampTimingRule,
    ReportDriftRule,
    RoutineRule,
    WaterTrendRule,
)
from cloud.alerts.rulebase import (
    CLEAR_OP,
    Duration,
    Op,
    compare,
)
from cloud.alerts.rulebase import RuleBase as _Rule
from cloud.errors import AlertRuleError, RuleProblem
from device_profiles.config_sources import error_detail
from device_profiles.standard import Event

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")

#: The folder of the shipped default rules.
SHIPPED_DIR: Final = Path(__file__).parent / "rules"


class Condition(BaseModel):
    """``metric op value``: one condition of a composite rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    metric: str
    op: Op
    value: float


class ThresholdRule(_Rule):
    """A metric beyond a value for ``for``; over when it is back beyond ``clear`` (hysteresis),
    held ``keep_firing_for`` longer. ``no_data``: what a device silent for ``no_data_after``
    (default three report intervals) means while the rule fires or is pending: ``keep`` the
    state, ``clear`` it, or ``alert`` (fire: we cannot tell)."""

    kind: Literal["threshold"]
    metric: str
    op: Op
    value: float
    clear: float | None = None
    for_: Duration = Field(default=0.0, alias="for")
    keep_firing_for: Duration = 0.0
    no_data: Literal["keep", "clear", "alert"] = "keep"
    no_data_after: Duration | None = None

    @model_validator(mode="after")
    def _hysteresis(self) -> ThresholdRule:
        if (
            self.clear is not None
            and self.op in (">", ">=", "<", "<=")
            and compare(self.op, self.clear, self.value)
        ):
            raise ValueError(
                f"clear {self.clear:g} would itself fire ({self.metric} {self.op} {self.value:g})"
            )
        return self

    @property
    def clear_value(self) -> float:
        return self.value if self.clear is None else self.clear


class EventRule(_Rule):
    """Fires on a stored event. ``latched``: every event is a new fire and nothing clears it but
    the workflow (SOS). Otherwise a repeat while firing is a ``repeat``, and the incident clears
    on one of ``clear_events`` or ``clear_after`` without the event. One of ``note_events`` from
    the device is noted on its open incident, which stays as it is; the incidents service tells
    everyone already told (the resident cancelling an SOS press: call to confirm)."""

    kind: Literal["event"]
    events: tuple[str, ...] = Field(min_length=1)
    latched: bool = False
    clear_events: tuple[str, ...] = ()
    clear_after: Duration | None = None
    note_events: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _latched(self) -> EventRule:
        if self.latched and (self.clear_events or self.clear_after is not None):
            raise ValueError("a latched rule never clears by itself: no clear_events or clear_after")
        both = set(self.note_events) & (set(self.events) | set(self.clear_events))
        if both:
            raise ValueError(
                f"{', '.join(sorted(both))}: an event fires, clears or is noted, not two of these"
            )
        return self


class CommandRule(EventRule):
    """A device that does not follow its commands: fires when a command to it fails or expires
    (``command_not_confirmed``, which ``linli cloud commands`` writes when the gateway reports the
    command's end: a lamp that ignores its schedule, a button that never acknowledged), and clears
    when a later command to it is confirmed (``command_confirmed``) or after ``clear_after``."""

    kind: Literal["command"]  # type: ignore[assignment]
    events: tuple[str, ...] = (Event.COMMAND_NOT_CONFIRMED,)
    clear_events: tuple[str, ...] = (Event.COMMAND_CONFIRMED,)


class StateDurationRule(_Rule):
    """A state (``metric == equals``) held longer than ``for``; with ``sun``, only while the sun
    is up (``day``: above ``sun_above_deg``) or down (``night``: below ``sun_below_deg``) at the
    community. The state is known for ``fresh_for`` after the device's last report (default two
    report intervals): a silent device does not keep a state alive."""

    kind: Literal["state_duration"]
    metric: str
    equals: float
    for_: Duration = Field(alias="for")
    sun: Literal["day", "night"] | None = None
    sun_above_deg: float = 3.0
    sun_below_deg: float = -6.0
    fresh_for: Duration | None = None


class AbsenceRule(_Rule):
    """``scope: device``: no reading for ``after_intervals`` times the device's report interval.
    ``scope: gateway``: the gateway said ``offline`` (its last will, or a clean stop) and did not
    come back within ``after``."""

    kind: Literal["absence"]
    scope: Literal["device", "gateway"] = "device"
    after_intervals: float = Field(default=4.0, gt=0)
    after: Duration = 300.0


class InactivityRule(_Rule):
    """A resident living alone (inventory ``resident_id`` and ``living_alone``) shows no door
    activity (``door_opened``/``door_closed``, ``contact_open`` = 1, ``open_count`` rising) for
    ``hours`` of active time: time within ``active_hours`` (local, ``HH:MM-HH:MM``)."""

    kind: Literal["inactivity"]
    hours: float = Field(default=12.0, gt=0)
    active_hours: str = "07:00-22:00"
    device_types: tuple[str, ...] = ("door_contact",)

    @field_validator("active_hours")
    @classmethod
    def _window(cls, value: str) -> str:
        m = _HHMM.match(value)
        if m is None or (int(m.group(3)), int(m.group(4))) <= (int(m.group(1)), int(m.group(2))):
            raise ValueError("must be HH:MM-HH:MM with the end after the start, e.g. 07:00-22:00")
        return value

    @property
    def window_s(self) -> tuple[int, int]:
        """The active hours as seconds after local midnight, (start, end)."""
        h1, m1, h2, m2 = (int(x) for x in re.split("[:-]", self.active_hours))
        return h1 * 3600 + m1 * 60, h2 * 3600 + m2 * 60


class CompositeRule(_Rule):
    """Conditions on one device's metrics, ``all`` of them (or ``any``) for ``for``; over when
    the combination no longer holds (each condition may be given a hysteresis with ``clear`` in
    a threshold rule instead)."""

    kind: Literal["composite"]
    all: tuple[Condition, ...] = ()
    any: tuple[Condition, ...] = ()
    for_: Duration = Field(default=0.0, alias="for")
    keep_firing_for: Duration = 0.0

    @model_validator(mode="after")
    def _some(self) -> CompositeRule:
        if not self.all and not self.any:
            raise ValueError("needs conditions: all: [...] or any: [...]")
        return self


Rule = Annotated[
    ThresholdRule
    | EventRule
    | CommandRule
    | StateDurationRule
    | AbsenceRule
    | InactivityRule
    | CompositeRule
    | RoutineRule
    | LampDriftRule
    | LampTimingRule
    | WaterTrendRule
    | BatteryLifeRule
    | ReportDriftRule,
    Field(discriminator="kind"),
]
KINDS: Final = (
    "threshold",
    "event",
    "command",
    "state_duration",
    "absence",
    "inactivity",
    "composite",
    *DETECTOR_KINDS,
)


class _One(BaseModel):
    rule: Rule


class RuleBook:
    """Validated rules: the defaults, and the rule list of each community with overrides."""

    def __init__(
        self, *, rules: Sequence[Rule], communities: Mapping[str, Sequence[Rule]] | None = None
    ) -> None:
        self.rules: tuple[Rule, ...] = tuple(r for r in rules if r.enabled)
        self._communities = {c: tuple(r for r in rs if r.enabled) for c, rs in (communities or {}).items()}

    def for_community(self, community_id: str) -> tuple[Rule, ...]:
        return self._communities.get(community_id, self.rules)

    @property
    def communities(self) -> tuple[str, ...]:
        """Communities with rules of their own."""
        return tuple(sorted(self._communities))

    def only(self, rule_id: str) -> RuleBook:
        """The same book with every rule but `rule_id` left out (``linli alerts explain``)."""
        return RuleBook(
            rules=[r for r in self.rules if r.id == rule_id],
            communities={c: [r for r in rs if r.id == rule_id] for c, rs in self._communities.items()},
        )

    def ids(self) -> set[str]:
        return {r.id for r in self.rules} | {r.id for rs in self._communities.values() for r in rs}

    @classmethod
    def load(cls, *, shipped: bool = True, paths: Sequence[Path] = ()) -> RuleBook:
        """The shipped defaults (unless not `shipped`), then `paths` in order; raises
        `AlertRuleError` with every problem found."""
        problems: list[RuleProblem] = []
        base: dict[str, tuple[dict[str, Any], str]] = {}
        overlays: dict[str, dict[str, tuple[dict[str, Any], str]]] = {}
        files = [*sorted(SHIPPED_DIR.glob("*.yaml"))] if shipped else []
        for p in paths:
            if p.is_dir():
                files.extend(sorted([*p.glob("*.yaml"), *p.glob("*.yml")]))
            elif p.exists():
                files.append(p)
            else:
                problems.append(RuleProblem(file=str(p), rule="", key="", detail="no such file or folder"))
        for f in files:
            for communities, entries in _read(f, problems):
                for index, entry in entries:
                    targets = (
                        [base] if communities is None else [overlays.setdefault(c, {}) for c in communities]
                    )
                    for target in targets:
                        _merge(target, entry, base if target is not base else None, f, index, problems)
        rules = _validate(base, problems)
        community_rules = {}
        for community, extra in overlays.items():
            merged = {**base, **extra}
            community_rules[community] = _validate(merged, problems, only=set(extra))
        if problems:
            raise AlertRuleError(_unique(problems))
        full = {c: [*(r for r in rules if r.id not in overlays[c]), *rs] for c, rs in community_rules.items()}
        return cls(rules=rules, communities=full)


def _unique(problems: list[RuleProblem]) -> list[RuleProblem]:
    seen: set[str] = set()
    out = []
    for p in problems:
        if str(p) not in seen:
            seen.add(str(p))
            out.append(p)
    return out


def _read(
    path: Path, problems: list[RuleProblem]
) -> Iterator[tuple[list[str] | None, list[tuple[int, dict[str, Any]]]]]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(RuleProblem(file=str(path), rule="", key="", detail=f"cannot read: {exc}"))
        return
    except yaml.YAMLError as exc:
        problems.append(RuleProblem(file=str(path), rule="", key="", detail=f"not YAML: {exc}"))
        return
    if data is None:
        return
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        problems.append(
            RuleProblem(file=str(path), rule="", key="rules", detail="expected a mapping with a list `rules`")
        )
        return
    extra = sorted(set(data) - {"rules", "community"})
    if extra:
        problems.append(
            RuleProblem(file=str(path), rule="", key=extra[0], detail="unknown key (rules, community)")
        )
    community = data.get("community")
    communities: list[str] | None
    if community is None:
        communities = None
    elif isinstance(community, str):
        communities = [community]
    elif isinstance(community, list) and all(isinstance(c, str) for c in community):
        communities = list(community)
    else:
        problems.append(
            RuleProblem(file=str(path), rule="", key="community", detail="a community id or a list of them")
        )
        return
    entries = []
    for i, entry in enumerate(data["rules"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            problems.append(
                RuleProblem(
                    file=str(path), rule=f"#{i + 1}", key="id", detail="each rule is a mapping with an id"
                )
            )
            continue
        entries.append((i, {**entry, "_file": str(path)}))
    yield communities, entries


def _merge(
    target: dict[str, tuple[dict[str, Any], str]],
    entry: dict[str, Any],
    fallback: dict[str, tuple[dict[str, Any], str]] | None,
    path: Path,
    index: int,
    problems: list[RuleProblem],
) -> None:
    rid = entry["id"]
    known = target.get(rid) or (fallback.get(rid) if fallback is not None else None)
    if known is None:
        if "kind" not in entry:
            problems.append(
                RuleProblem(file=str(path), rule=rid, key="kind", detail="a new rule needs its kind")
            )
            return
        target[rid] = (entry, str(path))
        return
    before, _ = known
    if "kind" in entry and entry["kind"] != before.get("kind"):
        problems.append(
            RuleProblem(
                file=str(path),
                rule=rid,
                key="kind",
                detail=f"an override cannot change the kind ({before.get('kind')})",
            )
        )
        return
    target[rid] = ({**before, **entry}, str(path))


def _validate(
    raw: Mapping[str, tuple[dict[str, Any], str]], problems: list[RuleProblem], only: set[str] | None = None
) -> list[Rule]:
    out: list[Rule] = []
    for rid, (entry, path) in raw.items():
        if only is not None and rid not in only:
            continue
        data = {k: v for k, v in entry.items() if k != "_file"}
        try:
            out.append(_One(rule=data).rule)
        except ValidationError as exc:
            for err in exc.errors():
                loc = [str(x) for x in err["loc"][1:]]
                if loc and loc[0] in KINDS:
                    loc = loc[1:]
                key = ".".join("for" if x == "for_" else x for x in loc)
                detail = error_detail(err["msg"])
                problems.append(RuleProblem(file=path, rule=rid, key=key, detail=detail))
    return out


def describe(rule: Rule) -> str:
    """One line saying when `rule` fires and clears."""

    def cond(c: Condition) -> str:
        return f"{c.metric} {c.op} {c.value:g}"

    def dur(seconds: float) -> str:
        return f" for {seconds:g} s" if seconds else ""

    if isinstance(rule, ThresholdRule):
        clears = f"{rule.metric} {CLEAR_OP[rule.op]} {rule.clear_value:g}"
        text = f"{rule.metric} {rule.op} {rule.value:g}{dur(rule.for_)}; clears at {clears}"
        if rule.keep_firing_for:
            text += f" held {rule.keep_firing_for:g} s"
        return f"{text}; no data: {rule.no_data}"
    if isinstance(rule, EventRule):
        text = f"event {' or '.join(rule.events)}"
        if rule.latched:
            return text + "; latched (only the workflow closes it)"
        ends = [f"event {' or '.join(rule.clear_events)}"] if rule.clear_events else []
        if rule.clear_after is not None:
            ends.append(f"{rule.clear_after:g} s without the event")
        return text + (
            f"; clears on {', or '.join(ends)}" if ends else "; stays until the workflow closes it"
        )
    if isinstance(rule, StateDurationRule):
        sun = f" while the sun is {'up' if rule.sun == 'day' else 'down'}" if rule.sun else ""
        return f"{rule.metric} == {rule.equals:g}{sun}{dur(rule.for_)}; clears when that ends"
    if isinstance(rule, AbsenceRule):
        if rule.scope == "device":
            return f"no report for {rule.after_intervals:g} report intervals; clears on the next report"
        return f"gateway offline for {rule.after:g} s; clears when it is back"
    if isinstance(rule, InactivityRule):
        active = f"{rule.hours:g} h of active time ({rule.active_hours})"
        return f"no door activity for {active}; clears on door activity"
    if not isinstance(rule, CompositeRule):
        return rule.describe()
    parts = [" and ".join(cond(c) for c in rule.all)] if rule.all else []
    if rule.any:
        parts.append("any of " + ", ".join(cond(c) for c in rule.any))
    return f"{' and '.join(parts)}{dur(rule.for_)}; clears when that no longer holds"
