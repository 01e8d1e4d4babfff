"""Finding devices the inventory does not list: heard on the field broker, or named by Zigbee2MQTT.

`Discovery` is called by the normaliser: `heard` for a decoded message from a device the
inventory does not know (`edge.pending` keeps it, with its first payload and profile), `bridge`
for a message on Zigbee2MQTT's ``bridge/devices`` topic (each paired device the inventory does
not list becomes a pending proposal, with the profile of its model). Both add to the intake, so
they are committed with the messages that carried them. A bridge message that is not a device list
is quarantined (``bad_bridge_message``) like any other input the agent cannot read.
"""

from __future__ import annotations

from device_profiles import ProfileSet, Reading
from device_profiles.zigbee2mqtt import bridge_devices, model_profiles, proposals
from edge.inventory import InventoryView
from edge.logs import get_logger
from edge.pending import PendingDevice
from edge.records import Intake, QuarantineEntry

_log = get_logger("edge.discovery")


class Discovery:
    """What to do with devices outside the inventory (see the module docstring)."""

    def __init__(
        self, *, profiles: ProfileSet, inventory: InventoryView, pending: bool, bridge_topic: str | None
    ) -> None:
        self.pending = pending
        self.bridge_topic = bridge_topic
        self.reload(profiles=profiles, inventory=inventory)

    def reload(self, *, profiles: ProfileSet, inventory: InventoryView) -> None:
        self.inventory = inventory
        self.by_model = model_profiles(profiles)

    def heard(self, reading: Reading, topic: str, payload: bytes, intake: Intake, now_us: int) -> None:
        """A decoded message from a device no gateway's inventory lists."""
        if not self.pending:
            return
        intake.add_pending(
            PendingDevice(
                device_id=reading.device_id,
                source="field",
                profile=reading.profile,
                device_type=reading.device_type,
                topic=topic,
                payload=payload,
                first_us=now_us,
                last_us=now_us,
                messages=1,
            )
        )

    def bridge(self, topic: str, payload: bytes, intake: Intake, now_us: int) -> None:
        """Zigbee2MQTT's device list: propose every paired device the inventory does not list."""
        try:
            devices = bridge_devices(payload)
        except ValueError as exc:  # msgspec's DecodeError and ValidationError are ValueErrors
            intake.quarantine.append(
                QuarantineEntry(
                    at_us=now_us,
                    topic=topic,
                    reason="bad_bridge_message",
                    message=f"not a Zigbee2MQTT device list: {exc}"[:500],
                    payload=payload,
                )
            )
            return
        found = 0
        for p in proposals(devices, self.by_model):
            if self.inventory.owner(p.device_id) is not None:
                continue  # listed already, here or for another gateway
            found += 1
            intake.add_pending(
                PendingDevice(
                    device_id=p.device_id,
                    source="zigbee2mqtt",
                    profile=p.profile,
                    device_type=p.device_type,
                    first_us=now_us,
                    last_us=now_us,
                    details={
                        "ieee_address": p.ieee_address,
                        "model": p.model,
                        "vendor": p.vendor,
                        "description": p.description,
                    },
                )
            )
        _log.info("zigbee2mqtt_devices", devices=len(devices), not_in_inventory=found)
