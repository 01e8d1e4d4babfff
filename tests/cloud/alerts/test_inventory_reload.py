"""The alert service follows its inventory file: a device added (an approval at a gateway carried to
the cloud's copy) reaches the devices table and the next session's engine without a restart; an
invalid file is refused and the running inventory kept."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from cloud.alerts.main import run_alerts
from cloud.config import build_settings
from device_profiles.inventory import Device, Inventory, Location

pytestmark = [pytest.mark.integration]


def door(device_id: str, building: str) -> Device:
    return Device(
        device_id=device_id,
        device_type="door_contact",
        profile="aqara/mccgq11lm",
        community_id="c01",
        gateway_id="c01-gw1",
        location=Location(lat=31.23, lon=121.47, building=building),
    )


def until(check: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_changed_inventory_is_reloaded_without_a_restart(
    migrated_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inventory = tmp_path / "inventory.yaml"
    Inventory([door("door-a", "1")]).dump(inventory)
    settings = build_settings(
        {
            "database_url": migrated_url,
            "alerts": {
                "inventory": str(inventory),
                "inventory_watch_s": 0.1,
                "poll_interval_s": 0.1,
                "detect": False,
            },
        }
    )
    stop = threading.Event()
    result: list[int] = []
    caplog.set_level(logging.INFO)
    thread = threading.Thread(target=lambda: result.append(run_alerts(settings, stop)))
    thread.start()

    def building(device_id: str) -> str | None:
        with psycopg.connect(migrated_url) as conn:
            row = conn.execute("SELECT building FROM devices WHERE device_id = %s", (device_id,)).fetchone()
        return None if row is None else str(row[0])

    try:
        assert until(lambda: building("door-a") == "1")
        assert until(lambda: "partition 0/1 active" in caplog.text)
        Inventory([door("door-a", "1"), door("door-b", "9")]).dump(inventory)
        assert until(lambda: building("door-b") == "9"), caplog.text[-2000:]
        assert until(lambda: "a new session, with the reloaded inventory" in caplog.text)
        assert until(lambda: caplog.text.count("partition 0/1 active") == 2), caplog.text[-2000:]
        assert "inventory reloaded: 2 devices" in caplog.text
        inventory.write_text("version: 1\ndevices:\n  - device_id: door-c\n")  # not a valid entry
        assert until(lambda: "inventory changed but not reloaded" in caplog.text)
        assert building("door-c") is None
        assert caplog.text.count("partition 0/1 active") == 2
    finally:
        stop.set()
        thread.join(timeout=30)
    assert result == [0]
