"""Publishing to a real private Mosquitto, received by a real subscriber."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from device_profiles import ProfileSet, Reading
from simulators.clock import SimClock
from simulators.errors import OutputError
from simulators.output import MqttSink
from simulators.runner import run_simulation
from simulators.services import MosquittoBroker, TlsFiles
from simulators.simulation import Simulation
from simulators.truth import TruthWriter, read_truth

from .conftest import HOUR_MS, START, simulate

pytestmark = pytest.mark.integration


class Subscriber:
    """Collects every message on the simulators' topics (own network thread)."""

    def __init__(self, host: str, port: int, *, tls: TlsFiles | None = None) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-sub-{time.monotonic_ns()}")
        if tls is not None:
            self.client.tls_set(
                ca_certs=str(tls.ca_cert), certfile=str(tls.client_cert), keyfile=str(tls.client_key)
            )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        assert self._ready.wait(10), "subscription not acknowledged"

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        client.subscribe([(f, 1) for f in ("zigbee2mqtt/#", "application/#", "nbiot/#")])

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def wait_for(self, count: int, timeout: float = 30.0) -> list[tuple[str, bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.05)
        with self._lock:
            return list(self.messages)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _publish(url: str, qos: int, tmp: Path, **tls: Any) -> tuple[list[dict[str, Any]], Simulation]:
    run = simulate(devices=150, hours=0.01)
    sim = Simulation(inventory=run.inventory, start=START, seed=4)
    truth = tmp / "truth.jsonl"
    summary = run_simulation(
        sim,
        sink=MqttSink(url=url, qos=qos, **tls),
        truth=TruthWriter(truth),
        clock=SimClock(start_ms=sim.start_ms, speed=None),
        until_ms=sim.start_ms + 4 * HOUR_MS,
    )
    assert summary.failure is None
    assert summary.errors == 0
    return [r for r in read_truth(truth) if r["kind"] == "message"], sim


@pytest.mark.parametrize("qos", [0, 1])
def test_publish_to_a_real_broker(mosquitto: Any, tmp_path: Path, qos: int) -> None:
    subscriber = Subscriber(mosquitto.host, mosquitto.port)
    try:
        sent, sim = _publish(mosquitto.url, qos, tmp_path)
        received = subscriber.wait_for(len(sent))
    finally:
        subscriber.stop()
    assert len(sent) > 500
    if qos == 1:
        assert len(received) == len(sent)
    else:
        assert len(received) >= 0.99 * len(sent)  # QoS 0 on loopback: in practice all
    decoder = ProfileSet.shipped().with_device_map(sim.inventory.device_profile_map())
    ids = {r["reading_id"] for r in sent}
    got = set()
    for topic, payload in received:
        reading = decoder.decode(topic, payload, START)
        assert isinstance(reading, Reading)
        got.add(reading.reading_id)
    assert got <= ids
    assert len(got) >= 0.99 * len(ids)
    assert [t for t, _ in received][:50] == [r["topic"] for r in sent][:50], "sent in order"


def test_publish_with_mutual_tls(
    make_broker: Callable[..., MosquittoBroker], test_pki: TlsFiles, tmp_path: Path
) -> None:
    broker = make_broker(tls=test_pki, require_client_cert=True)
    subscriber = Subscriber(broker.host, broker.port, tls=test_pki)
    try:
        sent, _ = _publish(
            broker.url,
            1,
            tmp_path,
            tls_ca=test_pki.ca_cert,
            tls_cert=test_pki.client_cert,
            tls_key=test_pki.client_key,
        )
        received = subscriber.wait_for(len(sent))
    finally:
        subscriber.stop()
    assert len(received) == len(sent) > 500


def test_tls_without_client_certificate_is_refused(
    make_broker: Callable[..., MosquittoBroker], test_pki: TlsFiles
) -> None:
    broker = make_broker(tls=test_pki, require_client_cert=True)
    with pytest.raises(OutputError):
        MqttSink(url=broker.url, qos=1, tls_ca=test_pki.ca_cert, connect_timeout=5)


def test_broker_going_away_is_an_output_error(make_broker: Callable[..., MosquittoBroker]) -> None:
    broker = make_broker()
    sink = MqttSink(url=broker.url, qos=1)
    sink.publish("nbiot/861234567890123/up", b"{}")
    broker.stop()

    def flood() -> None:
        for _ in range(100_000):
            sink.publish("nbiot/861234567890123/up", b"{}")

    with pytest.raises(OutputError, match="connection lost"):
        flood()
    sink.close(timeout=1)


def test_cli_publishes_at_qos1(mosquitto: Any, tmp_path: Path) -> None:
    from device_profiles.console import main

    subscriber = Subscriber(mosquitto.host, mosquitto.port)
    try:
        code = main(
            [
                "sim",
                "--devices",
                "50",
                "--broker",
                mosquitto.url,
                "--qos",
                "1",
                "--speed",
                "max",
                "--duration",
                "2h",
                "--start",
                "2025-06-01T00:00:00Z",
                "--truth",
                str(tmp_path / "t.jsonl"),
                "--quiet",
                "--client-id",
                "test-cli-sim",
            ]
        )
        sent = [r for r in read_truth(tmp_path / "t.jsonl") if r["kind"] == "message"]
        received = subscriber.wait_for(len(sent))
    finally:
        subscriber.stop()
    assert code == 0
    assert len(received) == len(sent) > 50


def test_buffered_messages_go_out_while_the_run_waits(mosquitto: Any) -> None:
    # Paced runs idle between messages: what was published must reach the broker then, not at close.
    subscriber = Subscriber(mosquitto.host, mosquitto.port)
    sink = MqttSink(url=mosquitto.url, qos=0)
    try:
        sink.publish("nbiot/861234567890123/up", b'{"n":1}')
        sink.idle(0.5)
        received = subscriber.wait_for(1, timeout=2.0)
        assert received == [("nbiot/861234567890123/up", b'{"n":1}')]
        assert sink.in_flight == 0
    finally:
        sink.close(timeout=2)
        subscriber.stop()


def test_keepalive_holds_an_idle_connection(mosquitto: Any) -> None:
    # Mosquitto drops a client silent for 1.5 keepalives (checked every few seconds: without
    # PINGREQs this connection is gone after 8 s); idling sends them in time. The 8 s of idling
    # are the thing under test: the broker's keep-alive timer runs on the wall clock.
    subscriber = Subscriber(mosquitto.host, mosquitto.port)
    sink = MqttSink(url=mosquitto.url, qos=1, keepalive=2)
    try:
        sink.idle(8.0)
        sink.publish("nbiot/861234567890123/up", b'{"n":2}')
        sink.close(timeout=5)
        assert sink.errors == 0
        assert subscriber.wait_for(1) == [("nbiot/861234567890123/up", b'{"n":2}')]
    finally:
        subscriber.stop()


def test_large_payloads_and_long_topics(mosquitto: Any) -> None:
    # Remaining lengths of one to three bytes.
    subscriber = Subscriber(mosquitto.host, mosquitto.port)
    topic = "application/" + "a" * 300 + "/device/0011223344556677/event/up"
    payloads = [b"x" * n for n in (0, 100, 127, 128, 5000, 16383, 16384, 200_000)]
    sink = MqttSink(url=mosquitto.url, qos=1)
    for payload in payloads:
        sink.publish(topic, payload)
    sink.close(timeout=10)
    try:
        assert sink.errors == 0
        assert subscriber.wait_for(len(payloads)) == [(topic, p) for p in payloads]
    finally:
        subscriber.stop()


def test_ctrl_c_delivers_what_the_truth_lists(mosquitto: Any, tmp_path: Path) -> None:
    # A paced run to a broker at QoS 1, stopped with Ctrl-C: every message the ground truth lists
    # reached the broker (buffer written, PUBACKs awaited) before the truth was closed.
    subscriber = Subscriber(mosquitto.host, mosquitto.port)
    truth = tmp_path / "truth.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "device_profiles.console",
            "sim",
            "--devices",
            "300",
            "--speed",
            "600",
            "--start",
            "2025-06-01T00:00:00Z",
            "--broker",
            mosquitto.url,
            "--qos",
            "1",
            "--truth",
            str(truth),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Interrupt a run under way: once the broker has delivered some of its messages.
        assert len(subscriber.wait_for(20, timeout=30)) >= 20
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
        records = read_truth(truth)
        messages = [r for r in records if r["kind"] == "message"]
        received = subscriber.wait_for(len(messages), timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        subscriber.stop()
    assert proc.returncode == 130, stderr
    assert records[-1]["kind"] == "end"
    assert records[-1]["interrupted"] is True
    assert len(messages) == records[-1]["messages"] >= 20
    assert [topic for topic, _ in received] == [m["topic"] for m in messages]


def test_credentials_are_sent_and_a_refusal_is_an_output_error() -> None:
    # A one-shot listener that answers CONNECT with "not authorised" (CONNACK return code 5).
    server = socket.create_server(("127.0.0.1", 0))
    got: list[bytes] = []

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            got.append(conn.recv(4096))
            conn.sendall(b"\x20\x02\x00\x05")

    thread = threading.Thread(target=answer)
    thread.start()
    try:
        port = server.getsockname()[1]
        with pytest.raises(OutputError, match="not authorised"):
            MqttSink(url=f"mqtt://sim%40a:p%3Ass@127.0.0.1:{port}", client_id="cid", connect_timeout=5)
    finally:
        thread.join(5)
        server.close()
    (packet,) = got
    assert packet[0] == 0x10
    body = packet[2:]
    assert body[:7] == b"\x00\x04MQTT\x04"
    assert body[7] == 0xC2  # user name, password, clean session
    assert body[10:] == b"\x00\x03cid" + b"\x00\x05sim@a" + b"\x00\x04p:ss"
