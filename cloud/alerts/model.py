"""Values the alert service passes around (msgspec structs: immutable, cheap to decode).

The contract between the parts of `cloud.alerts`: the feed gives `GatewayObservation` s beside
the envelopes, `cloud.alerts.directory` builds the `Directory` of what is installed, the engine
(`cloud.alerts.engine`) turns feed rows and the passing of time into `Action` s, and the ledger
(`cloud.alerts.ledger`) writes those as incidents in the transaction that also saves the engine's
state and the checkpoint.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Severity = Literal["critical", "major", "minor", "info"]
SubjectKind = Literal["device", "resident", "gateway"]
#: ``fire``: the condition began (opens an incident, or adds an occurrence to the open one and
#: un-clears it); ``repeat``: a repeat trigger of a condition still firing or latched (an
#: occurrence); ``clear``: a non-latched condition is over (``cleared_at``).
ActionKind = Literal["fire", "repeat", "clear", "note"]


class GatewayObservation(msgspec.Struct, frozen=True):
    """One gateway status document the ingest received (``at_us``: its arrival, Unix us)."""

    community_id: str
    gateway_id: str
    state: str
    at_us: int


class Evidence(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A reading, event or observation behind an action (``time_us``: device time, Unix us)."""

    time_us: int
    device_id: str | None = None
    gateway_id: str | None = None
    metric: str | None = None
    event: str | None = None
    value: float | str | None = None
    note: str | None = None


class Action(msgspec.Struct, frozen=True, kw_only=True):
    """What the engine decided: the ledger writes it, nothing else interprets it."""

    kind: ActionKind
    rule: str
    #: the incident key with `rule`: a device id, resident id or gateway id
    subject: str
    subject_kind: SubjectKind
    severity: Severity
    latched: bool
    community_id: str
    gateway_id: str | None
    device_id: str | None
    resident_id: str | None
    title_zh: str
    title_en: str
    detail_zh: str
    detail_en: str
    #: when the condition began (device time, Unix us)
    started_us: int
    #: engine time of this action (fire, repeat or clear), Unix us
    at_us: int
    evidence: tuple[Evidence, ...] = ()
    #: a fire's command to the device (the rule's ``command``, the device's profile carrying it)
    command: RuleCommandOut | None = None


class RuleCommandOut(msgspec.Struct, frozen=True, kw_only=True):
    """A command a fire sends its device: written to the commands outbox with the incident."""

    name: str
    params: dict[str, bool | int | str]
    confirm: str
    ttl_s: int


class DeviceInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One installed device as the rules see it (from the inventory and the profiles)."""

    device_id: str
    device_type: str
    profile: str
    community_id: str
    gateway_id: str
    report_interval_s: float
    lat: float
    lon: float
    resident_id: str | None = None
    living_alone: bool = False
    building: str | None = None
    unit: str | None = None
    room: str | None = None


class Community(msgspec.Struct, frozen=True, kw_only=True):
    """A community: where it is (for the sun) and its local time zone (for active hours)."""

    community_id: str
    lat: float
    lon: float
    timezone: str


class Directory(msgspec.Struct, frozen=True, kw_only=True):
    """What is installed: devices by id, communities by id, and each profile's report interval
    (for devices the inventory does not list: their readings name their profile)."""

    devices: dict[str, DeviceInfo]
    communities: dict[str, Community]
    profile_intervals: dict[str, float]
    default_timezone: str = "Asia/Shanghai"
    #: profile -> the commands its dialect carries -> how each is confirmed (a rule's ``command``)
    profile_commands: dict[str, dict[str, str]] = {}
