"""`linli pki`: the CA and what it issues, and a real Mosquitto run with the certificates and the
ACL it writes: each gateway is confined to its own topics, the ingest reads them all, and a client
without a certificate gets nowhere."""

from __future__ import annotations

import ssl
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from cloud.pki.authority import Authority, PkiError
from simulators.services import MosquittoBroker
from simulators.services.tls import TlsFiles

TIMEOUT = 10.0


def _cn(path: Path) -> str:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    value = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return value if isinstance(value, str) else value.decode()


def test_the_ca_issues_gateways_and_services_and_writes_the_acl(tmp_path: Path) -> None:
    ca = Authority.init(tmp_path / "ca")
    with pytest.raises(PkiError, match="already holds a CA"):
        Authority.init(tmp_path / "ca")
    with pytest.raises(PkiError, match="run `linli pki init"):
        Authority(directory=tmp_path / "nowhere")
    gw = ca.issue_gateway("gw-01", community_id="c01")
    ingest = ca.issue_service("linli-ingest", role="ingest")
    broker = ca.issue_service("broker", role="broker", hosts=("127.0.0.1", "mqtt.example.org"))
    assert (_cn(gw.cert), _cn(ingest.cert), _cn(broker.cert)) == ("gw-01", "linli-ingest", "broker")
    for issued in (gw, ingest, broker):
        assert stat.S_IMODE(issued.key.stat().st_mode) == 0o600
        x509.load_pem_x509_certificate(issued.cert.read_bytes()).verify_directly_issued_by(
            x509.load_pem_x509_certificate(ca.ca_cert.read_bytes())
        )
    assert stat.S_IMODE((tmp_path / "ca" / "ca.key").stat().st_mode) == 0o600
    names = x509.load_pem_x509_certificate(broker.cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert [str(n.value) for n in names.value] == ["127.0.0.1", "mqtt.example.org"]
    acl = (tmp_path / "ca" / "broker.acl").read_text()
    assert (
        "user gw-01\ntopic write linli/v1/c01/gw-01/up\ntopic write linli/v1/c01/gw-01/alarm\n"
        "topic write linli/v1/c01/gw-01/status\ntopic write linli/v1/c01/gw-01/commands\n"
        "topic read linli/v1/c01/gw-01/down\n"
    ) in acl
    assert "user linli-ingest\ntopic read linli/v1/#\n" in acl
    assert "broker" not in acl.split("(do not edit")[1]  # the server has no rights as a client
    for bad in ("", "a/b", "+", "#x", "-x", "x" * 65):
        with pytest.raises(PkiError):
            ca.issue_gateway(bad, community_id="c01")
    with pytest.raises(PkiError, match="needs the names"):
        ca.issue_service("broker2", role="broker")


def test_the_command_line(tmp_path: Path) -> None:
    def linli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "device_profiles.console", "pki", *args, "--dir", str(tmp_path / "ca")],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    assert linli("issue-gateway", "gw-01", "--community", "c01").returncode == 2  # no CA yet
    assert linli("init").returncode == 0
    assert linli("init").returncode == 2
    done = linli("issue-gateway", "gw-01", "--community", "c01")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "ca" / "gateways" / "gw-01.crt").exists()
    assert linli("issue-service", "broker", "--role", "broker", "--host", "127.0.0.1").returncode == 0
    acl = linli("acl")
    assert "topic write linli/v1/c01/gw-01/alarm" in acl.stdout


class Client:
    """A paho MQTT v5 client with a certificate of the CA (or none), waiting on real events."""

    def __init__(
        self, broker: MosquittoBroker, ca: Path, cert: Path | None, key: Path | None, name: str
    ) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=paho.MQTTv5)
        context = ssl.create_default_context(cafile=str(ca))
        if cert is not None and key is not None:
            context.load_cert_chain(str(cert), str(key))
        self.client.tls_set_context(context)
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connect_code: ReasonCode | None = None
        self.acks: dict[int, tuple[threading.Event, list[ReasonCode]]] = {}
        self.messages: list[tuple[str, bytes]] = []
        self.got = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_publish = self._on_ack
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = lambda *_a: self.disconnected.set()
        self.broker = broker

    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self.connect_code = rc
        self.connected.set()

    def _on_ack(self, _c: Any, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        event, codes = self.acks.setdefault(mid, (threading.Event(), []))
        codes.append(rc)
        event.set()

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, codes: list[ReasonCode], _p: Any) -> None:
        event, got = self.acks.setdefault(mid, (threading.Event(), []))
        got.extend(codes)
        event.set()

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        with self.got:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self.got.notify_all()

    def connect(self) -> None:
        self.client.connect(self.broker.host, self.broker.port)
        self.client.loop_start()
        assert self.connected.wait(TIMEOUT), "no CONNACK"
        assert self.connect_code is not None
        assert not self.connect_code.is_failure, self.connect_code

    def _wait(self, mid: int) -> list[ReasonCode]:
        event, codes = self.acks.setdefault(mid, (threading.Event(), []))
        assert event.wait(TIMEOUT), f"no acknowledgement of {mid}"
        return codes

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        info = self.client.publish(topic, payload, qos=1)
        return self._wait(info.mid)[0]

    def subscribe(self, topic: str) -> ReasonCode:
        _rc, mid = self.client.subscribe(topic, qos=1)
        assert mid is not None
        return self._wait(mid)[0]

    def wait_for(self, count: int) -> list[tuple[str, bytes]]:
        with self.got:
            assert self.got.wait_for(lambda: len(self.messages) >= count, TIMEOUT), self.messages
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.client._reset_sockets()  # paho closes its wake-up socket pair only when collected


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[tuple[MosquittoBroker, Authority]]:
    ca = Authority.init(tmp_path / "ca")
    ca.issue_gateway("gw-a", community_id="c01")
    ca.issue_gateway("gw-b", community_id="c02")
    ca.issue_service("linli-ingest", role="ingest")
    ca.issue_service("linli-commands", role="commands")
    server = ca.issue_service("broker", role="broker", hosts=("127.0.0.1",))
    tls = TlsFiles(ca_cert=ca.ca_cert, server_cert=server.cert, server_key=server.key,
                   client_cert=server.cert, client_key=server.key)  # fmt: skip
    broker = MosquittoBroker(
        workdir=tmp_path / "broker",
        tls=tls,
        require_client_cert=True,
        extra_config=[f"acl_file {ca.directory / 'broker.acl'}"],
    )
    broker.start()
    yield broker, ca
    broker.stop()


@pytest.mark.integration
def test_each_gateway_is_confined_to_its_own_topics(locked: tuple[MosquittoBroker, Authority]) -> None:
    broker, ca = locked
    d = ca.directory

    def client(kind: str, name: str) -> Client:
        return Client(broker, ca.ca_cert, d / f"{kind}/{name}.crt", d / f"{kind}/{name}.key", name)

    ingest, commands = client("services", "linli-ingest"), client("services", "linli-commands")
    gw_a, gw_b = client("gateways", "gw-a"), client("gateways", "gw-b")
    clients = [ingest, commands, gw_a, gw_b]
    try:
        for c in clients:
            c.connect()
        assert not ingest.subscribe("$share/ingest/linli/v1/+/+/up").is_failure
        # a gateway may subscribe to anything, and is sent only what it may read: its own "down"
        assert not gw_a.subscribe("linli/v1/#").is_failure
        own = gw_a.publish("linli/v1/c01/gw-a/up", b"mine")
        assert not own.is_failure, own
        for topic in ("linli/v1/c02/gw-b/up", "linli/v1/c02/gw-a/up", "linli/v1/c01/gw-b/status"):
            refused = gw_a.publish(topic, b"not mine")
            assert refused.value == 0x87, (topic, refused)  # not authorized
        assert not gw_b.publish("linli/v1/c02/gw-b/up", b"b's").is_failure
        assert ingest.wait_for(2) == [("linli/v1/c01/gw-a/up", b"mine"), ("linli/v1/c02/gw-b/up", b"b's")]
        assert gw_b.publish("linli/v1/c02/gw-b/down", b"x").value == 0x87  # commands come from the cloud
        assert not commands.publish("linli/v1/c01/gw-a/down", b"switch on").is_failure
        assert commands.publish("linli/v1/c01/gw-a/up", b"forged").value == 0x87
        # the command arrived; nothing of gw-b's, and not its own uplinks, came before it
        assert gw_a.wait_for(1) == [("linli/v1/c01/gw-a/down", b"switch on")]
    finally:
        for c in clients:
            c.close()


@pytest.mark.integration
def test_a_client_without_a_certificate_gets_nowhere(locked: tuple[MosquittoBroker, Authority]) -> None:
    broker, ca = locked
    anonymous = Client(broker, ca.ca_cert, None, None, "anonymous")
    try:
        anonymous.client.connect(broker.host, broker.port)
    except (ssl.SSLError, OSError):
        pass  # refused in the handshake (TLS 1.2: the broker asks for the certificate first)
    else:  # or the handshake ended on this side first: the broker drops the connection
        anonymous.client.loop_start()
        assert anonymous.disconnected.wait(TIMEOUT)
    anonymous.close()
    assert not anonymous.connected.is_set()
