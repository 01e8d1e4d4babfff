"""Where simulated messages go: an MQTT broker (paho-mqtt 2), a file, or nowhere.

`MqttSink` drives paho's client from the simulator's own thread (paho's "external event loop"
mode): `publish` queues a packet, and every few dozen messages one `select` pass writes the queue
and reads PUBACKs. No network thread, no per-message wake-up. Messages in flight are bounded:
at QoS 1 by the broker's receive window (``max_inflight``, Mosquitto's default allows 1000),
at QoS 0 by a bounded write queue, so memory stays flat when the broker is slower than we are.

`FileSink` writes one JSON object per line, ``{"topic": ..., "payload": ...}`` (``payload_b64``
instead when the payload is not UTF-8, as a deliberately malformed one may be).
"""

from __future__ import annotations

import base64
import contextlib
import os
import select
import ssl
import time
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import unquote, urlsplit

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from simulators.errors import OutputError

_PORTS = {"mqtt": 1883, "tcp": 1883, "mqtts": 8883, "ssl": 8883}


class Sink(Protocol):
    """An output for messages."""

    #: broker URL or file path, for messages.
    target: str
    #: messages that could not be handed over (the run goes on).
    errors: int

    def publish(self, topic: str, payload: bytes) -> None: ...

    def idle(self, seconds: float) -> None:
        """Wait up to `seconds` while keeping the connection serviced (pacing)."""

    def close(self, *, timeout: float = 10.0) -> None:
        """Deliver what is pending (PUBACKs at QoS 1), then disconnect or close."""


class NullSink:
    """Discards everything (benchmarks of generation alone)."""

    def __init__(self) -> None:
        self.target = "null"
        self.errors = 0
        self.messages = 0

    def publish(self, topic: str, payload: bytes) -> None:
        self.messages += 1

    def idle(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    def close(self, *, timeout: float = 10.0) -> None:
        return None


class FileSink:
    """Writes ``{"topic", "payload"}`` lines to `path` (byte-identical for identical runs)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.target = str(path)
        self.errors = 0
        try:
            self._file: IO[bytes] | None = open(path, "wb", buffering=1 << 20)  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise OutputError(f"cannot write: {exc.strerror or exc}", target=str(path)) from exc
        self._encode = msgspec.json.Encoder().encode

    def publish(self, topic: str, payload: bytes) -> None:
        assert self._file is not None, "publish after close"  # noqa: S101
        try:
            text = payload.decode("utf-8")
            line = self._encode({"topic": topic, "payload": text})
        except UnicodeDecodeError:
            line = self._encode({"topic": topic, "payload_b64": base64.b64encode(payload).decode()})
        self._file.write(line + b"\n")

    def idle(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    def close(self, *, timeout: float = 10.0) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None


def read_messages(path: str | os.PathLike[str]) -> list[tuple[str, bytes]]:
    """The ``(topic, payload)`` pairs of a `FileSink` file."""
    out: list[tuple[str, bytes]] = []
    decoder = msgspec.json.Decoder()
    with open(path, "rb") as f:
        for line in f:
            doc: dict[str, str] = decoder.decode(line)
            payload = doc["payload"].encode() if "payload" in doc else base64.b64decode(doc["payload_b64"])
            out.append((doc["topic"], payload))
    return out


class MqttSink:
    """Publishes to an MQTT broker with paho-mqtt 2 (MQTT 3.1.1, clean session).

    Args:
        url: ``mqtt://host:port`` or ``mqtts://host:port`` (TLS); user and password may be given
            as ``mqtt://user:pass@host``.
        qos: 0 or 1.
        tls_ca: CA certificate to verify the broker (implies TLS).
        tls_cert, tls_key: client certificate and key for mutual TLS.
        client_id: the MQTT client id (default ``linli-sim-<pid>``).
        max_inflight: QoS 1 messages awaiting PUBACK at most (keep <= the broker's limit).
        connect_timeout: seconds to wait for the broker's CONNACK.
    """

    def __init__(
        self,
        *,
        url: str,
        qos: int = 0,
        tls_ca: str | os.PathLike[str] | None = None,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        client_id: str | None = None,
        max_inflight: int = 1000,
        keepalive: int = 60,
        connect_timeout: float = 10.0,
    ) -> None:
        if qos not in (0, 1):
            raise ValueError(f"qos must be 0 or 1, got {qos}")
        parts = urlsplit(url)
        if parts.scheme not in _PORTS or not parts.hostname:
            raise OutputError("not an MQTT URL (mqtt://host:port or mqtts://host:port)", target=url)
        self.target = url
        self.qos = qos
        self.errors = 0
        self._host = parts.hostname
        self._port = parts.port or _PORTS[parts.scheme]
        self._window = max_inflight
        self._outstanding = 0
        self._since_pump = 0
        self._connect_rc: Any = None
        self._lost: str | None = None
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"linli-sim-{os.getpid()}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        client.max_inflight_messages_set(max_inflight)
        client.max_queued_messages_set(0)
        if parts.username:
            client.username_pw_set(unquote(parts.username), unquote(parts.password or "") or None)
        if parts.scheme in ("mqtts", "ssl") or tls_ca is not None or tls_cert is not None:
            try:
                client.tls_set(
                    ca_certs=str(tls_ca) if tls_ca else None,
                    certfile=str(tls_cert) if tls_cert else None,
                    keyfile=str(tls_key) if tls_key else None,
                )
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise OutputError(f"TLS setup failed: {exc}", target=url) from exc
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        if qos == 1:
            # At QoS 0 we bound the write queue instead: paho's VERSION2 on_publish builds a
            # Properties and a ReasonCode object per message, a tenth of the work at QoS 0.
            client.on_publish = self._on_publish
        # Registering these puts paho in external-loop mode: publish() queues, we write.
        client.on_socket_register_write = lambda *_: None
        client.on_socket_unregister_write = lambda *_: None
        self._client = client
        try:
            client.connect(self._host, self._port, keepalive=keepalive)
        except (OSError, ssl.SSLError) as exc:
            raise OutputError(f"cannot connect: {exc}", target=url) from exc
        deadline = time.monotonic() + connect_timeout
        while self._connect_rc is None:
            if self._lost is not None or time.monotonic() > deadline:
                self._abandon()
                raise OutputError(f"no CONNACK from the broker ({self._lost or 'timed out'})", target=url)
            self._pump(0.05)
        if self._connect_rc.is_failure:
            self._abandon()
            raise OutputError(f"the broker refused the connection: {self._connect_rc}", target=url)

    # -- paho callbacks (called from our own thread) ----------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self._connect_rc = rc

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self._lost = str(rc)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        self._outstanding -= 1

    # -- the loop -------------------------------------------------------------------------------

    def _pump(self, timeout: float) -> None:
        client = self._client
        sock = client.socket()
        if sock is None:
            self._lost = self._lost or "socket closed"
            return
        readable: list[Any]
        writable: list[Any]
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
        try:
            readable, writable, _ = select.select(
                [sock], [sock] if client.want_write() else [], [], 0.0 if pending else timeout
            )
        except (OSError, ValueError) as exc:
            self._lost = self._lost or f"socket error: {exc}"
            return
        if readable or pending:
            rc = client.loop_read()
            if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN):
                self._lost = self._lost or mqtt.error_string(rc)
        if writable:
            rc = client.loop_write()
            if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN):
                self._lost = self._lost or mqtt.error_string(rc)
        client.loop_misc()

    def _check(self) -> None:
        if self._lost is not None:
            raise OutputError(f"connection lost: {self._lost}", target=self.target)

    def publish(self, topic: str, payload: bytes) -> None:
        qos1 = self.qos == 1
        if qos1:
            self._outstanding += 1
        info = self._client.publish(topic, payload, self.qos)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            if qos1:
                self._outstanding -= 1
            if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
                self._lost = self._lost or "not connected"
                self._check()
            self.errors += 1
        self._since_pump += 1
        if self._since_pump >= 64 or self._outstanding >= self._window:
            self._since_pump = 0
            self._pump(0.0)
            if qos1:
                while self._outstanding >= self._window:
                    self._check()
                    self._pump(0.05)
            else:
                while self._client.want_write():  # the socket is full: let the broker catch up
                    self._check()
                    self._pump(0.05)
            self._check()

    def idle(self, seconds: float) -> None:
        deadline = time.monotonic() + max(0.0, seconds)
        while True:
            self._pump(max(0.0, min(0.2, deadline - time.monotonic())))
            self._check()
            if time.monotonic() >= deadline:
                return

    @property
    def in_flight(self) -> int:
        """QoS 1 messages not yet acknowledged, or 1 while QoS 0 messages wait to be written."""
        return self._outstanding if self.qos == 1 else int(self._client.want_write())

    def close(self, *, timeout: float = 10.0) -> None:
        """Wait for every message to be written (and at QoS 1 acknowledged), then disconnect."""
        deadline = time.monotonic() + timeout
        try:
            while self.in_flight > 0 and self._lost is None and time.monotonic() < deadline:
                self._pump(0.05)
            if self._outstanding > 0:
                self.errors += self._outstanding
                self._outstanding = 0
        finally:
            self._abandon()

    def _abandon(self) -> None:
        client = self._client
        if client.socket() is not None and self._lost is None:
            client.disconnect()
            end = time.monotonic() + 2.0
            while client.socket() is not None and client.want_write() and time.monotonic() < end:
                self._pump(0.05)
        sock = client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


def open_sink(
    *,
    output: str | Path | None,
    broker: str | None,
    qos: int = 0,
    tls_ca: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    client_id: str | None = None,
) -> Sink:
    """A `FileSink` for `output`, else an `MqttSink` for `broker`."""
    if output is not None:
        return FileSink(output)
    if broker is None:
        raise OutputError("give a broker URL or an output file", target="(none)")
    return MqttSink(
        url=broker, qos=qos, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key, client_id=client_id
    )
