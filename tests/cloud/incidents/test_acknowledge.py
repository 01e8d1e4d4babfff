"""Closing the SOS loop to the resident: accepting an SOS queues ``acknowledge`` to the button in the
same transaction, where its model can carry it, and the incident's audit trail says so."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from cloud.incidents import transitions as tr
from cloud.incidents.record import Context
from tests.cloud.incidents.conftest import fire

pytestmark = [pytest.mark.integration]


@pytest.fixture
def conn(migrated_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(migrated_url, autocommit=True) as c:
        yield c


def accept_detail(conn: psycopg.Connection[Any], incident_id: int) -> Any:
    row = conn.execute(
        "SELECT detail FROM incident_audit WHERE incident_id = %s AND action = 'accept'", (incident_id,)
    ).fetchone()
    assert row is not None
    return row[0]


def button(
    conn: psycopg.Connection[Any], device_id: str, profile: str, device_type: str = "sos_button"
) -> None:
    conn.execute(
        "INSERT INTO devices (device_id, device_type, profile, community_id, gateway_id)"
        " VALUES (%s, %s, %s, 'c01', 'gw1')",
        (device_id, device_type, profile),
    )


def test_accepting_an_sos_queues_acknowledge_to_a_button_that_can_show_it(
    migrated_url: str, conn: psycopg.Connection[Any], ctx: Context
) -> None:
    button(conn, "a84041000181c0de", "generic_lorawan/sos_button")
    iid = fire(migrated_url, subject="a84041000181c0de")
    tr.accept(conn, iid, actor="w-zhang", ctx=ctx)
    command = accept_detail(conn, iid)["command"]
    assert (command["name"], command["state"]) == ("acknowledge", "queued")
    row = conn.execute(
        "SELECT device_id, name, state, requested_by, gateway_id FROM commands WHERE command_id = %s",
        (command["command_id"],),
    ).fetchone()
    assert row == ("a84041000181c0de", "acknowledge", "queued", "w-zhang", "gw1")
    audit = conn.execute(
        "SELECT actor, state FROM command_audit WHERE command_id = %s", (command["command_id"],)
    )
    assert audit.fetchall() == [("w-zhang", "queued")]


def test_a_button_that_cannot_show_it_is_said_so_and_nothing_is_queued(
    migrated_url: str, conn: psycopg.Connection[Any], ctx: Context
) -> None:
    button(conn, "sos_3_2_401", "tuya/ts0215a_sos")
    iid = fire(migrated_url, subject="sos_3_2_401")
    tr.accept(conn, iid, actor="w-zhang", ctx=ctx)
    command = accept_detail(conn, iid)["command"]
    assert (command["name"], command["state"]) == ("acknowledge", "not_sent")
    assert "tuya/ts0215a_sos (Tuya TS0215A_sos) cannot carry acknowledge" in command["reason"]
    assert conn.execute("SELECT count(*) FROM commands").fetchone() == (0,)


def test_an_incident_of_another_device_sends_nothing(
    migrated_url: str, conn: psycopg.Connection[Any], ctx: Context
) -> None:
    button(conn, "door-1", "aqara/mccgq11lm", device_type="door_contact")
    iid = fire(migrated_url, rule="door_left_open", subject="door-1", severity="major", latched=False)
    tr.accept(conn, iid, actor="w-zhang", ctx=ctx)
    assert "command" not in accept_detail(conn, iid)
    assert conn.execute("SELECT count(*) FROM commands").fetchone() == (0,)
