"""Simulated devices obey commands: a listener on the field broker for every command topic of the
fleet's dialects, and what the simulation does with what it hears.

`CommandListener` subscribes (paho, its own thread) to the command topics of the profiles the
fleet's devices use (``application/+/device/+/command/down``, ``nbiot/+/down``, ...), decodes
each message back to the canonical command with the device's own profile
(`device_profiles.command_decode`), and queues it. The run loop (`simulators.runner`) hands the
queue to `Simulation.obey` at the current simulated time: the device's model acts
(`simulators.behaviour.base.Behaviour.command`: a lamp switches and dims and reports at once, a
button acknowledges), ``configure`` changes the report interval, a confirmed LoRaWAN downlink is
acknowledged as ChirpStack does (``.../event/ack`` with ``acknowledged: true``), and the ground
truth gets a ``command`` record with the effect.

A message that is no command of the device's profile, or for a device the fleet lacks, is counted
(``refused``) and otherwise ignored, as a real device ignores a frame it does not understand.
"""

from __future__ import annotations

import collections
import threading
import uuid
from typing import Any, NamedTuple

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from device_profiles import ProfileSet
from device_profiles.command_decode import DecodedCommand, decode_command, topic_filter, topic_pattern
from device_profiles.inventory import Inventory
from device_profiles.model import Profile


class Heard(NamedTuple):
    """One command as the device received it."""

    topic: str
    profile: Profile
    command: DecodedCommand


class CommandListener:
    """Subscribes to the fleet's command topics on `host`:`port`; `take()` empties the queue."""

    def __init__(self, *, inventory: Inventory, profiles: ProfileSet, host: str, port: int) -> None:
        self._profiles: dict[str, Profile] = {}
        for device in inventory:
            profile = profiles.profiles.get(device.profile)
            if profile is not None and profile.commands:
                self._profiles[device.device_id] = profile
        used = {p.id: p for p in self._profiles.values()}
        self.filters = sorted({topic_filter(s.topic) for p in used.values() for s in p.commands.values()})
        self._by_pattern = [(topic_pattern(s.topic), p) for p in used.values() for s in p.commands.values()]
        self._queue: collections.deque[Heard] = collections.deque()
        self.refused = 0
        self.subscribed = threading.Event()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"linli-sim-commands-{uuid.uuid4().hex[:8]}",
            protocol=paho.MQTTv5,
        )
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *_a: self.subscribed.set()
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(1, 5)
        self._host, self._port = host, port

    def start(self, *, timeout: float = 10.0) -> bool:
        """Connect and subscribe; returns whether the subscription was granted within `timeout`."""
        if not self.filters:
            return True
        self._client.connect_async(self._host, self._port)
        self._client.loop_start()
        return self.subscribed.wait(timeout)

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def pending(self) -> bool:
        return bool(self._queue)

    def take(self) -> list[Heard]:
        out = []
        while self._queue:
            out.append(self._queue.popleft())
        return out

    def _on_connect(self, client: paho.Client, *_a: Any) -> None:
        if self.filters:
            client.subscribe([(f, 1) for f in self.filters])

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        payload = bytes(msg.payload)
        for pattern, profile in self._by_pattern:
            if pattern.match(msg.topic) is None:
                continue
            decoded = decode_command(profile, msg.topic, payload)
            if decoded is not None and self._profiles.get(decoded.device_id) is profile:
                self._queue.append(Heard(msg.topic, profile, decoded))
                return
        self.refused += 1

    def inject(self, heard: Heard) -> None:
        """Queue a command as if heard (tests, and a run without a broker)."""
        self._queue.append(heard)
