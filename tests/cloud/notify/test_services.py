"""The real commands: ``linli cloud incidents`` and ``linli cloud notify`` take an SOS to the grid
worker's robot, the family and the doctor, and the resident's cancel after it; a kill -9 of the
sender in a burst loses nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec.yaml
import psycopg
import pytest

from simulators.demo.children import Child
from simulators.demo.configs import write_cloud_config
from simulators.pushes import PushServer
from tests.cloud.incidents.conftest import PEOPLE, fire
from tests.cloud.notify.conftest import Mailbox, owe, states

pytestmark = pytest.mark.integration


def _config(tmp_path: Path, url: str, *, incidents: dict[str, Any], notify: dict[str, Any]) -> Path:
    return write_cloud_config(
        tmp_path / "cloud.toml",
        database_url=url,
        mqtt_url="mqtt://127.0.0.1:1",  # not used by these services
        overrides={"incidents": incidents, "notify": notify},
    )


def _child(name: str, toml: Path, tmp_path: Path) -> Child:
    return Child.python(
        name=name, module="cloud", args=["cloud", name, "--config", str(toml)], log=tmp_path / f"{name}.log"
    )


def test_an_sos_reaches_the_grid_worker_the_family_and_the_doctor(
    migrated_url: str, tmp_path: Path, smtp_server: tuple[str, int, Mailbox]
) -> None:
    host, port, box = smtp_server
    people = tmp_path / "people.yaml"
    people.write_bytes(msgspec.yaml.encode(PEOPLE))
    with PushServer() as pushes:
        channels = {
            "grid": {"kind": "wecom", "url": pushes.add_wecom("grid")},
            "committee": {"kind": "wecom", "url": pushes.add_wecom("committee")},
            "street": {"kind": "feishu", "url": pushes.add_feishu("street")},
            "district": {"kind": "webhook", "url": pushes.add_webhook("district", "k"), "secret": "k"},
            "family-sms": {"kind": "webhook", "url": pushes.add_webhook("sms", "s"), "secret": "s"},
            "doctor-mail": {
                "kind": "email",
                "smtp_host": host,
                "smtp_port": port,
                "smtp_security": "none",
                "sender": "linli@example.org",
            },
        }
        toml = _config(
            tmp_path,
            migrated_url,
            incidents={"people": str(people), "console_url": "http://console.test", "http": {"address": ""}},
            notify={"channels": channels, "http": {"address": ""}},
        )
        services = [_child("incidents", toml, tmp_path), _child("notify", toml, tmp_path)]
        for s in services:
            s.start()
        try:
            iid = fire(migrated_url)
            assert pushes.wait_for(lambda p: {r.robot for r in p.received} >= {"grid", "sms"}, timeout=30)
            assert box.wait(1, timeout=30)
            # the resident cancels: everyone told hears it (the incident stays for staff to close)
            assert fire(migrated_url, kind="note", event="sos_cancelled") == iid
            assert pushes.wait_for(
                lambda p: sum("居民已取消呼叫" in r.text for r in p.received) == 2, timeout=30
            )
            assert box.wait(2, timeout=30)
        finally:
            for s in services:
                s.stop(timeout=20)
    grid = next(r for r in pushes.received if r.robot == "grid")
    assert grid.mentions == ("13800000001",)
    assert f"http://console.test/incidents/{iid}" in grid.text
    family = next(r for r in pushes.received if r.robot == "sms")
    assert family.body["recipients"] == [{"name": "李娜", "relation": "family", "mobile": "13900000009"}]
    assert "您的家人可能需要帮助" in family.text
    assert box.messages[0]["To"] == "chen@example.org"
    assert {r.robot for r in pushes.received} == {"grid", "sms"}  # the ladder waits 120 s for level 2
    cancelled = [r.robot for r in pushes.received if "居民已取消呼叫" in r.text]
    assert sorted(cancelled) == ["grid", "sms"]
    assert len(pushes.received) == 4


def test_kill_9_of_the_sender_in_a_burst_loses_nothing_and_repeats_at_most_the_one_in_flight(
    migrated_url: str, tmp_path: Path
) -> None:
    with PushServer() as pushes:
        toml = _config(
            tmp_path,
            migrated_url,
            incidents={},
            notify={
                "channels": {"hook": {"kind": "webhook", "url": pushes.add_webhook("h", "k"), "secret": "k"}},
                "http": {"address": ""},
            },
        )
        ids = owe(migrated_url, "hook", n=300)
        sender = _child("notify", toml, tmp_path)
        sender.start()
        kills = 0
        try:
            for at in (40, 120, 200):

                def reached(p: PushServer, at: int = at) -> bool:
                    return len(p.received) >= at

                assert pushes.wait_for(reached, timeout=60)
                sender.kill()
                kills += 1
                assert len(pushes.received) < 300, "killed after the burst: nothing tested"
                sender.start()
            assert pushes.wait_for(lambda p: len({r.idempotency_key for r in p.received}) >= 300, timeout=60)
        finally:
            sender.stop(timeout=20)
    keys = [r.idempotency_key for r in pushes.received]
    assert set(keys) == {f"linli-{i}" for i in ids}
    repeats = [r for r in pushes.received if r.duplicate]
    assert len(repeats) <= kills  # one channel: at most the one in flight per kill
    assert {s[0] for s in states(migrated_url).values()} == {"sent"}
    with psycopg.connect(migrated_url) as conn:
        row = conn.execute("SELECT count(*) FROM notify_outbox WHERE attempts > 1").fetchone()
    assert row is not None
    # sent again: only rows found "sending" after a kill; of those, the ones that had reached the
    # receiver are the repeats it dropped
    assert len(repeats) <= row[0] <= kills
