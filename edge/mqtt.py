"""A small asyncio driver over `paho.mqtt.client.Client`: the agent's link to the cloud broker.

The uplink must know exactly which PUBLISH a PUBACK answers, on which connection, and must not let
paho replay anything behind the buffer's back. So this module drives paho itself, the way aiomqtt
does: paho's socket
callbacks register the socket with the event loop (``add_reader``/``add_writer``), a misc task
calls ``loop_misc`` for keep-alives, and every paho callback runs on the event loop's thread.

One `MqttLink` is one logical connection (stable client id, MQTT v5, ``clean_start=False`` with a
Session Expiry Interval, so the broker keeps the session across restarts). `run()` connects and
reconnects with capped, jittered exponential backoff
(``delay = uniform(0, min(cap, base * 2**attempt))``) until `close()`. `hurry()` says something
urgent waits (an alarm): it ends the wait at once and caps the following delays at
``uniform(0, hurry_retry_s)`` until the link is up, so a link that waits out a long backoff does
not hold an alarm with it, while a link with nothing urgent keeps the full backoff and a fleet of
gateways does not hammer a recovering broker. Each connection attempt
uses a fresh paho client, so nothing paho queued for a dead connection is replayed behind the
agent's back: the agent's buffer is the only source of resends.

- `subscriptions` are made again on every connection; each message they bring goes to
  `on_message` and is acknowledged only by `ack()` (after the caller stored it; a message of an
  earlier connection is never acknowledged: the broker sends it again).
- `publish()` returns a future resolved on PUBACK (failed with `UplinkUnavailable` if the link
  drops first, `NegativeAck` for a failure reason code, `NoSubscribers` when the broker says no
  subscription matched).

The field side (subscribing, acknowledging after commit) is `edge.fieldlink`; `Message` and
`backoff_delay` here are shared with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.exception import MQTTException
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge.errors import MqttError, NegativeAck, NoSubscribers, UplinkUnavailable
from edge.logs import Logger, get_logger

if TYPE_CHECKING:
    from edge.config import BrokerConfig

#: The MQTT v5 PUBACK reason code "No matching subscribers" (0x10): accepted, delivered to nobody.
NO_MATCHING_SUBSCRIBERS: Final = 0x10

#: What paho's read and write paths can raise on a broken connection or a malformed packet from
#: the broker (each ends the connection; `run()` reconnects): socket and TLS errors (`OSError`);
#: paho's own `MQTTException` (bad properties); and, from its packet handlers on truncated or
#: out-of-range data, `struct.error`, `IndexError`, `KeyError` (an unknown reason code) and
#: `ValueError` (bad UTF-8 included).
_LINK_ERRORS: Final = (OSError, MQTTException, struct.error, LookupError, ValueError)


@dataclass(frozen=True, slots=True)
class Message:
    """One received PUBLISH. `epoch` identifies the connection that delivered it."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int
    epoch: int


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def link_options(config: BrokerConfig) -> dict[str, Any]:
    """The connection keywords of `MqttLink` and `edge.fieldlink.FieldLink` for a broker section."""
    tls = None
    if config.uses_tls:
        t = config.tls
        tls = tls_context(
            ca_cert=t.ca_cert if t else None,
            client_cert=t.client_cert if t else None,
            client_key=t.client_key if t else None,
        )
    return {
        "host": config.host,
        "port": config.port,
        "tls": tls,
        "username": config.username,
        "password": config.password.get_secret_value() if config.password else None,
        "keepalive_s": config.keepalive_s,
        "session_expiry_s": config.session_expiry_s,
        "connect_timeout_s": config.connect_timeout_s,
        "backoff_base_s": config.backoff_base_s,
        "backoff_cap_s": config.backoff_cap_s,
    }


def tls_context(
    *, ca_cert: Path | None = None, client_cert: Path | None = None, client_key: Path | None = None
) -> ssl.SSLContext:
    """A client TLS context: server verification against `ca_cert` (or the system's CAs), and a
    client certificate for mutual TLS when given."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_cert) if ca_cert else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if client_cert is not None and client_key is not None:
        ctx.load_cert_chain(str(client_cert), str(client_key))
    return ctx


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Capped, jittered exponential backoff ("full jitter")."""
    return rng.uniform(0, min(cap, base * 2 ** min(attempt, 32)))


class MqttLink:
    """One persistent-session MQTT v5 connection, reconnected until closed.

    Args:
        name: for logs (``field``, ``cloud``).
        host, port: the broker.
        client_id: stable across restarts: the broker keys the session on it.
        tls: a context from `tls_context`, or None for plain TCP.
        session_expiry_s: how long the broker keeps the session while we are away.
        will: the Last Will.
        max_inflight: paho's cap on our unacknowledged PUBLISHes.
        backoff_base_s, backoff_cap_s: reconnect delays; `rng` draws the jitter.
        hurry_retry_s: the cap on the delays after `hurry()`, until connected.
    """

    def __init__(
        self,
        *,
        name: str,
        host: str,
        port: int,
        client_id: str,
        tls: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
        keepalive_s: int = 30,
        session_expiry_s: int = 7 * 86400,
        will: Will | None = None,
        max_inflight: int = 64,
        connect_timeout_s: float = 10.0,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 60.0,
        hurry_retry_s: float = 1.0,
        subscriptions: Sequence[tuple[str, int]] = (),
        on_message: Callable[[Message], None] | None = None,
        rng: random.Random | None = None,
        log: Logger | None = None,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.client_id = client_id
        self._tls = tls
        self._username = username
        self._password = password
        self._keepalive = keepalive_s
        self._session_expiry = session_expiry_s
        self._will = will
        self._max_inflight = max_inflight
        self._connect_timeout = connect_timeout_s
        self._backoff_base = backoff_base_s
        self._backoff_cap = backoff_cap_s
        self._hurry_retry = hurry_retry_s
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._log = log or get_logger(f"edge.mqtt.{name}")
        self._subscriptions = list(subscriptions)
        self._on_message = on_message

        self._client: paho.Client | None = None
        self._fd = -1
        self._epoch = 0
        self._connected = asyncio.Event()
        self._gone = asyncio.Event()
        self._closing = False
        self._wake = asyncio.Event()
        self._hurried = False  # `hurry()` was called and the link has not connected since
        self._connack: asyncio.Future[bool] | None = None
        self._pending: dict[int, asyncio.Future[None]] = {}
        self.session_present = False
        self.connects = 0
        self._loop: asyncio.AbstractEventLoop

    # -- state ----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def epoch(self) -> int:
        """Increases with every connection attempt."""
        return self._epoch

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    @property
    def hurried(self) -> bool:
        """`hurry()` was called and the link has not connected since."""
        return self._hurried

    def hurry(self) -> None:
        """Something urgent waits: if the link is down, attempt to connect now, and then every
        ``uniform(0, hurry_retry_s)`` seconds until connected (the backoff applies again after
        that). Nothing happens while the link is up."""
        if self._hurried or self._closing or (self._connected.is_set() and not self._gone.is_set()):
            return  # (already hurried: the delays are short; a wake per alarm would spin)
        self._log.info("reconnect_hurried", broker=f"{self.host}:{self.port}")
        self._hurried = True
        self._wake.set()

    def next_delay(self, attempt: int) -> float:
        """The wait before the next connection attempt, after `attempt` failed ones in a row."""
        cap = min(self._backoff_cap, self._hurry_retry) if self._hurried else self._backoff_cap
        return backoff_delay(attempt, base=self._backoff_base, cap=cap, rng=self._rng)

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def wait_disconnected(self) -> None:
        await self._gone.wait()

    # -- the connection loop --------------------------------------------------------------

    async def run(self) -> None:
        """Connect, and reconnect after every loss, until `close()`."""
        self._loop = asyncio.get_running_loop()
        attempt = 0
        details: dict[str, str | int]
        while not self._closing:
            try:
                await self._connect_once()
            except MqttError as exc:
                event, details = "connect_failed", {"error": str(exc), "attempt": attempt}
            else:
                attempt = 0
                self._hurried = False
                misc = asyncio.get_running_loop().create_task(self._misc(), name=f"mqtt-{self.name}-misc")
                try:
                    await self._gone.wait()
                finally:
                    misc.cancel()
                    # gather: a cancel of this task landing meanwhile is not swallowed with misc's
                    for outcome in await asyncio.gather(misc, return_exceptions=True):
                        if isinstance(outcome, Exception):
                            raise outcome
                event, details = "connection_lost", {}
            self._teardown()
            if self._closing:
                break
            delay = self.next_delay(attempt)  # short if hurried, even during the attempt
            attempt += 1
            self._log.warning(
                event,
                broker=f"{self.host}:{self.port}",
                retry_in_s=round(delay, 3),
                hurried=self._hurried,
                **details,
            )
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _misc(self) -> None:
        while self._client is not None and self._client.loop_misc() == paho.MQTT_ERR_SUCCESS:  # noqa: ASYNC110
            await asyncio.sleep(1)
        self._gone.set()

    def _new_client(self) -> paho.Client:
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5,
            reconnect_on_failure=False,
            manual_ack=True,
        )
        client.max_inflight_messages_set(self._max_inflight)
        client.max_queued_messages_set(0)
        if self._tls is not None:
            client.tls_set_context(self._tls)
        if self._username is not None:
            client.username_pw_set(self._username, self._password)
        if self._will is not None:
            client.will_set(
                self._will.topic, self._will.payload, qos=self._will.qos, retain=self._will.retain
            )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_publish_received
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        return client

    async def _connect_once(self) -> None:
        loop = asyncio.get_running_loop()
        client = self._new_client()
        self._client = client
        # A new epoch before CONNECT: the broker redelivers unacknowledged messages right behind
        # the CONNACK, and their acks must go out on this connection.
        self._epoch += 1
        self._gone.clear()
        self._connack = loop.create_future()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._session_expiry
        try:
            # connect() blocks on the TCP connect and the TLS handshake: run it off the loop.
            await loop.run_in_executor(
                None,
                lambda: client.connect(
                    self.host, self.port, keepalive=self._keepalive, clean_start=False, properties=props
                ),
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise MqttError(
                f"cannot connect to {self.host}:{self.port}: {exc}", reason=type(exc).__name__
            ) from exc
        try:
            async with asyncio.timeout(self._connect_timeout):
                self.session_present = await asyncio.shield(self._connack)
        except TimeoutError as exc:
            raise MqttError(f"no CONNACK from {self.host}:{self.port} in {self._connect_timeout} s") from exc
        self.connects += 1
        if self._subscriptions:
            # Again on every connection: a session the broker lost has none.
            client.subscribe([(t, SubscribeOptions(qos=qos, noLocal=True)) for t, qos in self._subscriptions])
        self._connected.set()
        self._log.info(
            "connected",
            broker=f"{self.host}:{self.port}",
            client_id=self.client_id,
            session_present=self.session_present,
        )

    def _teardown(self) -> None:
        self._connected.clear()
        client, self._client = self._client, None
        if client is not None:
            # paho's private close (no DISCONNECT: the connection is gone or being given up).
            with contextlib.suppress(OSError):  # the socket may already be closed
                client._sock_close()
        self._fail_pending(UplinkUnavailable(f"connection to {self.host}:{self.port} lost"))
        if self._connack is not None and not self._connack.done():
            self._connack.cancel()

    def _fail_pending(self, exc: Exception) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)
                # Mark retrieved: a caller that gave up on the future must not log a warning.
                fut.exception()

    # -- paho callbacks (event loop thread, except the socket-open ones noted) ---------------

    def _on_connect(self, client: paho.Client, _u: Any, flags: Any, rc: ReasonCode, _p: Any) -> None:
        fut = self._connack
        if fut is None or fut.done() or client is not self._client:
            return
        if rc.is_failure:
            fut.set_exception(
                MqttError(f"{self.host}:{self.port} refused the connection: {rc}", reason=str(rc))
            )
            return
        fut.set_result(bool(flags.session_present))

    def _connack_lost(self, why: str) -> None:
        """The connection ended before its CONNACK: fail the attempt now, not at connect_timeout."""
        fut = self._connack
        if fut is not None and not fut.done():
            fut.set_exception(
                MqttError(f"{self.host}:{self.port} closed the connection before its CONNACK: {why}")
            )

    def _on_disconnect(self, client: paho.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if client is self._client:
            self._connack_lost(str(rc))
            self._gone.set()
            self._connected.clear()
            self._fail_pending(UplinkUnavailable(f"disconnected from {self.host}:{self.port}: {rc}"))

    def _on_publish(self, _c: paho.Client, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        fut = self._pending.pop(mid, None)
        if fut is None or fut.done():
            return
        if rc.is_failure:
            fut.set_exception(NegativeAck(mid, str(rc)))
        elif rc.value == NO_MATCHING_SUBSCRIBERS:
            fut.set_exception(NoSubscribers(mid, str(rc)))
        else:
            fut.set_result(None)

    def _on_publish_received(self, client: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        if client is not self._client:
            return
        if self._on_message is None:  # nothing subscribed: acknowledge and drop
            client.ack(msg.mid, msg.qos)
            return
        self._on_message(
            Message(
                topic=msg.topic,
                payload=bytes(msg.payload),
                qos=msg.qos,
                retain=bool(msg.retain),
                mid=msg.mid,
                epoch=self._epoch,
            )
        )

    def ack(self, message: Message) -> None:
        """Acknowledge a received message (after it is stored): only on the connection that
        delivered it (after a reconnect the broker sends it again, and its packet id may be
        another message's)."""
        client = self._client
        if client is not None and message.qos > 0 and message.epoch == self._epoch and self.connected:
            client.ack(message.mid, message.qos)

    def _on_socket_open(self, client: paho.Client, _u: Any, sock: Any) -> None:
        # Called from the executor thread running connect().
        self._loop.call_soon_threadsafe(self._add_reader, client, sock)

    def _add_reader(self, client: paho.Client, sock: Any) -> None:
        if client is not self._client or sock.fileno() < 0:
            return
        self._fd = sock.fileno()
        self._loop.add_reader(self._fd, self._readable, client)

    def _readable(self, client: paho.Client) -> None:
        # paho's own reads: CONNACK, PUBACKs, SUBACK, PINGRESPs, DISCONNECT and the subscribed PUBLISHes.
        # Under TLS a record can carry several packets, and what was decrypted beyond the ones
        # read waits in the SSL object where the selector cannot see it: read it now.
        try:
            rc = client.loop_read()
            sock = client.socket()
            while (
                rc == paho.MQTT_ERR_SUCCESS
                and client is self._client
                and isinstance(sock, ssl.SSLSocket)
                and sock.pending()
            ):
                rc = client.loop_read()
        except _LINK_ERRORS as exc:
            self._log.warning("read_failed", error=repr(exc))
            self._gone.set()

    def _on_socket_close(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        fd = sock.fileno()
        if fd > -1:
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)
        if fd == self._fd:
            self._fd = -1
            self._connack_lost("socket closed")

    def _on_socket_register_write(self, client: paho.Client, _u: Any, sock: Any) -> None:
        # May be called from the executor thread running connect().
        self._loop.call_soon_threadsafe(self._add_writer, client, sock)

    def _add_writer(self, client: paho.Client, sock: Any) -> None:
        if client is self._client and client.socket() is not None and sock.fileno() > -1:
            self._loop.add_writer(sock.fileno(), self._writable, client)

    def _writable(self, client: paho.Client) -> None:
        try:
            client.loop_write()
        except _LINK_ERRORS as exc:
            self._log.warning("write_failed", error=repr(exc))
            self._gone.set()

    def _on_socket_unregister_write(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        if sock.fileno() > -1:
            self._loop.remove_writer(sock.fileno())

    # -- the API --------------------------------------------------------------------------

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> asyncio.Future[None]:
        """Send one PUBLISH; the future resolves on its PUBACK (at once for QoS 0)."""
        client = self._client
        if client is None or not self.connected:
            raise UplinkUnavailable(f"not connected to {self.host}:{self.port}")
        info = client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise UplinkUnavailable(
                f"publish to {self.host}:{self.port} failed: {paho.error_string(info.rc)}"
            )
        fut: asyncio.Future[None] = self._loop.create_future()
        if qos == 0:
            fut.set_result(None)
        else:
            self._pending[info.mid] = fut
        return fut

    async def close(self, *, grace_s: float = 5.0) -> None:
        """Send DISCONNECT (the session stays on the broker), and stop `run()`."""
        self._closing = True
        self._wake.set()
        client = self._client
        if client is not None and self.connected:
            client.disconnect()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace_s):
                    await self._gone.wait()
        self._gone.set()
