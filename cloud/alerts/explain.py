"""``linli alerts explain``: replay a device's stored history through one rule.

The device's readings and events in [start, end) are read back from the database
(`cloud.alerts.replay`) and fed to an engine holding only that rule, on the wall clock set to
each reading's time, with the time-based checks run every `TICK_S` of history in between and
up to `end`. Each fire, repeat and clear of the device (or its resident, or its gateway) is
printed with the evidence behind it. The replay starts with no state at `start`: a condition
already pending before it counts from its first reading inside the window.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Final

import psycopg

from cloud.alerts.directory import load_directory
from cloud.alerts.engine import Engine
from cloud.alerts.ledger import to_datetime
from cloud.alerts.model import Action, Directory
from cloud.alerts.replay import stored_rows
from cloud.alerts.rules import RuleBook, describe
from cloud.config import CloudSettings
from cloud.errors import AlertRuleError, RuleProblem, StoreUnavailable

#: Time-based checks run this often (seconds of history) between readings.
TICK_S: Final = 60


def _iso(us: int) -> str:
    return to_datetime(us).isoformat(timespec="seconds").replace("+00:00", "Z")


def _only(directory: Directory, device_id: str) -> Directory:
    info = directory.devices.get(device_id)
    devices = {device_id: info} if info is not None else {}
    return Directory(
        devices=devices,
        communities=directory.communities,
        profile_intervals=directory.profile_intervals,
        default_timezone=directory.default_timezone,
    )


def explain(
    settings: CloudSettings,
    *,
    rule_id: str,
    device_id: str,
    start: datetime,
    end: datetime,
    community: str | None = None,
) -> Iterator[str]:
    """The lines ``linli alerts explain`` prints; raises `CloudError` subclasses."""
    config = settings.alerts
    book = RuleBook.load(shipped=config.shipped_rules, paths=config.rules)
    if rule_id not in book.ids():
        known = ", ".join(sorted(book.ids()))
        raise AlertRuleError(
            [RuleProblem(file="", rule=rule_id, key="", detail=f"no such rule (known: {known})")]
        )
    directory = _only(load_directory(config), device_id)
    engine = Engine(rules=book.only(rule_id), directory=directory, clock="wall")
    try:
        with psycopg.connect(settings.database_url, connect_timeout=10) as conn:
            rows = list(stored_rows(conn, device_id=device_id, start=start, end=end))
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"cannot read the history: {exc}") from exc
    info = directory.devices.get(device_id)
    cid = community or (info.community_id if info else rows[0].community_id if rows else "")
    rules = [r for r in book.for_community(cid) if r.id == rule_id]
    yield f"rule {rule_id}: " + (
        f"{rules[0].kind}: {describe(rules[0])}" if rules else "not enabled in this community"
    )
    window = f"from {_iso(_us(start))} to {_iso(_us(end))}"
    yield f"device {device_id}, community {cid or '?'}: {len(rows)} stored readings {window}"
    subjects = {device_id}
    if info is not None:
        subjects |= {s for s in (info.resident_id, info.gateway_id) if s}
    counts = {"fire": 0, "repeat": 0, "clear": 0, "note": 0}
    t = _us(start)
    step = TICK_S * 1_000_000
    for row in rows:
        ts = row.envelopes[0].readings[0].ts_us
        while t + step < ts:
            t += step
            yield from _lines(engine.tick(wall_us=t), subjects, counts)
        t = max(t, ts)
        yield from _lines(engine.step(row, wall_us=ts), subjects, counts)
    while t + step <= _us(end):
        t += step
        yield from _lines(engine.tick(wall_us=t), subjects, counts)
    yield f"fired {counts['fire']}, repeated {counts['repeat']}, cleared {counts['clear']}"


def _us(t: datetime) -> int:
    return round(t.astimezone(UTC).timestamp() * 1_000_000)


def _lines(actions: list[Action], subjects: set[str], counts: dict[str, int]) -> Iterator[str]:
    for a in actions:
        if a.subject not in subjects:
            continue
        counts[a.kind] += 1
        verb = {"fire": "FIRED", "repeat": "repeated", "clear": "cleared", "note": "noted"}[a.kind]
        at, since = _iso(max(a.at_us, a.started_us)), _iso(a.started_us)
        yield f"{at} {verb} {a.rule} {a.subject}: {a.title_en} (since {since})"
        for e in a.evidence:
            what = e.metric or e.event or e.note or ""
            value = (
                f" = {e.value:g}"
                if isinstance(e.value, float)
                else f" = {e.value}"
                if e.value is not None
                else ""
            )
            note = f" ({e.note})" if e.note and (e.metric or e.event) else ""
            yield f"    because {_iso(e.time_us)} {e.device_id or e.gateway_id or ''} {what}{value}{note}"
