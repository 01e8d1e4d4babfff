"""The broker side of the ingest: one paho-mqtt 2 client with manual acknowledgement.

MQTT v5, a stable client id, ``clean_start=False`` and a session expiry, so the broker keeps our
subscriptions and every unacknowledged message while we are away. The broker hands us at most
``receive_maximum`` unacknowledged QoS 1 messages: that, not a queue we could overfill, bounds the
memory the ingest holds while the database is down.

paho's network thread (``loop_start``) calls `on_message` for each PUBLISH; the PUBACK goes out only
when the writer calls `ack` after its transaction committed. Messages carry the connection
`generation` they arrived on: after a reconnect the broker resends what was unacknowledged (same
packet ids), so an ack for an older generation is never sent (it could acknowledge a different
message that reuses the packet id).
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from cloud.config import MqttConfig
from device_profiles.standard import TOPIC_ALARM, TOPIC_STATUS, TOPIC_TELEMETRY, uplink_filter

log = logging.getLogger("linli.cloud.mqtt")

UP_FILTER = uplink_filter(TOPIC_TELEMETRY)
ALARM_FILTER = uplink_filter(TOPIC_ALARM)
STATUS_FILTER = uplink_filter(TOPIC_STATUS)


@dataclass(frozen=True, slots=True)
class Inbound:
    """One PUBLISH as received: acknowledged later with (`mid`, `qos`) if `generation` is current."""

    topic: str
    payload: bytes
    qos: int
    mid: int
    generation: int
    received_at: datetime


class Consumer:
    """Subscribes to the uplink (shared) and status topics and delivers messages to `on_message`.

    `on_message` runs on paho's network thread; it may block briefly (the broker then waits).
    """

    def __init__(
        self,
        *,
        config: MqttConfig,
        on_message: Callable[[Inbound], None],
        on_state: Callable[[bool], None] | None = None,
        filters: Sequence[str] | None = None,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        #: the uplink batches (shared among the workers) and the gateways' statuses, by default
        self._filters = (
            list(filters) if filters else [f"$share/{config.share_group}/{UP_FILTER}", STATUS_FILTER]
        )
        self._on_message = on_message
        self._on_state = on_state
        self._wall = wall
        self.generation = 0
        self.connected = False
        #: Set when the broker granted the subscriptions of the current connection.
        self.subscribed = threading.Event()
        self.acks = 0
        self._closing = False
        self._lock = threading.Lock()
        self._refused: dict[int, str] = {}
        self._client = self._new_client()

    @property
    def filters(self) -> list[str]:
        return list(self._filters)

    def _new_client(self) -> paho.Client:
        c = self.config
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=c.client_id, protocol=paho.MQTTv5, manual_ack=True
        )
        # 0.1 s, doubling to 0.5 s at most: the ingest is the only reader of every alarm, and while
        # it is away after a broker restart the broker delivers uplink batches to nobody (the edge
        # keeps and resends them every 0.2 s), so an SOS pressed then waits for this reconnect; a
        # handful of ingest workers retrying twice a second costs the broker nothing. (paho's hint
        # says int; its wait takes float seconds.)
        client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]
        if c.username is not None:
            client.username_pw_set(c.username, c.password.get_secret_value() if c.password else None)
        if c.tls is not None or c.url.startswith("mqtts://"):
            ctx = ssl.create_default_context(cafile=str(c.tls.ca_cert) if c.tls else None)
            if c.tls is not None and c.tls.client_cert is not None and c.tls.client_key is not None:
                ctx.load_cert_chain(str(c.tls.client_cert), str(c.tls.client_key))
            client.tls_set_context(ctx)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_subscribe = self._handle_subscribe
        client.on_publish = self._handle_publish
        return client

    def start(self) -> None:
        """Connect in the background (paho retries until the broker answers) and start the loop."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.config.session_expiry_s
        props.ReceiveMaximum = self.config.receive_maximum
        self._client.connect_async(
            self.config.host,
            self.config.port,
            keepalive=self.config.keepalive_s,
            clean_start=False,
            properties=props,
        )
        self._client.loop_start()

    def ack(self, items: Iterable[Inbound]) -> int:
        """Send PUBACKs for messages of the current connection; returns how many were sent."""
        sent = 0
        with self._lock:
            generation = self.generation if self.connected else -1
        for item in items:
            if item.qos > 0 and item.generation == generation:
                self._client.ack(item.mid, item.qos)
                sent += 1
        self.acks += sent
        return sent

    def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> paho.MQTTMessageInfo:
        """Send one PUBLISH on this connection (`wait_for_publish` on the answer waits for its PUBACK;
        then `refusal` says whether the broker refused it); a connection lost first fails it: the
        caller sends again."""
        return self._client.publish(topic, payload, qos=qos)

    def refusal(self, mid: int) -> str | None:
        """The reason the broker gave in the PUBACK of PUBLISH `mid` for refusing it (not
        authorised, ...), or None: accepted (or not answered yet)."""
        with self._lock:
            return self._refused.pop(mid, None)

    def _handle_publish(self, _c: paho.Client, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        if rc.is_failure:
            with self._lock:
                self._refused[mid] = str(rc)

    def stop(self) -> None:
        """Disconnect (after the PUBACKs already queued) and stop paho's thread."""
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()
        self._set_state(False)

    def _set_state(self, up: bool) -> None:
        with self._lock:
            changed = up != self.connected
            self.connected = up
        if changed and self._on_state is not None:
            self._on_state(up)

    # -- paho callbacks (paho's network thread) -------------------------------------------------

    def _handle_connect(self, client: paho.Client, _u: Any, flags: Any, rc: ReasonCode, _p: Any) -> None:
        if rc.is_failure:
            log.error("broker %s refused the connection: %s", self.config.url, rc)
            return
        with self._lock:
            self.generation += 1
        self.subscribed.clear()
        opts = SubscribeOptions(qos=1)
        client.subscribe([(f, opts) for f in self.filters])
        log.info(
            "connected to broker %s as %s (session present: %s)",
            self.config.url,
            self.config.client_id,
            bool(flags.session_present),
        )
        self._set_state(True)

    def _handle_disconnect(self, _c: paho.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if self.connected and not self._closing:
            log.warning("disconnected from broker %s: %s (reconnecting)", self.config.url, rc)
        self.subscribed.clear()
        self._set_state(False)

    def _handle_subscribe(
        self, _c: paho.Client, _u: Any, _mid: int, codes: list[ReasonCode], _p: Any
    ) -> None:
        failed = [str(c) for c in codes if c.is_failure]
        if failed:
            log.error("broker refused subscriptions %s: %s", self.filters, ", ".join(failed))
            return
        log.info("subscribed to %s", ", ".join(self.filters))
        self.subscribed.set()

    def _handle_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        self._on_message(
            Inbound(
                topic=msg.topic,
                payload=bytes(msg.payload),
                qos=msg.qos,
                mid=msg.mid,
                generation=self.generation,
                received_at=self._wall(),
            )
        )
