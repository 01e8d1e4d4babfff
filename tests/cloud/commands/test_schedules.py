"""Streetlight schedules: dusk and dawn with offsets at the community's lamps, dim windows, holidays,
and the commands of the current transition, queued once however often the schedule is asked."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest

from cloud.commands.schedules import (
    Plan,
    ScheduleError,
    Schedules,
    current,
    due_commands,
    load_schedules,
    night,
)
from cloud.commands.service import CommandService
from cloud.config import CommandsConfig, MqttConfig
from device_profiles.config_sources import HttpConfig
from device_profiles.solar import dawn_dusk

SHANGHAI = ZoneInfo("Asia/Shanghai")
LAT, LON = 31.2304, 121.4737
DAY = date(2026, 12, 4)

SCHEDULES = """
version: 1
timezone: Asia/Shanghai
communities:
  "*":
    on: {at: dusk, offset_min: -10}
    off: {at: dawn, offset_min: 10}
    dim:
      - {from: "23:00", to: "05:00", level_pct: 50}
    holidays:
      - {date: 2026-12-31, dim: [], off: {at: "07:30"}}
  c02:
    on: {at: "18:30"}
    off: {at: "06:00"}
"""


@pytest.fixture
def schedules(tmp_path: Path) -> Schedules:
    path = tmp_path / "schedules.yaml"
    path.write_text(SCHEDULES)
    return load_schedules(path)


def test_a_night_follows_dusk_and_dawn_with_offsets_and_dims_late(schedules: Schedules) -> None:
    plan = schedules.plan("c01")
    assert plan is not None
    got = night(plan, DAY, lat=LAT, lon=LON, tz=SHANGHAI)
    noon_ms = int(datetime(2026, 12, 4, 4, tzinfo=UTC).timestamp() * 1000) // 86_400_000 * 86_400_000
    _, dusk_ms = dawn_dusk(LAT, LON, noon_ms)
    dawn_ms, _ = dawn_dusk(LAT, LON, noon_ms + 86_400_000)
    dusk = datetime.fromtimestamp(dusk_ms / 1000, SHANGHAI)
    dawn = datetime.fromtimestamp(dawn_ms / 1000, SHANGHAI)
    assert (16, 45) <= (dusk.hour, dusk.minute) <= (17, 15)  # early December in Shanghai
    assert dawn.date() == date(2026, 12, 5)
    assert [(t.at, t.on, t.level_pct) for t in got] == [
        (dusk - timedelta(minutes=10), True, 100),
        (datetime(2026, 12, 4, 23, tzinfo=SHANGHAI), True, 50),
        (datetime(2026, 12, 5, 5, tzinfo=SHANGHAI), True, 100),
        (dawn + timedelta(minutes=10), False, 0),
    ]
    eve = night(plan, date(2026, 12, 31), lat=LAT, lon=LON, tz=SHANGHAI)
    assert [(t.on, t.level_pct) for t in eve] == [(True, 100), (False, 0)]  # a holiday: no dimming
    assert eve[-1].at == datetime(2027, 1, 1, 7, 30, tzinfo=SHANGHAI)
    fixed = schedules.plan("c02")
    assert fixed is not None
    assert [t.at.strftime("%d %H:%M") for t in night(fixed, DAY, lat=LAT, lon=LON, tz=SHANGHAI)] == [
        "04 18:30",
        "05 06:00",
    ]


def test_the_current_transition_and_its_commands_with_stable_ids(schedules: Schedules) -> None:
    plan = schedules.plan("c01")
    assert plan is not None
    late = datetime(2026, 12, 5, 1, 0, tzinfo=SHANGHAI)
    found = current(plan, late, lat=LAT, lon=LON, tz=SHANGHAI)
    assert found is not None
    transition, until = found
    assert (transition.at.hour, transition.on, transition.level_pct) == (23, True, 50)
    assert until == datetime(2026, 12, 5, 5, tzinfo=SHANGHAI)
    lamps = [("lamp1", LAT, LON), ("lamp2", LAT + 0.001, LON)]
    due = due_commands(schedules, "c01", lamps, late)
    assert [(d.device_id, d.name, d.params, d.ttl_s) for d in due] == [
        ("lamp1", "switch", {"on": True}, 4 * 3600),
        ("lamp1", "dim", {"level_pct": 50}, 4 * 3600),
        ("lamp2", "switch", {"on": True}, 4 * 3600),
        ("lamp2", "dim", {"level_pct": 50}, 4 * 3600),
    ]
    again = due_commands(schedules, "c01", lamps, late + timedelta(minutes=30))
    assert [d.command_id for d in again] == [d.command_id for d in due]  # the same transition
    noon = due_commands(schedules, "c01", lamps, datetime(2026, 12, 5, 12, tzinfo=SHANGHAI))
    assert [(d.name, d.params) for d in noon] == [("switch", {"on": False})] * 2
    assert due_commands(schedules, "c01", [("lamp9", None, None)], late) == []  # nowhere: no sun
    assert due_commands(Schedules(), "c01", lamps, late) == []  # no plan for the community


def test_a_bad_schedules_file_names_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "version: 1\ntimezone: Mars/Olympus\ncommunities:\n  c1:\n    on: {at: noonish}\n"
        "    dim: [{from: '25:00', to: '05:00', level_pct: 140}]\n"
    )
    with pytest.raises(ScheduleError) as err:
        load_schedules(path)
    text = str(err.value)
    for piece in ("timezone", "Mars/Olympus", "communities.c1.on.at", "noonish", "dim.0.from", "level_pct"):
        assert piece in text
    assert Plan().on.at == "dusk"


def load_schedules_text(tmp_path: Path, plan: str) -> Schedules:
    """A schedules file whose community c1 has `plan` (YAML lines indented for it)."""
    path = tmp_path / "schedules.yaml"
    path.write_text(f"version: 1\ncommunities:\n  c1:\n    {plan}\n", encoding="utf-8")
    return load_schedules(path)


@pytest.mark.parametrize(
    ("plan", "fragment"),
    [
        ("on: {at: '11:30'}\n    off: {at: '05:00'}", "off at 05:00 does not come after on at 11:30"),
        ("on: {at: '19:00'}\n    off: {at: '18:00'}", "off at 18:00 does not come after on at 19:00"),
        ("on: {at: dawn}", "on at dawn would light the lamps in the morning"),
        ("off: {at: dusk}", "off at dusk would leave them dark all night"),
        ("dim: [{from: '05:00', to: '23:00', level_pct: 50}]", "from 05:00 to 23:00 ends before it starts"),
        (
            "holidays: [{date: 2027-02-05, off: {at: '17:00'}}]\n    on: {at: '18:00'}",
            "holiday 2027-02-05: off at 17:00 does not come after on at 18:00",
        ),
    ],
)
def test_a_night_that_could_never_happen_is_refused(tmp_path: Path, plan: str, fragment: str) -> None:
    """Such a plan would give no transitions: the lamps would silently never switch."""
    with pytest.raises(ScheduleError) as err:
        load_schedules_text(tmp_path, plan)
    assert fragment in str(err.value)
    assert "communities.c1: " in str(err.value)
    assert "Value error" not in str(err.value)


def test_nights_across_midnight_and_late_evenings_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "schedules.yaml"
    path.write_text(
        "version: 1\ncommunities:\n  c1:\n    on: {at: '18:30'}\n    off: {at: '23:45'}\n"
        "    dim: [{from: '22:00', to: '23:30', level_pct: 40}]\n"
        "  c2:\n    off: {at: '05:30', offset_min: -20}\n"
        "    dim: [{from: '23:00', to: '05:00', level_pct: 50}]\n",
        encoding="utf-8",
    )
    schedules = load_schedules(path)
    tz = ZoneInfo("Asia/Shanghai")
    c1 = night(schedules.communities["c1"], date(2027, 1, 10), lat=LAT, lon=LON, tz=tz)
    c2 = schedules.communities["c2"]
    assert (c2.on.at, c2.off.at, c2.off.offset_min) == ("dusk", "05:30", -20)
    assert load_schedules_text(tmp_path, "off: {offset_min: 10}").communities["c1"].off.at == "dawn"
    assert [(t.at.strftime("%H:%M"), t.on, t.level_pct) for t in c1] == [
        ("18:30", True, 100),
        ("22:00", True, 40),
        ("23:30", True, 100),
        ("23:45", False, 0),
    ]


@pytest.fixture
def conn(migrated_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(migrated_url, autocommit=True) as c:
        for i in range(3):
            c.execute(
                "INSERT INTO devices (device_id, device_type, profile, community_id, gateway_id, lat, lon)"
                " VALUES (%s, 'streetlight', 'generic_nbiot/streetlight', 'c01', 'gw1', %s, %s)",
                (f"86123456789012{i}", LAT, LON),
            )
        yield c


@pytest.mark.integration
def test_the_service_queues_a_transition_once(
    tmp_path: Path, migrated_url: str, conn: psycopg.Connection[Any]
) -> None:
    path = tmp_path / "schedules.yaml"
    path.write_text(SCHEDULES)
    now = [datetime(2026, 12, 4, 23, 0, 30, tzinfo=SHANGHAI).timestamp()]
    service = CommandService(
        database_url=migrated_url,
        mqtt=MqttConfig(),
        config=CommandsConfig(schedules=path, http=HttpConfig(address="")),
        clock=lambda: now[0],
    )
    assert service.schedule_round(conn) == 6
    assert service.schedule_round(conn) == 0
    rows = conn.execute(
        "SELECT device_id, name, params, requested_by, state, expires_at FROM commands ORDER BY seq"
    ).fetchall()
    assert [(r[1], r[2], r[3], r[4]) for r in rows[:2]] == [
        ("switch", {"on": True}, "schedule", "queued"),
        ("dim", {"level_pct": 50}, "schedule", "queued"),
    ]
    assert rows[0][5] == datetime(2026, 12, 5, 5, tzinfo=SHANGHAI)  # lives until the next transition
    now[0] += 7 * 3600  # 06:00: the current transition is 05:00 (full brightness again)
    assert service.schedule_round(conn) == 6


@pytest.mark.integration
def test_many_commands_are_queued_at_once_with_their_audit_entries_and_refusals(
    migrated_url: str, conn: psycopg.Connection[Any]
) -> None:
    """`outbox.request_many`, the schedule's way in: the checks of `request`, a row and an audit
    entry per command, the refused ones named and not written, nothing queued twice, the sender woken."""
    import uuid

    from cloud.commands import outbox
    from device_profiles import ProfileSet

    conn.execute(
        "INSERT INTO devices (device_id, device_type, profile, community_id, gateway_id)"
        " VALUES ('door-1', 'door_contact', 'generic_lorawan/door_contact', 'c01', 'gw1')"
    )
    lamps = [f"86123456789012{i}" for i in range(3)]
    wanted = [
        *(outbox.Wanted(uuid.uuid4(), lamp, "dim", {"level_pct": 30}, 600) for lamp in lamps),
        outbox.Wanted(uuid.uuid4(), "door-1", "dim", {"level_pct": 30}, 600),  # a door cannot dim
        outbox.Wanted(uuid.uuid4(), "nobody", "dim", {"level_pct": 30}, 600),
    ]
    profiles = ProfileSet.shipped().profiles
    now = datetime(2026, 12, 4, 23, tzinfo=UTC)
    with psycopg.connect(migrated_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {outbox.CHANNEL}")
        with conn.transaction():
            queued, refused = outbox.request_many(conn, wanted, actor="schedule", profiles=profiles, now=now)
        woken = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert queued == 3
    assert set(refused) == {"door-1", "nobody"}
    assert "dim" in refused["door-1"]
    assert refused["nobody"] == "no such device"
    assert woken == ["gw1"]
    rows = conn.execute(
        "SELECT c.device_id, c.params, c.state, a.actor, a.state, a.detail FROM commands c"
        " JOIN command_audit a USING (command_id) ORDER BY c.device_id"
    ).fetchall()
    assert rows == [
        (lamp, {"level_pct": 30}, "queued", "schedule", "queued", "dim level_pct=30") for lamp in lamps
    ]
    with conn.transaction():
        again, _ = outbox.request_many(conn, wanted, actor="schedule", profiles=profiles, now=now)
    assert again == 0
    assert conn.execute("SELECT count(*) FROM command_audit").fetchone() == (3,)
