"""``[notify]``: the channels pushes go through and how the sender delivers them.

    [notify.channels.c01-grid]         # a name the people file's ladders refer to
    kind = "wecom"                     # wecom | dingtalk | feishu | webhook | email
    url = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=..."
    pii = "masked"                     # how residents appear: full | masked | none

docs/notify.md has every key and each vendor's set-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from device_profiles.config_sources import HttpConfig

ChannelKind = Literal["wecom", "dingtalk", "feishu", "webhook", "email"]

#: Each vendor's documented limits: (messages per minute, per second) per robot.
VENDOR_LIMITS: Final[dict[str, tuple[int | None, int | None]]] = {
    "wecom": (20, None),
    "dingtalk": (20, None),
    "feishu": (100, 5),
    "webhook": (None, None),
    "email": (None, None),
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChannelConfig(_Section):
    """One destination: a group robot, a webhook receiver or a mailbox."""

    kind: ChannelKind
    #: wecom: the robot's webhook URL with ``key``; dingtalk: with ``access_token``; feishu: the
    #: hook URL; webhook: the receiver's URL
    url: str | None = None
    #: dingtalk and feishu: the signing secret; webhook: the HMAC key of ``X-Linli-Signature``
    secret: SecretStr | None = None
    #: dingtalk: the robot's keyword rule (put in every message that lacks it)
    keyword: str | None = None
    format: Literal["text", "markdown"] = "text"
    #: residents in messages: ``full`` (id and room), ``masked`` (c0****07, no room), ``none``
    pii: Literal["full", "masked", "none"] = "masked"
    #: the robot's limits (default: the vendor's), mirrored by the sender so it is never refused
    per_minute: Annotated[int, Field(ge=1)] | None = None
    per_second: Annotated[int, Field(ge=1)] | None = None
    #: of `per_minute`, messages kept for critical incidents: minor ones beyond the rest are merged
    #: into digests, so an SOS never waits behind them
    reserve_critical: Annotated[int, Field(ge=0)] = 5
    timeout_s: Annotated[float, Field(gt=0)] = 10.0
    #: a private CA to trust for this destination (an intranet receiver or mail relay); the
    #: system's CAs otherwise
    ca_cert: Path | None = None
    # email
    smtp_host: str | None = None
    smtp_port: Annotated[int, Field(ge=1, le=65535)] = 587
    #: ``starttls`` (port 587), ``tls`` (implicit, port 465) or ``none`` (a local relay only)
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    sender: str | None = None
    #: addresses that receive every message of this channel (besides the recipients' own)
    to: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.kind == "email":
            missing = [k for k in ("smtp_host", "sender") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"an email channel needs {' and '.join(missing)}")
        elif not self.url:
            raise ValueError(f"a {self.kind} channel needs url")
        if self.kind == "dingtalk" and self.secret is None:
            raise ValueError("a dingtalk channel needs secret (the robot's signing secret)")
        if self.kind == "webhook" and self.secret is None:
            raise ValueError("a webhook channel needs secret (the key of X-Linli-Signature)")
        limit = self.minute_limit
        if limit is not None and self.reserve_critical >= limit:
            raise ValueError(f"reserve_critical ({self.reserve_critical}) must be below the limit ({limit})")
        return self

    @property
    def minute_limit(self) -> int | None:
        return self.per_minute if self.per_minute is not None else VENDOR_LIMITS[self.kind][0]

    @property
    def second_limit(self) -> int | None:
        return self.per_second if self.per_second is not None else VENDOR_LIMITS[self.kind][1]


def _notify_http() -> HttpConfig:
    return HttpConfig(address="127.0.0.1:9111")


class NotifyConfig(_Section):
    """``[notify]``: ``linli cloud notify`` delivers the outbox through these channels."""

    channels: dict[str, ChannelConfig] = Field(default_factory=dict)
    #: retries after a failure: capped, jittered exponential backoff
    retry_base_s: Annotated[float, Field(gt=0)] = 1.0
    retry_cap_s: Annotated[float, Field(gt=0)] = 60.0
    #: a notification still not delivered this long after it was owed is given up (and logged)
    give_up_after_s: Annotated[float, Field(gt=0)] = 86400.0
    #: the outbox is read at once on a notification, and at least this often
    poll_interval_s: Annotated[float, Field(gt=0)] = 2.0
    backoff_base_s: Annotated[float, Field(gt=0)] = 0.5
    backoff_cap_s: Annotated[float, Field(gt=0)] = 5.0
    http: HttpConfig = Field(default_factory=_notify_http)
