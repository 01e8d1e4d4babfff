"""Who may see and do what through the API: the principal of a request, its communities, and
the permissions of each role (docs/api.md has the table).

Every query is filtered by the caller's communities; a row of another community is answered as
if it did not exist (404), never 403 with a hint. Personal data (resident ids, rooms, contacts'
names and phone numbers) is masked unless a role of the caller has the PII permission, and every
unmasked read is written to ``api_pii_audit``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import psycopg

from cloud.incidents.people import ALL_COMMUNITIES, Staff

ApiRole = Literal["grid_worker", "committee", "street", "district", "doctor", "admin", "integrator"]
Permission = Literal["devices", "history", "incidents", "act", "pii", "audit"]

#: What each role may do. ``act`` is the right to call the workflow at all; the workflow itself
#: decides which transition a role may make (cloud.incidents.workflow).
PERMISSIONS: Final[dict[str, frozenset[Permission]]] = {
    "grid_worker": frozenset({"devices", "history", "incidents", "act", "pii"}),
    "committee": frozenset({"devices", "history", "incidents", "act", "pii"}),
    "street": frozenset({"devices", "history", "incidents", "act"}),
    "district": frozenset({"devices", "history", "incidents", "act"}),
    "doctor": frozenset({"devices", "history", "incidents", "act", "pii"}),
    "admin": frozenset({"devices", "history", "incidents", "act", "pii", "audit"}),
    "integrator": frozenset({"devices", "history"}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: a staff member (by the people file) or an integrator's API key."""

    id: str
    kind: Literal["staff", "apikey"]
    name: str
    roles: tuple[str, ...]
    communities: frozenset[str]

    @classmethod
    def of_staff(cls, member: Staff) -> Principal:
        return cls(
            id=member.id,
            kind="staff",
            name=member.name,
            roles=tuple(member.roles),
            communities=frozenset(member.communities),
        )

    @classmethod
    def of_key(cls, key_id: str, name: str, communities: Iterable[str]) -> Principal:
        return cls(
            id=f"key:{key_id}",
            kind="apikey",
            name=name,
            roles=("integrator",),
            communities=frozenset(communities),
        )

    @property
    def role(self) -> str:
        """The first role (written to audit trails)."""
        return self.roles[0]

    def may(self, permission: Permission) -> bool:
        return any(permission in PERMISSIONS.get(r, frozenset()) for r in self.roles)

    @property
    def all_communities(self) -> bool:
        return ALL_COMMUNITIES in self.communities

    def sees(self, community_id: str | None) -> bool:
        if self.all_communities:
            return True
        return community_id is not None and community_id in self.communities

    def community_list(self) -> list[str] | None:
        """The communities for a ``community_id = ANY(%s)`` filter; None: all of them."""
        return None if self.all_communities else sorted(self.communities)


def community_clause(principal: Principal, column: str = "community_id") -> tuple[str, list[Any]]:
    """A SQL condition (and its parameters) that keeps the caller's communities only."""
    allowed = principal.community_list()
    if allowed is None:
        return "TRUE", []
    return f"{column} = ANY(%s)", [allowed]


def mask_text(value: str | None) -> str | None:
    """``李娜`` -> ``李*``, ``c01-r0007`` -> ``c0*******``: enough to tell entries apart, not a person."""
    if value is None or value == "":
        return value
    keep = 1 if len(value) <= 4 else 2
    return value[:keep] + "*" * (len(value) - keep)


def mask_phone(value: str | None) -> str | None:
    """``13900000002`` -> ``139****0002``."""
    if value is None or len(value) < 8:
        return None if value is None else "*" * len(value)
    return value[:3] + "*" * (len(value) - 7) + value[-4:]


def record_pii_read(
    conn: psycopg.Connection[Any],
    principal: Principal,
    *,
    resource: str,
    subject: str,
    fields: Sequence[str],
    address: str,
) -> None:
    """Write one unmasked read of personal data to the audit log (PIPL)."""
    record_pii_reads(conn, principal, resource=resource, shown={subject: set(fields)}, address=address)


def record_pii_reads(
    conn: psycopg.Connection[Any],
    principal: Principal,
    *,
    resource: str,
    shown: dict[str, set[str]],
    address: str,
) -> None:
    """Unmasked reads of personal data, one audit row per subject, in one statement: subject ->
    the fields shown (a subject shown nothing is not written)."""
    subjects = [s for s in sorted(shown) if shown[s]]
    if not subjects:
        return
    conn.execute(
        "INSERT INTO api_pii_audit (principal, role, resource, subject, fields, address)"
        " SELECT %s, %s, %s, s, string_to_array(f, ','), %s FROM unnest(%s::text[], %s::text[]) AS u(s, f)",
        (
            principal.id,
            principal.role,
            resource,
            address,
            subjects,
            [",".join(sorted(shown[s])) for s in subjects],
        ),
    )


@dataclass(slots=True)
class Disclosure:
    """Personal data of one answer: masked for a caller without ``pii``; shown, and remembered
    for the audit (`flush`), for one with it.

        seen = Disclosure(principal)
        item["room"] = seen.text(device_id, "room", row.room)
        seen.flush(conn, resource="device", address=address)
    """

    principal: Principal
    shown: dict[str, set[str]] = field(default_factory=dict)

    @property
    def unmasked(self) -> bool:
        return self.principal.may("pii")

    def text(self, subject: str, name: str, value: str | None) -> str | None:
        return self._show(subject, name, value, mask_text)

    def phone(self, subject: str, name: str, value: str | None) -> str | None:
        return self._show(subject, name, value, mask_phone)

    def _show(
        self, subject: str, name: str, value: str | None, mask: Callable[[str | None], str | None]
    ) -> str | None:
        if value is None or value == "":
            return value
        if not self.unmasked:
            return mask(value)
        self.shown.setdefault(subject, set()).add(name)
        return value

    def flush(self, conn: psycopg.Connection[Any], *, resource: str, address: str) -> None:
        record_pii_reads(conn, self.principal, resource=resource, shown=self.shown, address=address)
        self.shown.clear()
