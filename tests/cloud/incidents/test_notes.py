"""A resident who cancels an SOS press: the note reaches everyone already told, once, and the
incident stays open for staff to close (`cloud.incidents.notes`)."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

from cloud.incidents.escalation import step_due
from cloud.incidents.notes import tell_notes
from cloud.incidents.record import Context
from tests.cloud.incidents.conftest import T0, fire

pytestmark = [pytest.mark.integration]


def _outbox(url: str, incident_id: int) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT reason, channel FROM notify_outbox WHERE incident_id = %s ORDER BY notification_id",
            (incident_id,),
        ).fetchall()
    return [(r[0], r[1]) for r in rows]


def test_a_cancelled_sos_is_told_to_everyone_told_once_and_the_incident_stays(
    migrated_url: str, ctx: Context
) -> None:
    url = migrated_url
    assert fire(url, subject="sos-9", kind="note", event="sos_cancelled") == 0  # nothing open: nothing noted
    incident = fire(url)
    assert fire(url, kind="note", event="sos_cancelled") == incident
    with psycopg.connect(url, autocommit=True) as conn:
        assert tell_notes(conn, ctx, now=T0) == 0  # nobody told yet: no cancel before the call
        assert len(step_due(conn, ctx, now=T0)) == 1  # the first step: level 1, family, doctor
        first = _outbox(url, incident)
        assert tell_notes(conn, ctx, now=T0 + timedelta(seconds=20)) == 1
        assert tell_notes(conn, ctx, now=T0 + timedelta(seconds=21)) == 0  # once
        state, cleared, closed = (
            conn.execute(
                "SELECT state, cleared_at, closed_at FROM incidents WHERE incident_id = %s", (incident,)
            ).fetchone()
            or ()
        )
        audit = conn.execute(
            "SELECT actor, action, note, detail FROM incident_audit"
            " WHERE incident_id = %s AND action = 'note'",
            (incident,),
        ).fetchall()
        noted = conn.execute(
            "SELECT count(*) FROM incident_occurrences WHERE kind = 'noted' AND told_at IS NOT NULL"
        ).fetchone()
    told = _outbox(url, incident)[len(first) :]
    assert sorted(channel for _, channel in first) == ["doctor-mail", "family-sms", "grid"]
    assert sorted(told) == [("cancelled", c) for c in ["doctor-mail", "family-sms", "grid"]]
    assert (state, cleared, closed) == ("detected", None, None)  # latched: staff close it
    assert len(audit) == 1
    assert audit[0][:2] == ("device", "note")
    assert audit[0][2].startswith("sos_cancelled at ")
    assert audit[0][3]["channels"] == ["doctor-mail", "family-sms", "grid"]
    assert noted == (1,)
