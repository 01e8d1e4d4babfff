"""``linli cloud commands`` killed with SIGKILL again and again while commands are queued and their
progress reported (each report sent several times, as a gateway that did not hear the PUBACK
would): in the end every command is confirmed, and each state is in its audit trail once, each end
an event once."""

from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud.commands import outbox
from device_profiles import ProfileSet
from device_profiles.command_wire import CommandProgress, decode_down, encode, progress_topic
from tests.conftest import BrokerEndpoint

pytestmark = [pytest.mark.integration]

PROFILES = ProfileSet.shipped().profiles
LAMPS = [f"86123456789{i:04d}" for i in range(20)]
COMMANDS = 240


class Gateway(threading.Thread):
    """Reports at_gateway, sent_to_device and confirmed for every command it receives, every time
    it receives it, twice each."""

    def __init__(self, broker: BrokerEndpoint) -> None:
        super().__init__(daemon=True)
        self.inbox: queue.Queue[bytes] = queue.Queue()
        self.seen: set[str] = set()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"gw-{uuid.uuid4().hex[:6]}")
        subscribed = threading.Event()
        self.client.on_message = lambda _c, _u, msg: self.inbox.put(bytes(msg.payload))
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.on_connect = lambda c, *_a: c.subscribe("linli/v1/c01/gw1/down", qos=1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert subscribed.wait(10)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                down = decode_down(self.inbox.get(timeout=0.2))
            except queue.Empty:
                continue
            self.seen.add(down.command_id)
            for state in ("at_gateway", "sent_to_device", "confirmed") * 2:
                report = CommandProgress(
                    gateway_id="gw1", command_id=down.command_id, state=state, at_us=time.time_ns() // 1000
                )
                self.client.publish(progress_topic("c01", "gw1"), encode(report), qos=1)

    def close(self) -> None:
        self.stop.set()
        self.join(10)
        self.client.disconnect()
        self.client.loop_stop()


def start(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:  # the child has its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "device_profiles.console", "cloud", "commands", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_kill_9_never_loses_or_repeats_a_state(
    migrated_url: str, mosquitto: BrokerEndpoint, tmp_path: Path
) -> None:
    config = tmp_path / "cloud.toml"
    config.write_text(
        f'database_url = "{migrated_url}"\n[mqtt]\nurl = "{mosquitto.url}"\n'
        f'[commands]\nclient_id = "cmd-{uuid.uuid4().hex[:6]}"\nresend_s = 1.0\npoll_interval_s = 0.2\n'
        '[commands.http]\naddress = ""\n'
    )
    log = tmp_path / "commands.log"
    rng = random.Random(9)
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        for lamp in LAMPS:
            conn.execute(
                "INSERT INTO devices (device_id, device_type, profile, community_id, gateway_id) VALUES"
                " (%s, 'streetlight', 'generic_nbiot/streetlight', 'c01', 'gw1')",
                (lamp,),
            )
        gateway = Gateway(mosquitto)
        gateway.start()
        proc = start(config, log)
        ids: list[str] = []
        kills = 0
        try:
            for i in range(COMMANDS):
                command, _ = outbox.request(
                    conn, actor="k-li", device_id=LAMPS[i % len(LAMPS)], name="dim",
                    params={"level_pct": i % 100}, ttl_s=3600, profiles=PROFILES, now=datetime.now(UTC),
                )  # fmt: skip
                ids.append(str(command["command_id"]))
                if i % 60 == 59:
                    time.sleep(rng.uniform(0.3, 1.2))  # mid-stream: sends and reports in flight
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(10)
                    kills += 1
                    proc = start(config, log)
                elif i % 4 == 0:
                    time.sleep(0.01)
            deadline = time.monotonic() + 90
            while True:
                row = conn.execute("SELECT count(*) FROM commands WHERE state = 'confirmed'").fetchone()
                if row is not None and row[0] == COMMANDS:
                    break
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, (
                    f"{row} of {COMMANDS} confirmed:\n{log.read_text()[-3000:]}"
                )
                time.sleep(0.1)
        finally:
            proc.terminate()
            proc.wait(30)
            gateway.close()
        assert kills == 4
        trails = conn.execute(
            "SELECT command_id::text, array_agg(state ORDER BY id) FROM command_audit GROUP BY 1"
        ).fetchall()
        assert len(trails) == COMMANDS
        assert {tuple(states) for _, states in trails} == {
            ("queued", "at_gateway", "sent_to_device", "confirmed")
        }
        events = conn.execute(
            "SELECT attributes->>'command_id', count(*) FROM events WHERE event = 'command_confirmed'"
            " GROUP BY 1"
        ).fetchall()
        assert sorted(events) == sorted((i, 1) for i in ids)
        feed: Any = conn.execute("SELECT count(*), sum(readings) FROM alert_feed").fetchone()
        assert tuple(feed) == (COMMANDS, COMMANDS)
