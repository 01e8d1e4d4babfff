"""``linli sim verify --alerts``: compare a ground truth's conditions with the incidents stored.

The ground truth (`simulators.truth`) lists every condition a correct pipeline detects; the alert
service writes ``incidents`` and ``incident_occurrences`` (cloud/migrations/0003_alerts.sql).
`verify_alerts` reads both and returns an `AlertsReport`; docs/simulators.md ("Verifying alerts")
defines every figure. In short:

- `DETECTION` (the one place that says it) maps each condition type to the rules that detect it,
  the kind of subject those rules key on, and how late after the condition's window a detection
  may come; ``gateway_storm`` maps to None: informational, no incident expected.
- A **detection point** is a moment an incident fired or repeated: each ``fired`` or ``repeated``
  occurrence, or the incident's ``detected_at`` when it has no ``fired`` occurrence.
- A point **matches** a condition when the incident's rule is one of the condition's rules, its
  subject is the condition's device (resident for ``resident_inactive``), and the point's time lies
  in the condition's window widened by the tolerances.
- A condition is **detected** when a point matches it (the earliest gives the incident and the
  delay), else **missed**. Each ``fired`` point that matches no condition is a **false positive**
  (``out_of_window`` when a condition of the same rule and subject exists at another time). Two
  incidents of one rule matching one condition are a **duplicate**.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

import msgspec
import psycopg

from device_profiles import DEFAULT_REPORT_INTERVAL_S, ProfileSet
from device_profiles.errors import UnknownProfileError
from simulators.errors import ConfigError, ServiceError
from simulators.truth import ConditionRecord, EndRecord, FaultRecord, MessageRecord, read_records

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)
_EXAMPLES: Final = 5
_NEVER: Final = 2**62

SubjectKind = Literal["device", "resident", "gateway"]


class Detection(msgspec.Struct, frozen=True, kw_only=True):
    """How the incidents of one condition type look.

    `late_s` is how long after the window's end (``to``, or ``at`` for a moment) a detection may
    come; ``absence`` conditions add the rules' ``after_intervals`` times the device's report
    interval (`AlertsOptions.absence_intervals`).
    """

    rules: tuple[str, ...]
    subject: SubjectKind
    late_s: float
    absence: bool = False


#: Condition type -> the rules that detect it (None: informational, no incident expected).
DETECTION: Final[Mapping[str, Detection | None]] = {
    "sos_pressed": Detection(rules=("sos_pressed",), subject="device", late_s=300.0),
    "resident_inactive": Detection(rules=("resident_inactive",), subject="resident", late_s=900.0),
    "manhole_open": Detection(rules=("manhole_open",), subject="device", late_s=900.0),
    "lamp_failure": Detection(rules=("lamp_failure",), subject="device", late_s=900.0),
    "lamp_on_daytime": Detection(rules=("lamp_on_daytime",), subject="device", late_s=900.0),
    "device_silent": Detection(rules=("device_silent",), subject="device", late_s=900.0, absence=True),
    "battery_low": Detection(rules=("battery_low",), subject="device", late_s=3600.0),
    "gas_alarm": Detection(
        rules=("gas_h2s_high", "gas_ch4_high", "gas_alarm"), subject="device", late_s=900.0
    ),
    "water_alarm": Detection(rules=("water_level_high", "water_alarm"), subject="device", late_s=3600.0),
    "gateway_storm": None,
    # the slow conditions: the detectors anticipate them (`linli bench detect` judges those)
    "lamp_degrading": None,
    "battery_draining": None,
    "radio_fading": None,
}

#: Slack before a condition's start (and after its end, beside `Detection.late_s`): device times
#: truncated to the second, and the engine's data clock (the newest device time of the community).
EARLY_S: Final = 60.0


class AlertsOptions(msgspec.Struct, frozen=True, kw_only=True):
    #: the absence rule's ``after_intervals``: a silence shorter than that many report intervals
    #: cannot be detected and is counted as `AlertsReport.undetectable`, not expected
    absence_intervals: float = 4.0
    #: seconds of data time a detection may come after every condition's own tolerance: a run in
    #: accelerated time through outages (``linli chaos``) delays detections by the outage's wall
    #: seconds times the speed; a detection that late counts as detected (its delay says how late)
    extra_late_s: float = 0.0


class DelayStats(msgspec.Struct):
    """Seconds from a condition's ``at`` to its first detection, per condition type."""

    detected: int
    p50_s: float
    max_s: float


class ConditionResult(msgspec.Struct, omit_defaults=False):
    id: str
    condition: str
    subject: str
    at: str
    detected: bool
    incident_id: int | None = None
    rule: str | None = None
    delay_s: float | None = None


class AlertsReport(msgspec.Struct, omit_defaults=False):
    """The comparison, as printed (JSON) by ``linli sim verify --alerts``. `match` is the verdict."""

    match: bool
    conditions: int = 0
    detected: int = 0
    missed: int = 0
    false_positives: int = 0
    out_of_window: int = 0
    duplicates: int = 0
    informational: int = 0
    undetectable: int = 0
    incidents: int = 0
    #: incidents of the detectors (early warnings: judged by ``linli bench detect``, not here)
    early_warnings: int = 0
    occurrences: int = 0
    delays: dict[str, DelayStats] = msgspec.field(default_factory=dict)
    results: list[ConditionResult] = msgspec.field(default_factory=list)
    truth_interrupted: bool = False
    examples: dict[str, list[str]] = msgspec.field(default_factory=dict)


class _Condition(msgspec.Struct):
    record: ConditionRecord
    subject: str
    at_ms: int
    start_ms: int
    end_ms: int  # _NEVER: open
    expected: bool  # False: informational or undetectable
    hits: dict[str, set[int]] = msgspec.field(default_factory=dict)  # rule -> incident ids
    first: tuple[int, int, str] | None = None  # (time ms, incident id, rule)


class _Incident(msgspec.Struct):
    incident_id: int
    rule: str
    subject: str
    subject_kind: str
    detected_ms: int
    fired: list[int] = msgspec.field(default_factory=list)
    repeated: list[int] = msgspec.field(default_factory=list)


def _ms(text: str, name: str, where: str) -> int:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(name, where, str(exc)) from exc
    return (moment - _EPOCH) // _MS


def _iso(ms: int) -> str:
    return (_EPOCH + ms * _MS).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Truth:
    def __init__(self) -> None:
        self.conditions: list[ConditionRecord] = []
        self.profiles: dict[str, str] = {}  # device -> profile
        self.skew_s: dict[str, float] = {}
        self.interrupted = False
        self.records = 0
        #: condition id -> messages that carry it, and how many of them were sent intact
        self.carriers: dict[str, int] = defaultdict(int)
        self.intact: dict[str, int] = defaultdict(int)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> _Truth:
        truth = cls()
        try:
            for record in read_records(path):
                truth.records += 1
                if type(record) is ConditionRecord:
                    truth.conditions.append(record)
                elif type(record) is MessageRecord:
                    truth.profiles.setdefault(record.device_id, record.profile)
                    for cid in record.conditions:
                        truth.carriers[cid] += 1
                        truth.intact[cid] += not record.malformed
                elif type(record) is FaultRecord and record.fault == "clock_skew":
                    truth.skew_s[record.device_id] = abs(float(record.skew_s or 0.0))
                elif type(record) is EndRecord:
                    truth.interrupted = record.interrupted or record.failure is not msgspec.UNSET
        except OSError as exc:
            raise ConfigError(os.fspath(path), "", f"cannot read: {exc.strerror or exc}") from exc
        if truth.records == 0:
            raise ConfigError(os.fspath(path), "", "empty: not a ground truth")
        return truth


def _interval_s(truth: _Truth, device_id: str, profiles: ProfileSet) -> float:
    profile_id = truth.profiles.get(device_id)
    if profile_id is not None:
        try:
            return profiles.get(profile_id).report_interval_s
        except UnknownProfileError:
            pass
    return max(DEFAULT_REPORT_INTERVAL_S.values())


def _subject(record: ConditionRecord, kind: SubjectKind) -> str | None:
    value = {"device": record.device_id, "resident": record.resident_id, "gateway": record.gateway_id}[kind]
    return value if isinstance(value, str) else None


def _conditions(
    truth: _Truth, name: str, options: AlertsOptions, report: AlertsReport, tally: _Tally
) -> tuple[list[_Condition], dict[tuple[str, str, str], list[_Condition]]]:
    """Each condition with its widened window, indexed by (rule, subject kind, subject)."""
    profiles = ProfileSet.shipped()
    slack_ms = round((EARLY_S + max(truth.skew_s.values(), default=0.0)) * 1000)
    found: list[_Condition] = []
    index: dict[tuple[str, str, str], list[_Condition]] = defaultdict(list)
    for r in truth.conditions:
        where = f"condition {r.id}"
        if r.condition not in DETECTION:
            raise ConfigError(name, f"{where}.condition", f"unknown condition {r.condition!r}")
        detection = DETECTION[r.condition]
        if detection is None:
            report.informational += 1
            continue
        subject = _subject(r, detection.subject)
        if subject is None:
            raise ConfigError(name, where, f"a {r.condition} condition without its {detection.subject}")
        at_ms = _ms(r.at, name, f"{where}.at")
        start = _ms(r.from_, name, f"{where}.from") if isinstance(r.from_, str) else at_ms
        if isinstance(r.to, str):
            end: int | None = _ms(r.to, name, f"{where}.to")
        else:
            end = None if r.to is None else at_ms  # null: never ends; absent: a moment
        late_ms = round((detection.late_s + options.extra_late_s) * 1000)
        expected = True
        if truth.carriers.get(r.id) and not truth.intact.get(r.id):
            # the only messages showing it were damaged on purpose: no pipeline can see it
            expected = False
            report.undetectable += 1
            what = f"{r.id} {r.condition} {subject}: carried only by malformed messages"
            tally.example("undetectable", what)
        if detection.absence:
            after_ms = round(options.absence_intervals * _interval_s(truth, subject, profiles) * 1000)
            late_ms += after_ms
            if expected and end is not None and end - start < after_ms:
                expected = False
                report.undetectable += 1
                tally.example(
                    "undetectable",
                    f"{r.id} {r.condition} {subject}: silent {(end - start) / 1000:.0f} s, under "
                    f"{options.absence_intervals:g} report intervals ({after_ms / 1000:.0f} s)",
                )
        c = _Condition(
            record=r,
            subject=subject,
            at_ms=at_ms,
            start_ms=start - slack_ms,
            end_ms=_NEVER if end is None else end + late_ms + slack_ms,
            expected=expected,
        )
        found.append(c)
        for rule in detection.rules:
            index[(rule, detection.subject, subject)].append(c)
    return found, index


class _Tally:
    def __init__(self) -> None:
        self.examples: dict[str, list[str]] = defaultdict(list)

    def example(self, kind: str, text: str) -> None:
        if len(self.examples[kind]) < _EXAMPLES:
            self.examples[kind].append(text)


def _load_incidents(database_url: str) -> tuple[dict[int, _Incident], int]:
    incidents: dict[int, _Incident] = {}
    occurrences = 0
    try:
        with psycopg.connect(database_url, connect_timeout=10) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT incident_id, rule, subject, subject_kind, detected_at FROM incidents"
                " ORDER BY incident_id"
            )
            for incident_id, rule, subject, kind, detected_at in cur:
                incidents[int(incident_id)] = _Incident(
                    incident_id=int(incident_id),
                    rule=str(rule),
                    subject=str(subject),
                    subject_kind=str(kind),
                    detected_ms=(detected_at - _EPOCH) // _MS,
                )
            cur.execute("SELECT incident_id, at, kind FROM incident_occurrences ORDER BY at, incident_id")
            for incident_id, at, kind in cur:
                occurrences += 1
                incident = incidents[int(incident_id)]  # a foreign key: always there
                ms = (at - _EPOCH) // _MS
                if kind == "fired":
                    incident.fired.append(ms)
                elif kind == "repeated":
                    incident.repeated.append(ms)
    except psycopg.Error as exc:
        raise ServiceError(f"cannot read the incidents: {exc}", service="postgres") from exc
    return incidents, occurrences


def _detector_rules() -> frozenset[str]:
    """Ids of the shipped detector rules (their incidents anticipate conditions, see docs/detection.md)."""
    from cloud.alerts.detect.runner import detector_rules
    from cloud.alerts.rules import RuleBook

    return frozenset(r.id for r in detector_rules(RuleBook.load().rules))


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def compare_alerts(
    truth: _Truth, incidents: Mapping[int, _Incident], *, name: str, options: AlertsOptions
) -> AlertsReport:
    report = AlertsReport(match=False, truth_interrupted=truth.interrupted, incidents=len(incidents))
    tally = _Tally()
    conditions, index = _conditions(truth, name, options, report, tally)
    early = _detector_rules()
    for incident in incidents.values():
        if incident.rule in early:
            report.early_warnings += 1
            continue
        candidates = index.get((incident.rule, incident.subject_kind, incident.subject), [])
        fired = incident.fired or [incident.detected_ms]
        points = [(t, True) for t in fired] + [(t, False) for t in incident.repeated]
        for t, is_fire in points:
            hits = [c for c in candidates if c.start_ms <= t <= c.end_ms]
            for c in hits:
                c.hits.setdefault(incident.rule, set()).add(incident.incident_id)
                if c.first is None or t < c.first[0]:
                    c.first = (t, incident.incident_id, incident.rule)
            if hits or not is_fire:
                continue
            report.false_positives += 1
            what = f"incident {incident.incident_id} {incident.rule} {incident.subject} at {_iso(t)}"
            if candidates:
                report.out_of_window += 1
                near = min(candidates, key=lambda c: abs(c.at_ms - t))
                tally.example("out_of_window", f"{what}: condition {near.record.id} at {near.record.at}")
            else:
                tally.example("false_positives", f"{what}: no condition behind it")
    delays: dict[str, list[float]] = defaultdict(list)
    for c in conditions:
        r = c.record
        for rule, ids in sorted(c.hits.items()):
            if len(ids) > 1:
                report.duplicates += len(ids) - 1
                what = f"{r.id} {r.condition} {c.subject}: {rule} incidents {sorted(ids)}"
                tally.example("duplicates", what)
        if not c.expected:
            continue
        report.conditions += 1
        result = ConditionResult(id=r.id, condition=r.condition, subject=c.subject, at=r.at, detected=False)
        if c.first is None:
            report.missed += 1
            tally.example("missed", f"{r.id} {r.condition} {c.subject} at {r.at}")
        else:
            t, incident_id, rule = c.first
            report.detected += 1
            result.detected = True
            result.incident_id = incident_id
            result.rule = rule
            result.delay_s = (t - c.at_ms) / 1000
            delays[r.condition].append(result.delay_s)
        report.results.append(result)
    report.delays = {
        kind: DelayStats(detected=len(v), p50_s=_percentile(v, 0.5), max_s=max(v))
        for kind, v in sorted(delays.items())
    }
    report.examples = dict(tally.examples)
    report.match = report.missed == report.false_positives == report.duplicates == 0
    return report


def verify_alerts(
    *, truth: str | os.PathLike[str], database_url: str, options: AlertsOptions | None = None
) -> AlertsReport:
    """Compare the conditions of the ground truth at `truth` with the incidents at `database_url`.

    Raises:
        ConfigError: the truth file is unreadable, not a ground truth, or names an unknown condition.
        ServiceError: the database is unreachable or lacks the ``incidents`` table.
    """
    loaded = _Truth.load(truth)
    incidents, occurrences = _load_incidents(database_url)
    report = compare_alerts(loaded, incidents, name=os.fspath(truth), options=options or AlertsOptions())
    report.occurrences = occurrences
    return report


def encode_alerts_report(report: AlertsReport) -> bytes:
    return msgspec.json.format(msgspec.json.encode(report), indent=2)
