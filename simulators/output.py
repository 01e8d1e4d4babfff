"""Where simulated messages go: an MQTT broker, a file, or nowhere.

`MqttSink` publishes through `simulators.mqtt.MqttPublisher` from the simulator's own thread: a
message is appended to a write buffer, and the buffer goes out in one write per 64 KiB, whenever
the run waits (paced runs), and at the end. No network thread, no per-message system call.
Messages in flight are bounded: at QoS 1 by the broker's receive window (``max_inflight``,
Mosquitto's default allows 1000), at QoS 0 by the bounded buffer, so memory stays flat when the
broker is slower than we are.

`FileSink` writes one JSON object per line, ``{"topic": ..., "payload": ...}`` (``payload_b64``
instead when the payload is not UTF-8, as a deliberately malformed one may be).
"""

from __future__ import annotations

import base64
import os
import ssl
import time
from pathlib import Path
from typing import IO, Protocol
from urllib.parse import unquote, urlsplit

import msgspec

from simulators.errors import OutputError
from simulators.mqtt import MqttLinkError, MqttPublisher

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
    """Publishes to an MQTT broker (MQTT 3.1.1, clean session) through `MqttPublisher`.

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
        context: ssl.SSLContext | None = None
        if parts.scheme in ("mqtts", "ssl") or tls_ca is not None or tls_cert is not None:
            try:
                context = ssl.create_default_context(cafile=str(tls_ca) if tls_ca else None)
                if tls_cert is not None:
                    context.load_cert_chain(str(tls_cert), str(tls_key) if tls_key else None)
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise OutputError(f"TLS setup failed: {exc}", target=url) from exc
        try:
            self._link = MqttPublisher(
                host=parts.hostname,
                port=parts.port or _PORTS[parts.scheme],
                client_id=client_id or f"linli-sim-{os.getpid()}",
                qos=qos,
                username=unquote(parts.username) if parts.username else None,
                password=unquote(parts.password) if parts.password else None,
                tls=context,
                keepalive=keepalive,
                max_inflight=max_inflight,
                connect_timeout=connect_timeout,
            )
        except MqttLinkError as exc:
            raise OutputError(exc.reason, target=url) from exc

    def publish(self, topic: str, payload: bytes) -> None:
        try:
            self._link.publish(topic, payload)
        except MqttLinkError as exc:
            raise OutputError(f"connection lost: {exc.reason}", target=self.target) from exc

    def idle(self, seconds: float) -> None:
        try:
            self._link.idle(seconds)
        except MqttLinkError as exc:
            raise OutputError(f"connection lost: {exc.reason}", target=self.target) from exc

    @property
    def in_flight(self) -> int:
        """Messages not yet written (QoS 0) or not yet acknowledged (QoS 1)."""
        return self._link.in_flight

    def close(self, *, timeout: float = 10.0) -> None:
        """Write every message (and at QoS 1 wait for its PUBACK), then disconnect.

        Messages that could not be delivered by then count as errors.
        """
        link = self._link
        try:
            link.drain(timeout)
        except MqttLinkError:
            pass  # what is left is counted below
        finally:
            self.errors += link.in_flight
            link.close()


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
