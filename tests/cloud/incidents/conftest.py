"""Incidents as the alert service writes them, and a people file for a small community."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from cloud.alerts import ledger
from cloud.alerts.feed import Partition
from cloud.alerts.model import Action, Evidence
from cloud.incidents.people import People
from cloud.incidents.record import Context

T0 = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
_SEQ = itertools.count(1)

PEOPLE: dict[str, Any] = {
    "version": 1,
    "defaults": {"deadline_s": {"critical": 120, "major": 600}, "auto_close_quiet_s": 600},
    "staff": [
        {
            "id": "w-zhang",
            "name": "张伟",
            "roles": ["grid_worker"],
            "communities": ["c01"],
            "mobile": "13800000001",
        },
        {
            "id": "w-zhao",
            "name": "赵敏",
            "roles": ["grid_worker"],
            "communities": ["c01"],
            "mobile": "13800000004",
        },
        {
            "id": "k-li",
            "name": "李强",
            "roles": ["committee"],
            "communities": ["c01"],
            "mobile": "13800000002",
        },
        {"id": "s-wang", "name": "王芳", "roles": ["street"], "communities": ["*"], "mobile": "13800000003"},
        {
            "id": "q-sun",
            "name": "孙洁",
            "roles": ["district"],
            "communities": ["*"],
            "email": "sun@example.org",
        },
        {
            "id": "d-chen",
            "name": "陈医生",
            "roles": ["doctor"],
            "communities": ["c01"],
            "channel": "doctor-mail",
            "email": "chen@example.org",
        },
        {"id": "w-other", "name": "外人", "roles": ["grid_worker"], "communities": ["c02"]},
    ],
    "communities": {
        "c01": {
            "name": "阳光小区",
            "ladder": [
                {"name": "网格员", "staff": ["w-zhang"], "channels": ["grid"]},
                {"name": "居委会", "staff": ["k-li"], "channels": ["committee"]},
                {"name": "街道办", "staff": ["s-wang"], "channels": ["street"]},
                {"name": "区", "staff": ["q-sun"], "channels": ["district"]},
            ],
            "doctors": ["d-chen"],
        }
    },
    "contacts": {
        "c01-r0007": [
            {"name": "李娜", "relation": "family", "mobile": "13900000009", "channel": "family-sms"}
        ]
    },
}


@pytest.fixture
def ctx() -> Context:
    return Context(people=People.model_validate(PEOPLE), console_url="http://console.test")


def fire(
    url: str,
    *,
    rule: str = "sos_pressed",
    subject: str = "sos-1",
    severity: str = "critical",
    latched: bool = True,
    community_id: str = "c01",
    resident_id: str | None = "c01-r0007",
    kind: str = "fire",
    event: str = "sos_pressed",
) -> int:
    """Write an action as the alert service does; the incident's id (0: none, a note with no open
    incident)."""
    at_us = int(T0.timestamp() * 1_000_000)
    action = Action(
        kind=kind,  # type: ignore[arg-type]
        rule=rule,
        subject=subject,
        subject_kind="device",
        severity=severity,  # type: ignore[arg-type]
        latched=latched,
        community_id=community_id,
        gateway_id="gw1",
        device_id=subject,
        resident_id=resident_id,
        title_zh="SOS 求助",
        title_en="SOS",
        detail_zh="",
        detail_en="",
        started_us=at_us,
        at_us=at_us,
        evidence=(Evidence(time_us=at_us, device_id=subject, event=event),),
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO devices (device_id, device_type, profile, community_id, gateway_id, building, unit,"
            " room) VALUES (%s, 'sos_button', 'p', %s, 'gw1', '3', '2', '401') ON CONFLICT DO NOTHING",
            (subject, community_id),
        )
        ledger.commit(
            conn, partition=Partition(k=0, n=1), feed_seq=next(_SEQ), actions=[(1, action)], states={}
        )
        row = conn.execute(
            "SELECT max(incident_id) FROM incidents WHERE rule = %s AND subject = %s",
            (rule, subject),
        ).fetchone()
    assert row is not None
    return int(row[0] or 0)
