"""A rule's ``command``: when it fires on a device whose model carries the command, the command is
queued in the commands outbox with the incident, in its transaction, once (docs/commands.md); the
rules file refuses a command the standard refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest

from cloud.alerts import ledger
from cloud.alerts.feed import Partition
from cloud.alerts.model import Action
from cloud.alerts.rules import RuleBook
from cloud.errors import AlertRuleError
from tests.cloud.alerts.test_engine import MIN, T0, TEXT, Harness, device

RULE = """
rules:
  - id: lamp_dark
    kind: state_duration
    device_types: [streetlight]
    metric: lamp_on
    equals: 0
    for: 10m
    severity: major
    command: {name: switch, params: {"on": true}, ttl: 15m}
""" + TEXT.replace("\n    ", "\n    ", 1)


def test_a_fire_carries_the_command_its_device_can_take(tmp_path: Path) -> None:
    lamp = device("lamp1", "streetlight", interval=900)
    h = Harness(tmp_path, RULE, lamp, msgspec.structs.replace(lamp, device_id="lamp2", profile="other/lamp"))
    h.dir = msgspec.structs.replace(h.dir, profile_commands={"generic/streetlight": {"switch": "report"}})
    h.engine = type(h.engine)(rules=h.book, directory=h.dir, clock="data")
    h.feed("lamp1", T0, {"lamp_on": 0})
    h.feed("lamp2", T0, {"lamp_on": 0})
    fired = h.feed("lamp1", T0 + 11 * MIN, {"lamp_on": 0}) + h.feed("lamp2", T0 + 11 * MIN, {"lamp_on": 0})
    by = {a.subject: a for a in fired if a.kind == "fire"}
    command = by["lamp1"].command
    assert command is not None
    assert (command.name, command.params, command.confirm, command.ttl_s) == (
        "switch",
        {"on": True},
        "report",
        900,
    )
    assert by["lamp2"].command is None  # its model carries no switch: the incident alone


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ('{name: switch, params: {"on": 1}}', "on must be true or false"),
        ("{name: blink}", "'blink' is not a command of streetlight"),
    ],
)
def test_a_command_the_standard_refuses_is_a_rule_error(tmp_path: Path, command: str, message: str) -> None:
    (tmp_path / "rules.yaml").write_text(
        RULE.replace('{name: switch, params: {"on": true}, ttl: 15m}', command)
    )
    with pytest.raises(AlertRuleError, match=message):
        RuleBook.load(shipped=False, paths=[tmp_path / "rules.yaml"])


def _fire(**extra: Any) -> Action:
    from cloud.alerts.model import RuleCommandOut

    return Action(
        kind="fire", rule="lamp_dark", subject="lamp1", subject_kind="device", severity="major",
        latched=False, community_id="c01", gateway_id="gw1", device_id="lamp1", resident_id=None,
        title_zh="灯", title_en="lamp", detail_zh="", detail_en="", started_us=T0, at_us=T0 + 11 * MIN,
        command=RuleCommandOut(name="switch", params={"on": True}, confirm="report", ttl_s=900), **extra,
    )  # fmt: skip


@pytest.mark.integration
def test_the_command_is_queued_with_the_incident_once(migrated_url: str) -> None:
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO devices (device_id, device_type, profile, community_id, gateway_id) VALUES"
            " ('lamp1', 'streetlight', 'generic_nbiot/streetlight', 'c01', 'gw1')"
        )
        conn.execute("LISTEN linli_commands")
        part = Partition.parse("0/1")
        ledger.commit(conn, partition=part, feed_seq=5, actions=[(5, _fire())], states={})
        ledger.commit(conn, partition=part, feed_seq=5, actions=[(5, _fire())], states={})  # written again
        rows = conn.execute(
            "SELECT c.name, c.params, c.state, c.requested_by, c.incident_id = i.incident_id,"
            " c.expires_at - c.requested_at"
            " FROM commands c, incidents i WHERE i.rule = 'lamp_dark'"
        ).fetchall()
        assert [r[:5] for r in rows] == [("switch", {"on": True}, "queued", "rule lamp_dark", True)]
        assert rows[0][5].total_seconds() == 900
        audit = conn.execute("SELECT actor, state, detail FROM command_audit").fetchall()
        assert audit == [("rule lamp_dark", "queued", "switch on=true")]
        assert [n.payload for n in conn.notifies(timeout=1.0, stop_after=1)] == ["gw1"]
