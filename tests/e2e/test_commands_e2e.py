"""Closing the SOS loop to the resident through the whole chain: a press becomes an incident, a
staff member accepts it, ``acknowledge`` goes to the button (sender, cloud broker as shipped, edge
agent, field broker), the simulated button shows it and the network acknowledges the downlink, and
the incident's audit trail follows the command to ``confirmed``; the simulation's ground truth
has the command and its effect."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest

from cloud.incidents import transitions
from cloud.incidents.people import People
from cloud.incidents.record import Context
from simulators.demo.chain import running_chain
from simulators.truth import read_truth

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def until(check: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_an_accepted_sos_is_acknowledged_on_the_button(tmp_path: Path) -> None:
    with running_chain(tmp_path, commands=True) as chain:
        button = chain.button.device_id
        with psycopg.connect(chain.url, autocommit=True) as conn:
            chain.press()

            def incident() -> int | None:
                row = conn.execute(
                    "SELECT incident_id FROM incidents WHERE rule = 'sos_pressed' AND device_id = %s",
                    (button,),
                ).fetchone()
                return None if row is None else int(row[0])

            incident_id = until(incident, "the SOS incident")
            people = People.model_validate(msgspec.yaml.decode((tmp_path / "people.yaml").read_bytes()))
            transitions.accept(conn, incident_id, actor="k1", ctx=Context(people=people))

            def trail() -> list[tuple[str, str]]:
                return [
                    (note, detail["command"]["state"])
                    for note, detail in conn.execute(
                        "SELECT note, detail FROM incident_audit WHERE incident_id = %s"
                        " AND action = 'command' ORDER BY audit_id",
                        (incident_id,),
                    ).fetchall()
                ]

            until(lambda: ("acknowledge confirmed", "confirmed") in trail(), "the acknowledge confirmed", 60)
            assert trail() == [
                ("acknowledge at gateway", "at_gateway"),
                ("acknowledge sent to device", "sent_to_device"),
                ("acknowledge confirmed", "confirmed"),
            ]
            row = conn.execute(
                "SELECT state, confirm, requested_by FROM commands WHERE incident_id = %s", (incident_id,)
            ).fetchone()
            assert row == ("confirmed", "network", "k1")
        chain.check()
    records = [r for r in read_truth(tmp_path / "obeying-truth.jsonl") if r["kind"] == "command"]
    assert [(r["device_id"], r["name"], r["effect"]) for r in records] == [
        (button, "acknowledge", "acknowledged: green LED and two beeps, help is coming")
    ]
