"""``[commands]``: how ``linli cloud commands`` sends the outbox to the gateways and follows the
commands' progress. docs/commands.md has every key."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from device_profiles.config_sources import HttpConfig


def _commands_http() -> HttpConfig:
    return HttpConfig(address="127.0.0.1:9112")


class CommandsConfig(BaseModel):
    """``[commands]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: the MQTT client id of the sender (its session holds the progress reports while it is away)
    client_id: str = "linli-commands-1"
    #: a queued command the gateway has not reported stored is sent again after this long
    resend_s: Annotated[float, Field(gt=0)] = 30.0
    #: the outbox is looked at when a command is queued, and at least this often
    poll_interval_s: Annotated[float, Field(gt=0)] = 1.0
    #: commands published per round, at most
    max_per_round: Annotated[int, Field(ge=1)] = 500
    #: how long a PUBLISH may wait for its PUBACK before the round ends (sent again later)
    publish_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    backoff_base_s: Annotated[float, Field(gt=0)] = 0.5
    backoff_cap_s: Annotated[float, Field(gt=0)] = 5.0
    http: HttpConfig = Field(default_factory=_commands_http)
