"""`linli sim verify` against a real database: an exact match, then each kind of difference."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from cloud.store.migrate import migrate
from simulators.truth import read_truth
from simulators.verify import verify

pytestmark = pytest.mark.integration

#: Dialects without a device time: the edge stamps the gateway's receive time.
NO_DEVICE_TIME = ("aqara/", "tuya/")


@pytest.fixture(scope="module")
def truth_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("verify")
    truth = folder / "truth.jsonl"
    done = subprocess.run(
        [
            sys.executable, "-m", "device_profiles.console", "sim", "--devices", "40", "--seed", "5",
            "--start", "2025-06-01T00:00:00Z", "--count", "600", "--malformed", "0.05",
            "--duplicate", "0.05", "--reordered", "0.05", "--scenario", "sos-press",
            "--output", str(folder / "messages.jsonl"), "--truth", str(truth), "--quiet",
        ],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return truth


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def store_as_pipeline(database_url: str, truth: Path, *, quarantined_extra: int = 0) -> dict[str, Any]:
    """Write what a correct pipeline stores for `truth`, by hand, into a migrated database."""
    records = read_truth(truth)
    seen: set[str] = set()
    rows: list[tuple[datetime, str, str, float]] = []
    events: list[tuple[datetime, str, str, Jsonb]] = []
    malformed: dict[str, int] = {}
    receive = datetime(2026, 1, 1, tzinfo=UTC)
    for rec in records:
        if rec["kind"] != "message":
            continue
        if rec["malformed"]:
            malformed[rec["gateway_id"]] = malformed.get(rec["gateway_id"], 0) + 1
            continue
        if rec["reading_id"] in seen:
            continue
        seen.add(rec["reading_id"])
        receive += timedelta(milliseconds=3)
        ts = receive if rec["profile"].startswith(NO_DEVICE_TIME) else _parse(rec["ts"])
        rows += [(ts, rec["device_id"], m, v) for m, v in rec["metrics"].items()]
        attrs = Jsonb({"reading_id": rec["reading_id"], "gateway_id": rec["gateway_id"]})
        events += [(ts, rec["device_id"], e, attrs) for e in rec["events"]]
        if rec["device_id"].startswith("0x") and rec["metrics"].get("contact_open") == 1:
            events.append((ts, rec["device_id"], "door_opened", attrs))  # derived by the edge
    with psycopg.connect(database_url, autocommit=True) as conn:
        migrate(conn)
        with conn.cursor() as cur:
            with cur.copy("COPY readings (time, device_id, metric, value) FROM STDIN") as cp:
                for row in rows:
                    cp.write_row(row)
            with cur.copy("COPY events (time, device_id, event, attributes) FROM STDIN") as cp:
                for ev in events:
                    cp.write_row(ev)
            gateways = {r["gateway_id"] for r in records if r["kind"] == "message"}
            for g in gateways:
                count = malformed.get(g, 0) + quarantined_extra
                status = {"state": "offline", "counters": {"quarantined": count}}
                cur.execute(
                    "INSERT INTO gateways (gateway_id, community_id, state, status, status_at)"
                    " VALUES (%s, 'c001', 'offline', %s, now())",
                    (g, Jsonb(status)),
                )
    return {"rows": len(rows), "events": len(events), "malformed": sum(malformed.values())}


def _run_cli(truth: Path, database_url: str, *, from_env: bool = False) -> tuple[int, dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if k != "LINLI_CLOUD_DATABASE_URL"}
    database = ["--database", database_url]
    if from_env:  # the URL (and any password in it) out of the process list
        env["LINLI_CLOUD_DATABASE_URL"], database = database_url, []
    done = subprocess.run(
        [sys.executable, "-m", "device_profiles.console", "sim", "verify", "--truth", str(truth), *database],
        capture_output=True, text=True, check=False, timeout=60, env=env,
    )  # fmt: skip
    return done.returncode, json.loads(done.stdout) if done.stdout else {"stderr": done.stderr}


@pytest.mark.parametrize("from_env", [False, True], ids=["option", "environment"])
def test_exact_match(truth_file: Path, database_url: str, from_env: bool) -> None:
    stored = store_as_pipeline(database_url, truth_file, quarantined_extra=2)
    code, report = _run_cli(truth_file, database_url, from_env=from_env)
    assert code == 0, json.dumps(report)[:3000]
    assert report["match"] is True
    assert report["expected_rows"] == report["stored_rows"] == report["matched_rows"] == stored["rows"]
    assert report["malformed"] == report["expected_quarantined"] == stored["malformed"] > 0
    assert report["quarantined"] == stored["malformed"] + 2  # redelivered malformed input: allowed
    assert report["duplicates_sent"] > 0
    assert report["time_rewritten"] > 0  # the Zigbee readings matched by value, not time
    assert report["derived_events"] > 0
    assert report["missing"] == report["wrong_values"] == report["duplicated_rows"] == 0
    assert report["stored"] == report["expected"]


def _mutate(database_url: str, statement: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert conn.execute(statement).rowcount >= 1


# Hypertable chunks each have their own ctids: a row is picked by its key columns instead.
FIRST_TIMED = (
    "(time, device_id, metric) IN (SELECT time, device_id, metric FROM readings"
    " WHERE device_id NOT LIKE '0x%' AND time < '2026-01-01' ORDER BY time, device_id, metric LIMIT 1)"
)
FIRST_ZIGBEE = (
    "(time, device_id, metric) IN (SELECT time, device_id, metric FROM readings"
    " WHERE device_id LIKE '0x%' ORDER BY time, device_id, metric LIMIT 1)"
)
MUTATIONS = {
    "delete a row": ("DELETE FROM readings WHERE " + FIRST_TIMED, "missing_rows", 1),  # noqa: S608
    "change a value": ("UPDATE readings SET value = value + 0.5 WHERE " + FIRST_TIMED, "wrong_values", 1),  # noqa: S608
    "store a row twice": (
        "INSERT INTO readings SELECT * FROM readings WHERE " + FIRST_TIMED,  # noqa: S608
        "duplicated_rows",
        1,
    ),
    "a row of another device": (
        "INSERT INTO readings VALUES (now(), 'not-in-the-truth', 'battery_pct', 50)",
        "unexpected_rows",
        1,
    ),
    "lose part of a reading without device time": (
        "DELETE FROM readings WHERE " + FIRST_ZIGBEE,  # noqa: S608
        "missing",
        1,
    ),
    "store a reading without device time twice": (
        "INSERT INTO readings SELECT time + interval '1 s', device_id, metric, value FROM readings"
        " WHERE (time, device_id) IN (SELECT time, device_id FROM readings WHERE device_id LIKE '0x%'"
        " ORDER BY time LIMIT 1)",
        "duplicated_rows",
        None,
    ),
    "lose an event": (
        "DELETE FROM events WHERE (time, device_id, event) IN"
        " (SELECT time, device_id, event FROM events WHERE event LIKE 'sos%' LIMIT 1)",
        "missing_events",
        1,
    ),
    "a dead letter": (
        "INSERT INTO dead_letters (received_at, topic, payload, reason)"
        " VALUES (now(), 'linli/v1/c/g/up', '\\x00', 'malformed envelope')",
        "dead_letters",
        1,
    ),
    "quarantine not counted": (
        "UPDATE gateways SET status = jsonb_set(status, '{counters,quarantined}', '0')",
        "quarantined",
        0,
    ),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_each_difference_is_reported(truth_file: Path, database_url: str, mutation: str) -> None:
    statement, figure, value = MUTATIONS[mutation]
    store_as_pipeline(database_url, truth_file)
    assert verify(truth=truth_file, database_url=database_url).match
    _mutate(database_url, statement)
    code, report = _run_cli(truth_file, database_url)
    assert code == 1, report
    assert report["match"] is False
    if value is None:
        assert report[figure] > 0
    else:
        assert report[figure] == value


def test_bad_inputs_exit_2(tmp_path: Path, truth_file: Path, database_url: str) -> None:
    header = truth_file.read_text().splitlines()[0]
    empty = tmp_path / "empty.jsonl"
    empty.write_text(header + "\n")
    code, report = _run_cli(empty, database_url)
    assert code == 2
    assert "no message records" in report["stderr"]
    broken = tmp_path / "broken.jsonl"
    broken.write_text(header + '\n{"kind": "message", "seq": 0}\n')
    code, report = _run_cli(broken, database_url)
    assert code == 2
    assert f"{broken}: line 2: not a ground-truth record" in report["stderr"]
    assert _run_cli(tmp_path / "absent.jsonl", database_url)[0] == 2
    assert _run_cli(truth_file, "postgresql://nobody@127.0.0.1:1/none")[0] == 2


def test_a_truth_of_one_gateway_is_compared_with_that_gateways_rows(
    truth_file: Path, database_url: str
) -> None:
    """Two simulators, one per gateway, each with its own truth: each verifies against its own
    gateway's rows (the default for a truth that names one gateway); ``--scope all`` still counts
    the other's rows as unexpected."""
    store_as_pipeline(database_url, truth_file)
    records = read_truth(truth_file)
    mine = {r["device_id"]: r["gateway_id"] for r in records if r["kind"] == "message"}
    assert len(set(mine.values())) == 1
    at = datetime(2025, 6, 1, tzinfo=UTC)
    with psycopg.connect(database_url, autocommit=True) as conn:
        for device_id, gateway_id in mine.items():  # the registry, as the ingest writes it
            conn.execute(
                "INSERT INTO devices (device_id, device_type, profile, community_id, gateway_id)"
                " VALUES (%s, 'door_contact', 'p', 'c001', %s) ON CONFLICT DO NOTHING",
                (device_id, gateway_id),
            )
        conn.execute(
            "INSERT INTO devices (device_id, device_type, profile, community_id, gateway_id)"
            " VALUES ('other-door', 'door_contact', 'p', 'c001', 'gw-other')"
        )
        conn.execute(
            "INSERT INTO readings (time, device_id, metric, value)"
            " VALUES (%s, 'other-door', 'contact_open', 1)",
            (at,),
        )
        conn.execute(
            "INSERT INTO events (time, device_id, event, attributes) VALUES (%s, 'other-door', 'door_opened',"
            ' \'{"reading_id": "elsewhere"}\')',
            (at,),
        )
        conn.execute(
            "INSERT INTO dead_letters (received_at, topic, payload, reason)"
            " VALUES (now(), 'linli/v1/c001/gw-other/up', 'x', 'not an envelope')"
        )
        conn.execute(
            "INSERT INTO gateways (gateway_id, community_id, state, status, status_at)"
            " VALUES ('gw-other', 'c001', 'online', '{}', now())"
        )
    scoped = verify(truth=truth_file, database_url=database_url)
    assert scoped.match, scoped
    assert scoped.scope == "gateways"
    everything = verify(truth=truth_file, database_url=database_url, scope="all")
    assert not everything.match
    assert everything.scope == "all"
    assert everything.unexpected_rows == 1
    assert everything.dead_letters == 1
    done = subprocess.run(
        [sys.executable, "-m", "device_profiles.console", "sim", "verify", "--truth", str(truth_file),
         "--database", database_url, "--scope", "all"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert json.loads(done.stdout)["scope"] == "all"
