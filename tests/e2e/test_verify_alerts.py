"""`linli sim verify --alerts` against a real database: incidents written by hand next to a small
ground truth, one kind of difference at a time, then the command's exit status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from psycopg.types.json import Jsonb

from cloud.store.migrate import migrate
from simulators.faults import FaultOptions
from simulators.truth import ConditionRecord, EndRecord, MessageRecord, RunRecord, TruthRecord
from simulators.verify_alerts import DETECTION, AlertsOptions, verify_alerts

pytestmark = pytest.mark.integration

T0 = datetime(2025, 6, 1, tzinfo=UTC)
SOS = "0x00158d0000000001"
SOS_PROFILE = "aqara/sos"  # not a shipped profile: the longest default interval is assumed
MANHOLE = "a84041000000000a"
LAMP = "861234567890123"
DOOR = "0x00158d0000000002"
RESIDENT = "c001-r0001"


@pytest.fixture
def migrated_url(database_url: str) -> str:
    """A fresh database with the cloud's schema, incidents included (as tests/cloud/conftest.py)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        migrate(conn)
    return database_url


def iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_truth(
    path: Path, conditions: Sequence[ConditionRecord], messages: Sequence[MessageRecord] = ()
) -> Path:
    records: list[TruthRecord] = [
        RunRecord(seed=1, start=iso(T0), devices=4, gateways=1, scenarios=[], faults=FaultOptions()),
        MessageRecord(
            seq=0,
            sent=iso(T0),
            device_id=SOS,
            gateway_id="c001-gw1",
            profile=SOS_PROFILE,
            topic="zigbee2mqtt/sos",
            ts=iso(T0),
            reading_id="r0",
            metrics={},
            events=(),
            malformed=False,
            duplicate=False,
            reordered=False,
            skew_s=0.0,
            conditions=(),
        ),
        *messages,
        *conditions,
        EndRecord(
            messages=1, conditions=len(conditions), sim_end=iso(T0 + timedelta(days=3)), interrupted=False
        ),
    ]
    encoder = msgspec.json.Encoder()
    path.write_bytes(b"".join(encoder.encode(r) + b"\n" for r in records))
    return path


def condition(cid: str, kind: str, at: datetime, **extra: Any) -> ConditionRecord:
    fields: dict[str, Any] = {"id": cid, "condition": kind, "at": iso(at), "source": "behaviour"}
    for key, value in extra.items():
        fields["from" if key == "from_" else key] = iso(value) if isinstance(value, datetime) else value
    return msgspec.convert(fields, ConditionRecord)


def insert(
    url: str,
    rule: str,
    subject: str,
    detected: datetime,
    *,
    kind: str = "device",
    closed: bool = False,
    occurrences: Sequence[tuple[str, datetime]] = (),
) -> int:
    """One incident row (and its occurrences) as the alert service writes it."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO incidents (rule, subject, subject_kind, severity, latched, community_id,"
            " device_id, resident_id, title_zh, title_en, detail_zh, detail_en, started_at, detected_at,"
            " closed_at, last_occurrence_at, evidence, feed_seq)"
            " VALUES (%s, %s, %s, 'major', false, 'c001', %s, %s, '标题', 'title', '详情', 'detail',"
            " %s, %s, %s, %s, %s, 1) RETURNING incident_id",
            (
                rule,
                subject,
                kind,
                subject if kind == "device" else None,
                subject if kind == "resident" else None,
                detected,
                detected,
                detected + timedelta(hours=1) if closed else None,
                detected,
                Jsonb([]),
            ),
        ).fetchone()
        assert row is not None
        incident_id = int(row[0])
        for seq, (what, at) in enumerate(occurrences, 1):
            conn.execute(
                "INSERT INTO incident_occurrences (incident_id, at, kind, feed_seq, evidence)"
                " VALUES (%s, %s, %s, %s, %s)",
                (incident_id, at, what, seq, Jsonb([])),
            )
    return incident_id


def run_cli(truth: Path, database_url: str | None, *extra: str) -> tuple[int, dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if k != "LINLI_CLOUD_DATABASE_URL"}
    database = ["--database", database_url] if database_url else []
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "device_profiles.console",
            "sim",
            "verify",
            "--alerts",
            "--truth",
            str(truth),
            *database,
            *extra,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=env,
    )
    return done.returncode, json.loads(done.stdout) if done.stdout else {"stderr": done.stderr}


def test_every_condition_type_maps_to_rules_or_is_informational() -> None:
    assert set(DETECTION) == {
        "sos_pressed",
        "resident_inactive",
        "manhole_open",
        "lamp_failure",
        "lamp_on_daytime",
        "device_silent",
        "battery_low",
        "gas_alarm",
        "water_alarm",
        "gateway_storm",
        "lamp_degrading",
        "battery_draining",
        "radio_fading",
    }
    for informational in ("gateway_storm", "lamp_degrading", "battery_draining", "radio_fading"):
        assert DETECTION[informational] is None, informational


def test_detected_with_delay_and_exit_0(migrated_url: str, tmp_path: Path) -> None:
    press = T0 + timedelta(minutes=30)
    gas_from, gas_to = T0 + timedelta(hours=2), T0 + timedelta(hours=3)
    truth = write_truth(
        tmp_path / "truth.jsonl",
        [
            condition(
                "c1",
                "sos_pressed",
                press,
                device_id=SOS,
                resident_id=RESIDENT,
                event="sos_pressed",
                cancelled_at=None,
            ),
            condition("c2", "gas_alarm", gas_from, device_id=MANHOLE, from_=gas_from, to=gas_to),
            condition(
                "c3",
                "gateway_storm",
                T0,
                gateway_id="c001-gw1",
                from_=T0,
                to=T0 + timedelta(minutes=30),
                factor=10.0,
                devices=4,
            ),
            condition(
                "c4",
                "resident_inactive",
                T0 + timedelta(hours=1),
                device_id=DOOR,
                resident_id=RESIDENT,
                from_=T0 + timedelta(hours=1),
                to=T0 + timedelta(hours=31),
                hours=30.0,
            ),
        ],
    )
    sos = insert(
        migrated_url,
        "sos_pressed",
        SOS,
        press + timedelta(seconds=2),
        occurrences=[("fired", press + timedelta(seconds=2))],
    )
    # Gas: two rules of the condition fire, each once: both backed, no duplicate.
    gas = insert(migrated_url, "gas_h2s_high", MANHOLE, gas_from + timedelta(minutes=5))
    insert(
        migrated_url,
        "gas_alarm",
        MANHOLE,
        gas_from + timedelta(minutes=1),
        occurrences=[
            ("fired", gas_from + timedelta(minutes=1)),
            ("repeated", gas_from + timedelta(minutes=31)),
            ("cleared", gas_to + timedelta(minutes=1)),
        ],
    )
    inactive = insert(migrated_url, "resident_inactive", RESIDENT, T0 + timedelta(hours=20), kind="resident")

    report = verify_alerts(truth=truth, database_url=migrated_url)
    assert report.match, report
    assert (report.conditions, report.detected, report.missed) == (3, 3, 0)
    assert (report.false_positives, report.duplicates, report.informational) == (0, 0, 1)
    assert (report.incidents, report.occurrences) == (4, 4)
    by_id = {r.id: r for r in report.results}
    assert (by_id["c1"].incident_id, by_id["c1"].rule, by_id["c1"].delay_s) == (sos, "sos_pressed", 2.0)
    assert (by_id["c2"].rule, by_id["c2"].delay_s) == ("gas_alarm", 60.0)
    assert gas != by_id["c2"].incident_id
    assert (by_id["c4"].incident_id, by_id["c4"].delay_s) == (inactive, 19 * 3600.0)
    assert report.delays["sos_pressed"].max_s == 2.0

    code, printed = run_cli(truth, migrated_url)
    assert code == 0, printed
    assert printed["match"] is True
    assert printed["detected"] == 3


def test_missed_false_positive_out_of_window_duplicate_and_exit_1(migrated_url: str, tmp_path: Path) -> None:
    lift_from, lift_to = T0 + timedelta(hours=18), T0 + timedelta(hours=20)
    gas_from, gas_to = T0 + timedelta(hours=2), T0 + timedelta(hours=3)
    truth = write_truth(
        tmp_path / "truth.jsonl",
        [
            condition(
                "c1", "manhole_open", lift_from, device_id=MANHOLE, from_=lift_from, to=lift_to, tilt_deg=45.0
            ),
            condition("c2", "gas_alarm", gas_from, device_id=MANHOLE, from_=gas_from, to=gas_to),
            condition(
                "c3",
                "lamp_on_daytime",
                T0 + timedelta(hours=4),
                device_id=LAMP,
                from_=T0 + timedelta(hours=4),
                to=T0 + timedelta(hours=7),
            ),
        ],
    )
    # c1 missed: nothing for the cover. A lamp failure nobody injected: a false positive.
    stray = insert(migrated_url, "lamp_failure", LAMP, T0 + timedelta(hours=5))
    # c2 detected twice by the same rule (the first incident closed, a second opened): a duplicate.
    first = insert(migrated_url, "gas_ch4_high", MANHOLE, gas_from + timedelta(minutes=2), closed=True)
    second = insert(migrated_url, "gas_ch4_high", MANHOLE, gas_from + timedelta(minutes=40))
    # c3 detected a day late: out of the window, so missed and a false positive.
    late = insert(migrated_url, "lamp_on_daytime", LAMP, T0 + timedelta(hours=31))

    report = verify_alerts(truth=truth, database_url=migrated_url)
    assert not report.match
    assert (report.conditions, report.detected, report.missed) == (3, 1, 2)
    assert (report.false_positives, report.out_of_window, report.duplicates) == (2, 1, 1)
    missed = {r.id for r in report.results if not r.detected}
    assert missed == {"c1", "c3"}
    assert any(str(stray) in e for e in report.examples["false_positives"])
    assert any(str(late) in e and "c3" in e for e in report.examples["out_of_window"])
    duplicate = f"c2 gas_alarm {MANHOLE}: gas_ch4_high incidents {[first, second]}"
    assert report.examples["duplicates"] == [duplicate]
    assert len(report.examples["missed"]) == 2

    code, printed = run_cli(truth, migrated_url)
    assert code == 1
    assert (printed["missed"], printed["false_positives"], printed["duplicates"]) == (2, 2, 1)


def test_a_latched_incident_detects_a_second_press_by_its_repeat(migrated_url: str, tmp_path: Path) -> None:
    one, two = T0 + timedelta(hours=1), T0 + timedelta(hours=5)
    press = {"device_id": SOS, "resident_id": RESIDENT, "event": "sos_pressed", "cancelled_at": None}
    truth = write_truth(
        tmp_path / "truth.jsonl",
        [condition("c1", "sos_pressed", one, **press), condition("c2", "sos_pressed", two, **press)],
    )
    incident = insert(migrated_url, "sos_pressed", SOS, one, occurrences=[("fired", one), ("repeated", two)])
    report = verify_alerts(truth=truth, database_url=migrated_url)
    assert report.match, report
    assert [(r.id, r.incident_id, r.delay_s) for r in report.results] == [
        ("c1", incident, 0.0),
        ("c2", incident, 0.0),
    ]


def test_a_silence_shorter_than_the_absence_rule_is_undetectable(migrated_url: str, tmp_path: Path) -> None:
    start = T0 + timedelta(hours=1)
    truth = write_truth(
        tmp_path / "truth.jsonl",
        [
            # 2 h of silence: under 3 report intervals of any shipped device type but streetlights.
            condition(
                "c1", "device_silent", start, device_id=SOS, from_=start, to=start + timedelta(hours=2)
            ),
            # Silent for good: detected once the rule's intervals have passed.
            condition("c2", "device_silent", start, device_id=MANHOLE, from_=start, to=None),
        ],
    )
    insert(migrated_url, "device_silent", MANHOLE, start + timedelta(hours=1, minutes=30))
    report = verify_alerts(truth=truth, database_url=migrated_url)
    assert report.match, report
    assert (report.conditions, report.detected, report.undetectable) == (1, 1, 1)
    # With a rule that fires after half an interval, the short silence is expected, and missed.
    report = verify_alerts(
        truth=truth, database_url=migrated_url, options=AlertsOptions(absence_intervals=0.1)
    )
    assert (report.conditions, report.missed, report.undetectable) == (2, 1, 0)


def _carrier(seq: int, at: datetime, cid: str, *, malformed: bool) -> MessageRecord:
    return MessageRecord(
        seq=seq,
        sent=iso(at),
        device_id=SOS,
        gateway_id="c001-gw1",
        profile=SOS_PROFILE,
        topic="zigbee2mqtt/sos",
        ts=iso(at),
        reading_id=f"r{seq}",
        metrics={"battery_pct": 14.0},
        events=(),
        malformed=malformed,
        duplicate=False,
        reordered=False,
        skew_s=0.0,
        conditions=(cid,),
    )


def test_a_condition_carried_only_by_malformed_messages_is_undetectable(
    migrated_url: str, tmp_path: Path
) -> None:
    damaged, intact = T0 + timedelta(hours=3), T0 + timedelta(hours=4)
    truth = write_truth(
        tmp_path / "truth.jsonl",
        [
            condition("c1", "battery_low", damaged, device_id=SOS, battery_pct=14),
            condition("c2", "battery_low", intact, device_id=SOS, battery_pct=14),
        ],
        [_carrier(1, damaged, "c1", malformed=True), _carrier(2, intact, "c2", malformed=False)],
    )
    report = verify_alerts(truth=truth, database_url=migrated_url)
    assert (report.conditions, report.missed, report.undetectable) == (1, 1, 1)
    assert report.examples["missed"] == ["c2 battery_low 0x00158d0000000001 at " + iso(intact)]


def test_extra_late_counts_a_delayed_detection_as_detected(migrated_url: str, tmp_path: Path) -> None:
    at = T0 + timedelta(hours=3)
    truth = write_truth(
        tmp_path / "truth.jsonl", [condition("c1", "battery_low", at, device_id=SOS, battery_pct=14)]
    )
    insert(migrated_url, "battery_low", SOS, at + timedelta(hours=2))
    late = verify_alerts(truth=truth, database_url=migrated_url)
    assert (late.missed, late.out_of_window) == (1, 1)
    code, report = run_cli(truth, migrated_url, "--extra-late", str(3 * 3600))
    assert (code, report["detected"], report["missed"], report["false_positives"]) == (0, 1, 0, 0)
    assert report["results"][0]["delay_s"] == 2 * 3600


def test_an_empty_incidents_table_misses_everything(migrated_url: str, tmp_path: Path) -> None:
    at = T0 + timedelta(hours=3)
    truth = write_truth(
        tmp_path / "truth.jsonl", [condition("c1", "battery_low", at, device_id=SOS, battery_pct=14)]
    )
    report = verify_alerts(truth=truth, database_url=migrated_url)
    assert (report.match, report.conditions, report.missed, report.incidents) == (False, 1, 1, 0)


def test_unreadable_inputs_exit_2(migrated_url: str, database_url: str, tmp_path: Path) -> None:
    truth = write_truth(tmp_path / "truth.jsonl", [])
    assert run_cli(tmp_path / "absent.jsonl", migrated_url)[0] == 2
    assert run_cli(truth, None)[0] == 2
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text(
        '{"kind":"condition","id":"c1","condition":"alien_landing","at":"2025-06-01T00:00:00.000Z",'
        '"source":"behaviour"}\n'
    )
    code, printed = run_cli(unknown, migrated_url)
    assert code == 2
    assert "alien_landing" in printed["stderr"]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TABLE incident_occurrences, incidents CASCADE")
    code, printed = run_cli(truth, database_url)
    assert code == 2
    assert "incidents" in printed["stderr"]
