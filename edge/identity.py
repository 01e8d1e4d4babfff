"""A gateway's topics and MQTT client ids, read off its configuration's ``gateway_id`` and
``community_id`` (a base of `edge.config.EdgeConfig` and of its copy in `edge.frozen`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from device_profiles.standard import (
    TOPIC_ALARM,
    TOPIC_COMMANDS,
    TOPIC_DOWN,
    TOPIC_STATUS,
    TOPIC_TELEMETRY,
    uplink_topic,
)


class GatewayIdentity:
    __slots__ = ()
    if TYPE_CHECKING:
        gateway_id: str
        community_id: str
        field: Any
        cloud: Any

    @property
    def up_topic(self) -> str:
        return uplink_topic(self.community_id, self.gateway_id, TOPIC_TELEMETRY)

    @property
    def alarm_topic(self) -> str:
        return uplink_topic(self.community_id, self.gateway_id, TOPIC_ALARM)

    @property
    def status_topic(self) -> str:
        return uplink_topic(self.community_id, self.gateway_id, TOPIC_STATUS)

    @property
    def down_topic(self) -> str:
        return uplink_topic(self.community_id, self.gateway_id, TOPIC_DOWN)

    @property
    def progress_topic(self) -> str:
        return uplink_topic(self.community_id, self.gateway_id, TOPIC_COMMANDS)

    @property
    def field_client_id(self) -> str:
        return str(self.field.client_id or f"linli-edge-{self.gateway_id}-field")

    @property
    def cloud_client_id(self) -> str:
        return str(self.cloud.client_id or f"linli-edge-{self.gateway_id}")
