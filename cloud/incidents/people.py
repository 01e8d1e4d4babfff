"""Who works incidents: staff with roles scoped to communities, each community's escalation
ladder, SLA targets, and residents' emergency contacts. One YAML file (``[incidents] people``),
validated at start like the rule files: every problem with its key.

    version: 1
    defaults:
      deadline_s: {critical: 120, major: 600, minor: 1800}   # per ladder level, to accept
      remind_every_s: {critical: 120, major: 600, minor: 1800}
      targets: {critical: {accept_s: 120, handle_s: 1800, close_s: 14400}}
      auto_close_quiet_s: 1800
    staff:
      - {id: w-zhang, name: 张伟, roles: [grid_worker], communities: [c01], mobile: "13800000001"}
    communities:
      c01:
        name: 阳光小区
        ladder:
          - {name: 网格员, staff: [w-zhang], channels: [c01-grid]}
          - {name: 居委会, staff: [k-li], channels: [c01-committee]}
          - {name: 街道办, staff: [s-wang], channels: [street]}
        doctors: [d-chen]
    contacts:
      c01-r0007:
        - {name: 李娜, relation: family, mobile: "13900000002", channel: family-sms}

docs/incidents.md documents every key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self, TypeVar

import msgspec.yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from cloud.alerts.model import Severity
from cloud.errors import ConfigError
from cloud.incidents.workflow import Role
from device_profiles.config_sources import error_detail
from device_profiles.config_view import ConfigProblem

_T = TypeVar("_T")

#: Any community: a staff member of the district or an administrator.
ALL_COMMUNITIES: Final = "*"

_Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]
_Mobile = Annotated[str, Field(pattern=r"^\+?[0-9]{5,15}$")]
_Seconds = Annotated[float, Field(gt=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Staff(_Model):
    id: _Id
    name: Annotated[str, Field(min_length=1)]
    roles: Annotated[tuple[Role, ...], Field(min_length=1)]
    #: community ids, or ``"*"`` for all of them
    communities: Annotated[tuple[str, ...], Field(min_length=1)]
    mobile: _Mobile | None = None
    email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")] | None = None
    #: a channel that reaches this person alone (email, an SMS gateway's webhook); without it a
    #: person is reached through the channels of the ladder levels they are on
    channel: str | None = None

    def serves(self, community_id: str) -> bool:
        return ALL_COMMUNITIES in self.communities or community_id in self.communities


class Contact(_Model):
    """A resident's emergency contact, told at the first step of an SOS."""

    name: Annotated[str, Field(min_length=1)]
    relation: Literal["family", "neighbour", "other"] = "family"
    mobile: _Mobile | None = None
    email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")] | None = None
    #: the channel name (``[notify.channels]``) that reaches this person
    channel: Annotated[str, Field(min_length=1)]


class Targets(_Model):
    """SLA targets of one severity, from detection (seconds)."""

    accept_s: _Seconds
    handle_s: _Seconds
    close_s: _Seconds


class Level(_Model):
    """One rung of a ladder: who is told, through which channels, and how long they have."""

    name: Annotated[str, Field(min_length=1)]
    staff: Annotated[tuple[_Id, ...], Field(min_length=1)]
    channels: Annotated[tuple[str, ...], Field(min_length=1)]
    #: per severity, overriding ``defaults.deadline_s`` for this level
    deadline_s: dict[Severity, _Seconds] = Field(default_factory=dict)


class CommunityPeople(_Model):
    name: Annotated[str, Field(min_length=1)]
    ladder: Annotated[tuple[Level, ...], Field(min_length=3, max_length=4)]
    #: staff ids of the community's doctors (told at the first step of an SOS)
    doctors: tuple[_Id, ...] = ()
    targets: dict[Severity, Targets] = Field(default_factory=dict)
    auto_close_quiet_s: _Seconds | None = None


def _default_deadlines() -> dict[Severity, float]:
    return {"critical": 120.0, "major": 600.0, "minor": 1800.0}


def _default_targets() -> dict[Severity, Targets]:
    return {
        "critical": Targets(accept_s=120, handle_s=1800, close_s=4 * 3600),
        "major": Targets(accept_s=600, handle_s=4 * 3600, close_s=86400),
        "minor": Targets(accept_s=1800, handle_s=86400, close_s=3 * 86400),
        "info": Targets(accept_s=86400, handle_s=3 * 86400, close_s=7 * 86400),
    }


class Defaults(_Model):
    #: seconds a ladder level has to accept before the next is told, per severity; a severity
    #: missing here (``info`` by default) tells the first level only and never escalates
    deadline_s: dict[Severity, _Seconds] = Field(default_factory=_default_deadlines)
    #: how often the top level is reminded until someone accepts (default: its deadline)
    remind_every_s: dict[Severity, _Seconds] = Field(default_factory=dict)
    targets: dict[Severity, Targets] = Field(default_factory=_default_targets)
    #: a cleared, non-latched incident nobody accepted closes itself after this quiet time
    auto_close_quiet_s: _Seconds = 1800.0

    @field_validator("deadline_s", "targets", mode="before")
    @classmethod
    def _over_the_defaults(cls, value: object, info: ValidationInfo) -> object:
        """A partial table changes the severities it names; the others keep their defaults."""
        if not isinstance(value, dict):
            return value
        base = _default_deadlines() if info.field_name == "deadline_s" else _default_targets()
        return {**base, **value}


class People(_Model):
    version: Literal[1] = 1
    defaults: Defaults = Defaults()
    staff: tuple[Staff, ...] = ()
    communities: dict[str, CommunityPeople] = Field(default_factory=dict)
    #: resident id -> emergency contacts
    contacts: dict[str, tuple[Contact, ...]] = Field(default_factory=dict)

    _by_id: dict[str, Staff] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems = _cross_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        self._by_id.update((s.id, s) for s in self.staff)
        return self

    # -- queries ------------------------------------------------------------------------------

    def member(self, staff_id: str) -> Staff | None:
        return self._by_id.get(staff_id)

    def deadline_s(self, community_id: str, level: int, severity: str) -> float | None:
        """Seconds ladder `level` (1-based) has to accept; None: the ladder does not go on."""
        ladder = self.communities[community_id].ladder
        own = _by_severity(ladder[level - 1].deadline_s, severity)
        return own if own is not None else _by_severity(self.defaults.deadline_s, severity)

    def remind_every_s(self, community_id: str, severity: str) -> float | None:
        every = _by_severity(self.defaults.remind_every_s, severity)
        if every is not None:
            return float(every)
        return self.deadline_s(community_id, len(self.communities[community_id].ladder), severity)

    def targets(self, community_id: str, severity: str) -> Targets | None:
        community = self.communities.get(community_id)
        own = _by_severity(community.targets, severity) if community is not None else None
        return own or _by_severity(self.defaults.targets, severity)

    def auto_close_quiet_s(self, community_id: str) -> float:
        community = self.communities.get(community_id)
        if community is not None and community.auto_close_quiet_s is not None:
            return community.auto_close_quiet_s
        return self.defaults.auto_close_quiet_s

    def channel_names(self) -> set[str]:
        """Every channel the file refers to (each must be configured in ``[notify.channels]``)."""
        names = {
            c for community in self.communities.values() for level in community.ladder for c in level.channels
        }
        names.update(c.channel for contacts in self.contacts.values() for c in contacts)
        names.update(s.channel for s in self.staff if s.channel)
        return names


def _by_severity(table: Mapping[Severity, _T], severity: str) -> _T | None:
    for key, value in table.items():
        if key == severity:
            return value
    return None


def _cross_problems(people: People) -> list[str]:
    out: list[str] = []
    by_id: dict[str, Staff] = {}
    for s in people.staff:
        if s.id in by_id:
            out.append(f"staff: {s.id!r} is listed twice")
        by_id[s.id] = s
    for cid, community in people.communities.items():
        for i, level in enumerate(community.ladder):
            for sid in level.staff:
                member = by_id.get(sid)
                if member is None:
                    out.append(f"communities.{cid}.ladder.{i}.staff: no staff member {sid!r}")
                elif not member.serves(cid):
                    out.append(f"communities.{cid}.ladder.{i}.staff: {sid!r} does not serve {cid}")
        for sid in community.doctors:
            member = by_id.get(sid)
            if member is None:
                out.append(f"communities.{cid}.doctors: no staff member {sid!r}")
            elif "doctor" not in member.roles:
                out.append(f"communities.{cid}.doctors: {sid!r} does not have the role doctor")
    return out


def load_people(path: Path) -> People:
    """Read and validate the people file; raise `ConfigError` listing every problem."""
    try:
        raw: Any = msgspec.yaml.decode(path.read_bytes())
    except (OSError, msgspec.DecodeError) as exc:
        raise ConfigError(problems=[ConfigProblem("", f"cannot read: {exc}", str(path))]) from exc
    if not isinstance(raw, dict):
        raise ConfigError(
            problems=[ConfigProblem("", "must be a mapping (version, staff, communities, ...)", str(path))]
        )
    try:
        return People.model_validate(raw)
    except ValidationError as exc:
        problems: list[ConfigProblem] = []
        for err in exc.errors():
            key = ".".join(str(part) for part in err["loc"])
            detail = error_detail(err["msg"])
            if not key:  # cross-field problems name their own keys
                problems.extend(ConfigProblem(*_split(p), str(path)) for p in detail.split("; "))
            else:
                problems.append(ConfigProblem(key, detail, str(path)))
        raise ConfigError(problems=problems) from exc


def _split(problem: str) -> tuple[str, str]:
    key, _, detail = problem.partition(": ")
    return key, detail
