"""``[api]``: how ``linli cloud api`` listens, signs its tokens and bounds its answers.
deploy/cloud.example.toml and docs/api.md have every key."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from device_profiles.config_sources import HttpConfig, TimeZoneName


def _api_http() -> HttpConfig:
    return HttpConfig(address="127.0.0.1:8080")


class ApiConfig(BaseModel):
    """``[api]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: where the API (and its ``/healthz``, ``/metrics``, ``/docs``) listens
    http: HttpConfig = Field(default_factory=_api_http)
    #: the key that signs access tokens: a file of at least 32 random bytes, created (mode 0600)
    #: at the first start when missing; every API process of one deployment reads the same file
    token_key_file: Path = Path("api-token.key")
    access_token_ttl_s: Annotated[int, Field(ge=60, le=86_400)] = 900
    refresh_token_ttl_s: Annotated[int, Field(ge=600, le=90 * 86_400)] = 7 * 86_400
    #: failed logins allowed per account and per address within the window, then 429
    login_max_failures: Annotated[int, Field(ge=1)] = 5
    login_window_s: Annotated[int, Field(ge=10)] = 300
    #: most points (rows or buckets x metrics) one history answer holds; more is a 422 saying how
    #: to narrow the request
    max_points: Annotated[int, Field(ge=10, le=1_000_000)] = 10_000
    #: rolled-up hours each API process keeps in memory for hourly history (40 bytes each: the
    #: default is about 40 MB; cloud.api.hourly); 0: none, every series read from the database
    hourly_cache_hours: Annotated[int, Field(ge=0)] = 1_000_000
    #: IANA time zone of daily buckets when the request does not name one
    timezone: TimeZoneName = "Asia/Shanghai"
    #: roles that may send commands to devices (of their communities): docs/commands.md
    command_roles: tuple[str, ...] = ("grid_worker", "committee", "street", "district", "admin")
    #: database connections of one API process
    pool_min: Annotated[int, Field(ge=1)] = 2
    pool_max: Annotated[int, Field(ge=1)] = 10
    #: a request waits at most this long for a database connection, then 503 with Retry-After
    pool_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    #: answers of at least this many bytes are gzip-compressed for clients that accept it (the
    #: console on a phone's mobile data; the live feed never is); 0: never compressed
    gzip_min_bytes: Annotated[int, Field(ge=0)] = 1024

    #: how long a check that an account is enabled (or an API key not revoked) is trusted: a
    #: disabled account or a revoked key is refused within this time (0: checked on every request)
    auth_cache_s: Annotated[float, Field(ge=0, le=300)] = 5.0
    #: API processes sharing the port (each with its own connection pool)
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    #: the live feed looks for new incidents and changes this often
    live_poll_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    #: the live feed still sends an incident or change whose id committed after later ids did,
    #: if it commits within this time
    live_lookback_s: Annotated[float, Field(gt=0, le=600)] = 10.0
    #: an idle live feed sends a comment this often (proxies close silent connections)
    live_keepalive_s: Annotated[float, Field(gt=0, le=300)] = 15.0
    #: a live feed ends after this long (the client reconnects with Last-Event-ID and a fresh
    #: token), so a disabled account stops receiving within this time
    live_max_s: Annotated[float, Field(gt=0)] = 900.0
