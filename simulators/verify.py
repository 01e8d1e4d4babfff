"""``linli sim verify``: compare a simulator ground truth with what the pipeline stored.

The ground truth (`simulators.truth`) lists every message the simulator sent with the canonical
reading it decodes to; the database is the cloud's schema (docs/storage.md). `verify` reads both
and returns a `VerifyReport`; docs/simulators.md ("Verifying a run") defines every figure:

- **expected**: the readings of the non-malformed messages, once per ``reading_id`` (a duplicate
  sent twice counts once, and so do two messages with byte-identical payloads, which share their id);
  each metric of a reading is one expected row of ``readings``; each event the payload states is one
  expected row of ``events``.
- **readings** are matched per device at the device time the truth gives, to the millisecond. A
  reading stored at another time (a dialect without device time is stamped with the gateway's receive
  time; a skewed clock is replaced by it) is matched by its metric values among the device's
  readings left over, whatever its time.
- **events** are matched by ``reading_id`` (stored in ``events.attributes``); the events the edge
  derives (``door_opened``, ``device_offline``, ...) are counted, not required.
- **quarantined**: every gateway's edge quarantine counter (from its last status in ``gateways``)
  must be at least the malformed messages sent through it; the cloud's ``dead_letters`` must be empty.

The database must hold only this run (a fresh database): rows of other devices count as unexpected,
unless the comparison is scoped to the truth's gateways (``scope``; the default for a truth of one
gateway): then only the rows, events, statuses and dead letters of those gateways are compared.
"""

from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import msgspec
import psycopg

from device_profiles import DERIVED_EVENTS, LIVENESS_EVENTS
from simulators.errors import ConfigError, ServiceError
from simulators.truth import EndRecord, MessageRecord, read_records

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_EXAMPLES = 5

Signature = tuple[tuple[str, float], ...]


class _Expected(msgspec.Struct):
    seq: int
    device_id: str
    gateway_id: str
    ts_ms: int
    reading_id: str
    metrics: dict[str, float]
    events: tuple[str, ...]


class VerifyReport(msgspec.Struct, omit_defaults=False):
    """The comparison, as printed (JSON) by ``linli sim verify``. `match` is the verdict."""

    match: bool
    messages: int = 0
    malformed: int = 0
    duplicates_sent: int = 0
    id_collisions: int = 0
    expected: int = 0
    expected_rows: int = 0
    stored: int = 0
    stored_rows: int = 0
    matched_rows: int = 0
    missing: int = 0
    missing_rows: int = 0
    duplicated_rows: int = 0
    wrong_values: int = 0
    unexpected_rows: int = 0
    time_rewritten: int = 0
    expected_events: int = 0
    stored_events: int = 0
    missing_events: int = 0
    duplicated_events: int = 0
    unexpected_events: int = 0
    derived_events: int = 0
    quarantined: int = 0
    expected_quarantined: int = 0
    dead_letters: int = 0
    gateways_without_status: list[str] = msgspec.field(default_factory=list)
    #: ``all``: every row of the database was compared; ``gateways``: only the truth's gateways'
    scope: str = "all"
    truth_interrupted: bool = False
    examples: dict[str, list[str]] = msgspec.field(default_factory=dict)


def _parse_ms(text: str) -> int:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment - _EPOCH) // _MS


def _signature(metrics: dict[str, float]) -> Signature:
    return tuple(sorted(metrics.items()))


class _Truth:
    """The expected readings of a ground-truth file, once per reading id."""

    def __init__(self) -> None:
        self.readings: list[_Expected] = []
        self.messages = 0
        self.malformed: Counter[str] = Counter()
        self.duplicates = 0
        self.collisions = 0
        self.gateways: set[str] = set()
        self.interrupted = False

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> _Truth:
        truth = cls()
        seen: set[str] = set()
        name = os.fspath(path)
        try:
            for record in read_records(path):
                if type(record) is MessageRecord:
                    truth.add(record, seen, name)
                elif type(record) is EndRecord:
                    truth.interrupted = record.interrupted or record.failure is not msgspec.UNSET
        except OSError as exc:
            raise ConfigError(name, "", f"cannot read: {exc.strerror or exc}") from exc
        if truth.messages == 0:
            raise ConfigError(name, "", "no message records: not a ground truth, or an empty run")
        return truth

    def add(self, m: MessageRecord, seen: set[str], name: str) -> None:
        self.messages += 1
        self.gateways.add(m.gateway_id)
        if m.malformed:
            self.malformed[m.gateway_id] += 1
            return
        if m.reading_id in seen:
            if m.duplicate:
                self.duplicates += 1
            else:
                self.collisions += 1
            return
        seen.add(m.reading_id)
        try:
            ts_ms = _parse_ms(m.ts)
        except ValueError as exc:
            raise ConfigError(name, f"message {m.seq}.ts", str(exc)) from exc
        self.readings.append(
            _Expected(m.seq, m.device_id, m.gateway_id, ts_ms, m.reading_id, m.metrics, m.events)
        )


class _Stored:
    """What the database holds, grouped for matching."""

    def __init__(self) -> None:
        #: device -> ms -> exact time -> rows (metric, value)
        self.readings: dict[str, dict[int, dict[datetime, list[tuple[str, float]]]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(list))
        )
        self.rows = 0
        #: reading_id -> events
        self.events: dict[str | None, Counter[str]] = defaultdict(Counter)
        self.event_rows = 0
        self.statuses: dict[str, dict[str, Any]] = {}
        self.dead_letters = 0
        self.dead_letter_reasons: list[str] = []

    @classmethod
    def load(cls, database_url: str, *, gateways: set[str] | None = None) -> _Stored:
        """What the database holds; with `gateways`, without the rows of devices that other
        gateways own (and their statuses and dead letters): those are another simulator's run."""
        stored = cls()
        # rows of a device the registry does not know stay in scope (unexpected, if no truth has them)
        scope = (
            ""
            if gateways is None
            else " LEFT JOIN devices d USING (device_id)"
            " WHERE d.gateway_id IS NULL OR d.gateway_id = ANY(%(gw)s)"
        )
        params = {"gw": sorted(gateways or ())}
        try:
            with psycopg.connect(database_url, connect_timeout=10) as conn, conn.cursor() as cur:
                cur.execute(f"SELECT device_id, time, metric, value FROM readings{scope}", params)  # noqa: S608 - fixed text
                for device_id, time, metric, value in cur:
                    ms = (time - _EPOCH) // _MS
                    stored.readings[device_id][ms][time].append((metric, value))
                    stored.rows += 1
                cur.execute(f"SELECT attributes->>'reading_id', event FROM events{scope}", params)  # noqa: S608 - fixed text
                for reading_id, event in cur:
                    stored.events[reading_id][event] += 1
                    stored.event_rows += 1
                everything = {**params, "all": gateways is None, "n": _EXAMPLES}
                cur.execute(
                    "SELECT gateway_id, status FROM gateways WHERE %(all)s OR gateway_id = ANY(%(gw)s)",
                    everything,
                )
                stored.statuses = {str(g): dict(s) for g, s in cur}
                # a dead letter's topic names its gateway (linli/v1/<community>/<gateway>/<kind>):
                # those of gateways known to be others' are left out, any other stays in scope
                mine = (
                    " WHERE %(all)s OR split_part(topic, '/', 4) NOT IN"
                    " (SELECT gateway_id FROM gateways WHERE gateway_id <> ALL(%(gw)s))"
                )
                cur.execute(f"SELECT reason FROM dead_letters{mine} ORDER BY id LIMIT %(n)s", everything)  # noqa: S608 - fixed text
                stored.dead_letter_reasons = [str(r) for (r,) in cur]
                cur.execute(f"SELECT count(*) FROM dead_letters{mine}", everything)  # noqa: S608 - fixed text
                row = cur.fetchone()
                stored.dead_letters = int(row[0]) if row else 0
        except psycopg.Error as exc:
            raise ServiceError(f"cannot read the database: {exc}", service="postgres") from exc
        return stored


class _Tally:
    def __init__(self) -> None:
        self.report = VerifyReport(match=False)
        self.examples: dict[str, list[str]] = defaultdict(list)

    def example(self, kind: str, text: str) -> None:
        if len(self.examples[kind]) < _EXAMPLES:
            self.examples[kind].append(text)


def _same(a: float, b: float) -> bool:
    return a == b or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


def _compare_rows(
    tally: _Tally, where: str, expected: Iterable[tuple[str, float]], got: Iterable[tuple[str, float]]
) -> None:
    """Multiset comparison of the (metric, value) rows of one device at one millisecond."""
    r = tally.report
    by_metric_e: dict[str, list[float]] = defaultdict(list)
    by_metric_g: dict[str, list[float]] = defaultdict(list)
    for metric, value in expected:
        by_metric_e[metric].append(value)
    for metric, value in got:
        by_metric_g[metric].append(value)
    for metric in by_metric_e.keys() | by_metric_g.keys():
        e_left = list(by_metric_e.get(metric, ()))
        g_left: list[float] = []
        matched_values: list[float] = []
        for value in by_metric_g.get(metric, ()):
            hit = next((i for i, ev in enumerate(e_left) if _same(ev, value)), None)
            if hit is None:
                g_left.append(value)
            else:
                matched_values.append(e_left.pop(hit))
        r.matched_rows += len(matched_values)
        extra: list[float] = []
        for value in g_left:
            if any(_same(mv, value) for mv in matched_values):
                r.duplicated_rows += 1
                tally.example("duplicated", f"{where} {metric}={value}")
            else:
                extra.append(value)
        wrong = min(len(e_left), len(extra))
        r.wrong_values += wrong
        for ev, gv in list(zip(e_left, extra, strict=False))[:wrong]:
            tally.example("wrong_values", f"{where} {metric}: expected {ev}, stored {gv}")
        r.missing_rows += len(e_left) - wrong
        for ev in e_left[wrong:]:
            tally.example("missing", f"{where} {metric}={ev}")
        r.unexpected_rows += len(extra) - wrong
        for gv in extra[wrong:]:
            tally.example("unexpected", f"{where} {metric}={gv}")


def _match_readings(tally: _Tally, truth: _Truth, stored: _Stored) -> None:
    r = tally.report
    by_device: dict[str, dict[int, list[_Expected]]] = defaultdict(lambda: defaultdict(list))
    for e in truth.readings:
        if e.metrics:
            by_device[e.device_id][e.ts_ms].append(e)
    missing_ids: set[str] = set()
    for device_id in by_device.keys() | stored.readings.keys():
        exp_by_ms = by_device.get(device_id, {})
        got_by_ms = stored.readings.get(device_id, {})
        # 1. At the device time the truth gives.
        leftover_e: list[_Expected] = []
        for ms, readings in exp_by_ms.items():
            groups = got_by_ms.get(ms)
            if not groups:
                leftover_e.extend(readings)
                continue
            before = r.missing_rows
            _compare_rows(
                tally,
                f"{device_id}@{ms}",
                [(m, v) for e in readings for m, v in e.metrics.items()],
                [row for rows in groups.values() for row in rows],
            )
            if r.missing_rows > before:
                missing_ids.update(e.reading_id for e in readings)
        leftover_g = [
            (time, rows)
            for ms, groups in got_by_ms.items()
            if ms not in exp_by_ms
            for time, rows in groups.items()
        ]
        # 2. Stored at another time (gateway receive time): by metric values, whatever the time.
        pool: dict[Signature, list[datetime]] = defaultdict(list)
        for time, rows in leftover_g:
            pool[tuple(sorted(rows))].append(time)
        matched_sigs: set[Signature] = set()
        for e in leftover_e:
            sig = _signature(e.metrics)
            times = pool.get(sig)
            if times:
                times.pop(0)
                r.matched_rows += len(sig)
                r.time_rewritten += 1
                matched_sigs.add(sig)
            else:
                r.missing_rows += len(sig)
                missing_ids.add(e.reading_id)
                tally.example("missing", f"{device_id} reading {e.reading_id} (seq {e.seq}) {e.metrics}")
        for sig, times in pool.items():
            for time in times:
                if sig in matched_sigs:
                    r.duplicated_rows += len(sig)
                    tally.example("duplicated", f"{device_id}@{time.isoformat()} {dict(sig)}")
                else:
                    r.unexpected_rows += len(sig)
                    tally.example("unexpected", f"{device_id}@{time.isoformat()} {dict(sig)}")
    r.missing = len(missing_ids)
    r.stored = len(truth.readings) - r.missing


def _match_events(tally: _Tally, truth: _Truth, stored: _Stored) -> None:
    r = tally.report
    expected_ids: set[str] = set()
    for e in truth.readings:
        expected_ids.add(e.reading_id)
        want = Counter(e.events)
        r.expected_events += sum(want.values())
        got = stored.events.get(e.reading_id, Counter())
        for event, n in want.items():
            have = got.get(event, 0)
            if have < n:
                r.missing_events += n - have
                tally.example("missing_events", f"{e.device_id} {event} (reading {e.reading_id})")
            elif have > n:
                r.duplicated_events += have - n
        for event, have in got.items():
            if event in want:
                continue
            if event in DERIVED_EVENTS:
                r.derived_events += 1
                r.duplicated_events += have - 1
            else:
                r.unexpected_events += have
                tally.example("unexpected_events", f"{e.device_id} {event} (reading {e.reading_id})")
    for reading_id, got in stored.events.items():
        if reading_id in expected_ids:
            continue
        for event, have in got.items():
            if event in LIVENESS_EVENTS:
                r.derived_events += have
            else:
                r.unexpected_events += have
                tally.example("unexpected_events", f"{event} (reading {reading_id})")


def _match_quarantine(tally: _Tally, truth: _Truth, stored: _Stored) -> bool:
    r = tally.report
    ok = True
    r.expected_quarantined = sum(truth.malformed.values())
    for gateway_id in sorted(truth.gateways):
        status = stored.statuses.get(gateway_id)
        if status is None:
            r.gateways_without_status.append(gateway_id)
            ok = ok and truth.malformed[gateway_id] == 0
            continue
        counters = status.get("counters") or {}
        count = counters.get("quarantined", status.get("quarantine_count"))
        n = int(count) if isinstance(count, int | float) else 0
        r.quarantined += n
        if n < truth.malformed[gateway_id]:
            ok = False
            tally.example(
                "quarantine", f"{gateway_id}: {truth.malformed[gateway_id]} malformed sent, {n} quarantined"
            )
    r.dead_letters = stored.dead_letters
    for reason in stored.dead_letter_reasons:
        tally.example("dead_letters", reason)
    return ok and stored.dead_letters == 0


def compare(truth: _Truth, stored: _Stored) -> VerifyReport:
    tally = _Tally()
    r = tally.report
    r.messages = truth.messages
    r.malformed = sum(truth.malformed.values())
    r.duplicates_sent = truth.duplicates
    r.id_collisions = truth.collisions
    r.expected = len(truth.readings)
    r.expected_rows = sum(len(e.metrics) for e in truth.readings)
    r.stored_rows = stored.rows
    r.stored_events = stored.event_rows
    r.truth_interrupted = truth.interrupted
    _match_readings(tally, truth, stored)
    _match_events(tally, truth, stored)
    quarantine_ok = _match_quarantine(tally, truth, stored)
    r.examples = dict(tally.examples)
    r.match = (
        quarantine_ok
        and r.matched_rows == r.expected_rows
        and r.stored_rows == r.expected_rows
        and r.missing_rows == r.duplicated_rows == r.wrong_values == r.unexpected_rows == 0
        and r.missing_events == r.duplicated_events == r.unexpected_events == 0
    )
    return r


def expected_rows(truth: str | os.PathLike[str]) -> int:
    """The rows of ``readings`` a pipeline must store for the ground truth at `truth`
    (`VerifyReport.expected_rows`): one per metric of each expected reading.

    Raises:
        ConfigError: the truth file is unreadable or not a ground truth.
    """
    return sum(len(e.metrics) for e in _Truth.load(truth).readings)


Scope = Literal["auto", "all", "gateways"]


def verify(*, truth: str | os.PathLike[str], database_url: str, scope: Scope = "auto") -> VerifyReport:
    """Compare the ground truth at `truth` with the database at `database_url`.

    `scope`: ``all`` compares with every row of the database (it must hold only this run);
    ``gateways`` only with the rows of devices owned by the gateways the truth names (other
    gateways' rows are not this run's); ``auto`` is ``gateways`` when the truth names one gateway
    (one simulator of a run with several) and ``all`` otherwise.

    Raises:
        ConfigError: the truth file is unreadable or not a ground truth.
        ServiceError: the database is unreachable or lacks the cloud's schema.
    """
    expected = _Truth.load(truth)
    scoped = scope == "gateways" or (scope == "auto" and len(expected.gateways) == 1)
    stored = _Stored.load(database_url, gateways=expected.gateways if scoped else None)
    report = compare(expected, stored)
    report.scope = "gateways" if scoped else "all"
    return report


def encode_report(report: VerifyReport) -> bytes:
    return msgspec.json.format(msgspec.json.encode(report), indent=2)
