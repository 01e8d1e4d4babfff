"""Commands down to the devices: from the cloud's ``.../down`` topic to the field broker, and each
command's fate back up.

One task (`Downlink.run`) owns the command queue (`edge.command_queue`, in the buffer) and works in
rounds, woken by a command from the cloud, a reading or a network acknowledgement it waits for, a
link coming up, or its next deadline:

1. **store**: the commands received from the cloud are kept (one row per command id: a resent
   command is the same command) in one buffer transaction, and only then acknowledged to the
   cloud broker; a message that is no command is quarantined (``bad_command``) and acknowledged.
2. **confirm**: a command sent with ``confirm: report`` is ``confirmed`` when the device's next
   report shows its effect (`device_profiles.commands.CONFIRMS`: ``lamp_on`` equal to ``on``;
   any report for a command without such a metric); one with ``confirm: network`` when the
   network acknowledges the downlink (ChirpStack's ``.../event/ack`` with ``acknowledged``: true;
   false fails it). Not confirmed ``commands.confirm_timeout_s`` after it was sent: ``failed``,
   with the last value the device reported.
3. **send**: the commands at the gateway, in the cloud's order, one device's commands strictly in
   order: past its time to live -> ``expired``; a device this gateway does not serve, or a
   profile that cannot carry the command -> ``failed`` with the reason; older than a command
   already sent to the device -> ``failed`` (superseded); otherwise encoded through the profile
   (the topic's variables from the device's last uplink topic: a device never heard since the
   gateway first started waits) and published on the field broker (QoS of the profile); its
   PUBACK makes it ``sent_to_device``.
4. **report**: every state the cloud has not acknowledged is published on ``.../commands``
   (`device_profiles.command_wire.CommandProgress`), oldest first, and marked heard on its PUBACK.

Every state change is a buffer transaction before it is reported, so a kill -9 loses no state
and a restart reports what the cloud did not hear.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec

from device_profiles import ProfileSet
from device_profiles.command_decode import topic_filter, topic_pattern
from device_profiles.command_encode import EncodedCommand, encode_command
from device_profiles.command_wire import (
    AT_GATEWAY,
    CONFIRMED,
    EXPIRED,
    FAILED,
    SENT_TO_DEVICE,
    CommandProgress,
    WireError,
    decode_down,
    encode,
)
from device_profiles.commands import CONFIRMS, CommandError
from edge import command_queue
from edge.buffer import Buffer
from edge.errors import BufferError_, MqttError
from edge.inventory import InventoryView
from edge.logs import get_logger
from edge.mqtt import Message, MqttLink
from edge.normalise import Normaliser

_log = get_logger("edge.downlink")

#: While anything is in flight, a round runs at least this often (seconds).
TICK_S: Final = 1.0
#: Progress reports published per round, at most.
REPORTS_PER_ROUND: Final = 200
_WAIT: Final = "wait"


class Downlink:
    """See the module docstring. `run` is the one task; the ``on_*`` methods are link callbacks."""

    def __init__(
        self,
        *,
        buffer: Buffer,
        cloud: MqttLink,
        field: MqttLink,
        normaliser: Normaliser,
        profiles: ProfileSet,
        inventory: InventoryView,
        gateway_id: str,
        progress_topic: str,
        confirm_timeout_s: float,
        publish_timeout_s: float,
        keep_s: float,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.buffer = buffer
        self.cloud = cloud
        self.field = field
        self.normaliser = normaliser
        self.gateway_id = gateway_id
        self.progress_topic = progress_topic
        self.confirm_timeout_us = int(confirm_timeout_s * 1_000_000)
        self.publish_timeout_s = publish_timeout_s
        self.keep_us = int(keep_s * 1_000_000)
        self.wall = wall
        self._inbox: list[Message] = []
        self._observed: list[tuple[str, dict[str, float]]] = []
        self._acks: list[tuple[str, bytes]] = []
        self._wake = asyncio.Event()
        self._topics: dict[str, str] = {}
        self._last: dict[str, dict[str, float]] = {}
        self._busy = True
        self.counters: dict[str, int] = {
            "commands_received": 0,
            "commands_sent_to_devices": 0,
            "commands_confirmed": 0,
            "commands_failed": 0,
            "commands_expired": 0,
            "command_reports_sent": 0,
        }
        self.reload(profiles=profiles, inventory=inventory)
        normaliser.observe = self.on_reading

    def reload(self, *, profiles: ProfileSet, inventory: InventoryView) -> None:
        self.profiles = profiles
        self.inventory = inventory
        acks = sorted(
            {
                spec.ack_topic
                for p in profiles.profiles.values()
                for spec in p.commands.values()
                if spec.ack_topic
            }
        )
        self._ack_patterns: list[re.Pattern[str]] = [topic_pattern(t) for t in acks]
        self.ack_filters = [topic_filter(t) for t in acks]
        self._ack_tails = frozenset(t.rpartition("/")[2] for t in acks)
        self._wake.set()

    # -- callbacks (event loop thread) -------------------------------------------------------

    def on_command(self, message: Message) -> None:
        """A message on the cloud link's ``.../down``: stored (then acknowledged) by the next round."""
        self._inbox.append(message)
        self._wake.set()

    def on_reading(self, device_id: str, metrics: Mapping[str, float]) -> None:
        """A reading of a device with a command waiting for its report (the normaliser calls)."""
        self._observed.append((device_id, dict(metrics)))
        self._wake.set()

    def is_ack(self, topic: str) -> bool:
        """Whether a field message is a network acknowledgement this task wants (`on_ack`)."""
        return bool(self._ack_tails) and topic.rpartition("/")[2] in self._ack_tails

    def on_ack(self, topic: str, payload: bytes) -> None:
        self._acks.append((topic, payload))
        self._wake.set()

    def on_link_up(self) -> None:
        self._wake.set()

    # -- the task ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Before the links start: the devices' topics, and the devices whose reports are awaited."""
        self._topics = await self.buffer.within("reading device topics", command_queue.topics)
        awaiting = await self.buffer.within("reading commands", command_queue.in_state, SENT_TO_DEVICE)
        self.normaliser.watched = frozenset(c.device_id for c in awaiting if c.confirm == "report")

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.round()
            except BufferError_ as exc:  # the buffer's state is shown by the agent; try again
                _log.error("command_queue_failed", error=str(exc))
                self._busy = True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK_S if self._busy else None):
                    await self._wake.wait()

    def _now_us(self) -> int:
        return int(self.wall() * 1_000_000)

    async def round(self) -> None:
        """One round: store, confirm, send, report (the module docstring)."""
        await self._store()
        await self._confirm()
        waiting = await self._send()
        unheard = await self._report()
        self._busy = waiting or unheard

    async def _store(self) -> None:
        inbox, self._inbox = self._inbox, []
        changes, self.normaliser.topic_changes = self.normaliser.topic_changes, {}
        if not inbox and not changes:
            return
        now_us = self._now_us()
        good, bad = [], []
        for message in inbox:
            try:
                good.append(decode_down(message.payload))
            except WireError as exc:
                bad.append((message, str(exc)))

        def write(conn: Any) -> list[str]:
            for message, why in bad:
                command_queue.quarantine(
                    conn, at_us=now_us, topic=message.topic, message=why, payload=message.payload
                )
            if changes:
                command_queue.remember_topics(conn, changes.items())
            return command_queue.store(conn, good, now_us)

        new = await self.buffer.within("storing commands", write)
        self._topics.update(changes)
        for message in inbox:
            self.cloud.ack(message)
        for message, why in bad:
            _log.warning("bad_command", topic=message.topic, error=why)
        if new:
            self.counters["commands_received"] += len(new)
            _log.info("commands_received", commands=len(new))

    async def _confirm(self) -> None:
        observed, self._observed = self._observed, []
        acks, self._acks = self._acks, []
        for device_id, metrics in observed:
            self._last.setdefault(device_id, {}).update(metrics)
        awaiting = await self.buffer.within("reading commands", command_queue.in_state, SENT_TO_DEVICE)
        awaiting = [c for c in awaiting if c.confirm != "none"]
        self.normaliser.watched = frozenset(c.device_id for c in awaiting if c.confirm == "report")
        if not awaiting:
            return
        now_us = self._now_us()
        changes: list[tuple[str, str, str | None]] = []
        acked = self._acked(acks, {c.device_id for c in awaiting if c.confirm == "network"})
        for c in awaiting:
            if c.confirm == "report":
                if any(device_id == c.device_id and self._shows(c, m) for device_id, m in observed):
                    changes.append((c.command_id, CONFIRMED, None))
                    continue
            elif acked.get(c.device_id):
                ok = acked[c.device_id].pop(0)
                changes.append(
                    (
                        c.command_id,
                        CONFIRMED if ok else FAILED,
                        None if ok else "the network says the device did not acknowledge it",
                    )
                )
                continue
            if c.sent_at_us is not None and now_us - c.sent_at_us >= self.confirm_timeout_us:
                changes.append((c.command_id, FAILED, self._unconfirmed(c)))
        await self._set(changes, now_us)

    @staticmethod
    def _shows(c: command_queue.QueuedCommand, metrics: Mapping[str, float]) -> bool:
        shown = CONFIRMS.get(c.name)
        if shown is None:
            return True  # the device's next report, whatever it says
        metric, param = shown
        return metric in metrics and metrics[metric] == float(c.params[param])

    def _unconfirmed(self, c: command_queue.QueuedCommand) -> str:
        seconds = self.confirm_timeout_us // 1_000_000
        shown = CONFIRMS.get(c.name)
        if c.confirm == "network":
            return f"the network did not acknowledge it within {seconds} s"
        if shown is None:
            return f"no report from the device within {seconds} s"
        metric, param = shown
        last = self._last.get(c.device_id, {}).get(metric)
        seen = "no report" if last is None else f"its last report says {metric} {last:g}"
        return f"not confirmed within {seconds} s: {seen}, not {param} {c.params[param]}"

    def _acked(self, acks: list[tuple[str, bytes]], devices: set[str]) -> dict[str, list[bool]]:
        """The network acknowledgements per device (in order), of devices that wait for one."""
        out: dict[str, list[bool]] = {}
        for topic, payload in acks:
            found = next((m for p in self._ack_patterns if (m := p.match(topic)) is not None), None)
            if found is None:
                continue
            device = next((v for v in found.groupdict().values() if v in devices), None)
            if device is None:
                continue
            try:
                doc = msgspec.json.decode(payload)
            except msgspec.DecodeError:
                _log.warning("bad_ack", topic=topic)
                continue
            out.setdefault(device, []).append(isinstance(doc, dict) and doc.get("acknowledged") is True)
        return out

    async def _set(self, changes: list[tuple[str, str, str | None]], now_us: int) -> None:
        if not changes:
            return

        def write(conn: Any) -> list[tuple[str, str, str | None]]:
            return [c for c in changes if command_queue.set_state(conn, c[0], c[1], now_us, c[2])]

        for command_id, state, reason in await self.buffer.within("updating commands", write):
            key = {CONFIRMED: "commands_confirmed", FAILED: "commands_failed", EXPIRED: "commands_expired"}
            if state in key:
                self.counters[key[state]] += 1
            _log.info("command_" + state, command_id=command_id, reason=reason or "")

    async def _send(self) -> bool:
        """Send what can go; True when some command is still waiting at the gateway or for a
        confirmation (the next round comes in `TICK_S`)."""
        queued = await self.buffer.within("reading commands", command_queue.in_state, AT_GATEWAY)
        held: set[str] = set()
        waiting = bool(self.normaliser.watched)
        for c in queued:
            if c.device_id in held:
                continue
            now_us = self._now_us()
            outcome = await self._prepare(c, now_us)
            if not isinstance(outcome, EncodedCommand):
                if outcome == _WAIT:
                    held.add(c.device_id)
                    waiting = True
                else:
                    await self._set([(c.command_id, *outcome)], now_us)
                continue
            if not self.field.connected:
                held.add(c.device_id)
                waiting = True
                continue
            if c.confirm == "report":  # watched before it goes: a quick answer is not missed
                self.normaliser.watched |= {c.device_id}
            try:
                async with asyncio.timeout(self.publish_timeout_s):
                    await self.field.publish(outcome.topic, outcome.payload, qos=outcome.qos)
            except (MqttError, TimeoutError) as exc:
                _log.warning("command_not_published", command_id=c.command_id, error=repr(exc))
                held.add(c.device_id)
                waiting = True
                continue
            await self._set([(c.command_id, SENT_TO_DEVICE, None)], self._now_us())
            self.counters["commands_sent_to_devices"] += 1
            waiting = waiting or c.confirm != "none"
        return waiting

    async def _prepare(
        self, c: command_queue.QueuedCommand, now_us: int
    ) -> EncodedCommand | tuple[str, str] | str:
        if c.expires_at_us <= now_us:
            return EXPIRED, "its time to live passed while the device or the field broker was unreachable"
        device = self.inventory.get(c.device_id)
        if device is None:
            return FAILED, f"device {c.device_id} is not in gateway {self.gateway_id}'s inventory"
        profile = self.profiles.profiles.get(device.profile)
        if profile is None:
            return FAILED, f"profile {device.profile} is not loaded on gateway {self.gateway_id}"
        newest = await self.buffer.within("reading commands", command_queue.newest_sent, c.device_id)
        if newest > c.seq:
            return FAILED, "superseded: a newer command reached the device first"
        topic = self._topics.get(c.device_id)
        topic_vars: dict[str, str] = {}
        if topic is not None:
            for pattern in profile.topics:
                found = topic_pattern(pattern).match(topic)
                if found is not None:
                    topic_vars = found.groupdict()
                    break
        try:
            return encode_command(profile, c.device_id, c.name, c.params, topic_vars=topic_vars)
        except CommandError as exc:
            if topic is None and "topic needs" in str(exc):
                return _WAIT  # no uplink from it yet: its topic's variables are unknown
            return FAILED, str(exc)

    async def _report(self) -> bool:
        """Publish the states the cloud has not heard; True when some remain."""
        if not self.cloud.connected:
            return bool(await self.buffer.within("reading commands", command_queue.unreported, 1))
        rows = await self.buffer.within("reading commands", command_queue.unreported, REPORTS_PER_ROUND)
        if not rows:
            return False
        sent: list[tuple[int, asyncio.Future[None]]] = []
        for row in rows:
            report = CommandProgress(
                gateway_id=self.gateway_id,
                command_id=row.command_id,
                state=row.state,
                at_us=row.at_us,
                reason=row.reason,
            )
            try:
                sent.append((row.id, self.cloud.publish(self.progress_topic, encode(report))))
            except MqttError:
                break
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.publish_timeout_s):
                await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
        heard = [i for i, fut in sent if fut.done() and not fut.cancelled() and fut.exception() is None]
        if heard:

            def write(conn: Any) -> None:
                command_queue.mark_reported(conn, heard)
                command_queue.prune(conn, self._now_us() - self.keep_us)

            await self.buffer.within("recording reports", write)
            self.counters["command_reports_sent"] += len(heard)
        return len(heard) < len(rows) or len(rows) == REPORTS_PER_ROUND

    def snapshot(self) -> dict[str, int]:
        return dict(self.counters)
