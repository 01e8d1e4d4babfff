"""The ``commands`` table: every command starts here, in state ``queued``, with its audit trail.

`request` is the one way in (the API calls it; a rule action will): the device is looked up, the
command checked against the standard and the device's profile (a model that cannot carry it is
refused here, not at the gateway), and the row and its first audit entry written in the caller's
transaction. The command id is the idempotency key: the same request again answers the same
command; the id reused for another command is a `CommandConflict`. `expire_due` marks the queued
commands whose time to live passed before they left for the gateway. States and their meaning:
docs/commands.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, NamedTuple

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from cloud.errors import CloudError
from device_profiles.command_encode import carried
from device_profiles.command_model import CommandSpec
from device_profiles.commands import CommandError
from device_profiles.model import Profile

#: A command's life, in order; `failed` and `expired` end it early.
STATES: Final = ("queued", "at_gateway", "sent_to_device", "confirmed", "failed", "expired")
FINAL_STATES: Final = frozenset({"confirmed", "failed", "expired"})
COLUMNS: Final = (
    "command_id, device_id, community_id, gateway_id, name, params, confirm, state, reason, requested_by,"
    " requested_at, expires_at, updated_at, incident_id"
)
#: Notified (payload: the gateway id) when a command is queued: the sender wakes at once.
CHANNEL: Final = "linli_commands"


class CommandsError(CloudError):
    """Root of the commands package's errors (a cloud error)."""


class UnknownDevice(CommandsError):
    """No such device (or, to the caller, none it may see)."""


class CommandRefused(CommandsError):
    """The standard or the device's profile refuses the command; the message says why."""


class CommandConflict(CommandsError):
    """The command id names another command already."""


def request(
    conn: psycopg.Connection[Any],
    *,
    actor: str,
    device_id: str,
    name: str,
    params: Mapping[str, object],
    ttl_s: int,
    profiles: Mapping[str, Profile],
    now: datetime,
    command_id: uuid.UUID | None = None,
    visible: frozenset[str] | None = None,
    incident_id: int | None = None,
) -> tuple[dict[str, Any], bool]:
    """Queue a command; returns it and whether it is new (False: the same request again).

    `visible` limits the devices to those communities (None: all); `incident_id` names the
    incident the command answers (its audit trail then follows the command). The sender is woken
    (`CHANNEL`) when the transaction commits. Raises `UnknownDevice`, `CommandRefused` or
    `CommandConflict`; writes nothing then.
    """
    device = conn.execute(f"SELECT {_DEVICE} FROM devices WHERE device_id = %s", (device_id,)).fetchone()  # noqa: S608
    if device is None or (visible is not None and device[2] not in visible):
        raise UnknownDevice(device_id)
    _, community_id, gateway_id = device[1:]
    values, spec = _checked(device_id, device, name, params, profiles)
    command_id = command_id or uuid.uuid4()
    row = conn.execute(
        f"INSERT INTO commands ({COLUMNS}) VALUES"  # noqa: S608 - constant columns
        " (%s, %s, %s, %s, %s, %s, %s, 'queued', NULL, %s, %s, %s, %s, %s)"
        f" ON CONFLICT (command_id) DO NOTHING RETURNING {COLUMNS}",
        (command_id, device_id, community_id, gateway_id, name, Jsonb(values), spec.confirm, actor, now,
         now + timedelta(seconds=ttl_s), now, incident_id),
    ).fetchone()  # fmt: skip
    if row is None:
        existing = get(conn, command_id)
        assert existing is not None  # noqa: S101 - the conflict found it
        if (existing["device_id"], existing["name"], existing["params"]) != (device_id, name, values):
            raise CommandConflict(
                f"command {command_id} is already {existing['name']} to {existing['device_id']}: use a new id"
            )
        return existing, False
    conn.execute(
        "INSERT INTO command_audit (command_id, at, actor, state, detail) VALUES (%s, %s, %s, 'queued', %s)",
        (command_id, now, actor, f"{name} {_params_text(values)}".strip()),
    )
    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, gateway_id))
    found = get(conn, command_id)
    assert found is not None  # noqa: S101 - written above
    return found, True


#: what `request` needs to know of a device, in this order
_DEVICE: Final = "device_type, profile, community_id, gateway_id"


def _checked(
    device_id: str,
    device: tuple[Any, ...],
    name: str,
    params: Mapping[str, object],
    profiles: Mapping[str, Profile],
) -> tuple[dict[str, Any], CommandSpec]:
    """The command's checked parameters and the profile's way of carrying it, for the device's
    row (`_DEVICE`); `CommandRefused` naming why not."""
    device_type, profile_id = device[0], device[1]
    profile = profiles.get(profile_id)
    if profile is None:
        raise CommandRefused(
            f"{device_id}'s profile {profile_id!r} is not loaded: its dialect is unknown here"
        )
    if profile.device_type != device_type:
        raise CommandRefused(
            f"{device_id} is a {device_type} but its profile {profile_id} is for {profile.device_type}"
        )
    try:
        return carried(profile, name, params)
    except CommandError as exc:
        raise CommandRefused(str(exc)) from None


class Wanted(NamedTuple):
    """One command of `request_many`, with its (derived) id."""

    command_id: uuid.UUID
    device_id: str
    name: str
    params: Mapping[str, object]
    ttl_s: int


def request_many(
    conn: psycopg.Connection[Any],
    wanted: Sequence[Wanted],
    *,
    actor: str,
    profiles: Mapping[str, Profile],
    now: datetime,
) -> tuple[int, dict[str, str]]:
    """Queue many commands at once, as `request` queues one (the same checks, rows and audit
    entries), in a few statements however many there are: a schedule's transition for every lamp
    of a community must not hold up an SOS button's acknowledge behind a round trip per lamp.

    A command whose id is already queued is left as it is (asking again queues nothing twice).
    Returns how many were queued, and the refused ones (device id: why), which are not written.
    """
    ids = sorted({w.device_id for w in wanted})
    devices = {
        r[0]: r[1:]
        for r in conn.execute(
            f"SELECT device_id, {_DEVICE} FROM devices WHERE device_id = ANY(%s)",  # noqa: S608 - constant columns
            (ids,),
        )
    }
    refused: dict[str, str] = {}
    rows: list[tuple[object, ...]] = []
    for w in wanted:
        device = devices.get(w.device_id)
        if device is None:
            refused[w.device_id] = "no such device"
            continue
        try:
            values, spec = _checked(w.device_id, device, w.name, w.params, profiles)
        except CommandRefused as exc:
            refused[w.device_id] = str(exc)
            continue
        rows.append(
            (w.command_id, w.device_id, device[2], device[3], w.name, Jsonb(values), spec.confirm, actor, now,
             now + timedelta(seconds=w.ttl_s), now, None, f"{w.name} {_params_text(values)}".strip())
        )  # fmt: skip
    if not rows:
        return 0, refused
    with conn.cursor() as cur:
        cur.executemany(
            f"WITH ins AS (INSERT INTO commands ({COLUMNS}) VALUES"  # noqa: S608 - constant columns
            " (%s, %s, %s, %s, %s, %s, %s, 'queued', NULL, %s, %s, %s, %s, %s)"
            " ON CONFLICT (command_id) DO NOTHING RETURNING command_id, requested_by, requested_at)"
            " INSERT INTO command_audit (command_id, at, actor, state, detail)"
            " SELECT command_id, requested_at, requested_by, 'queued', %s FROM ins",
            rows,
        )
        queued = cur.rowcount
    for gateway in sorted({str(r[3]) for r in rows}):
        conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, gateway))
    return queued, refused


def _params_text(values: Mapping[str, object]) -> str:
    return " ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in values.items())


def get(conn: psycopg.Connection[Any], command_id: uuid.UUID) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT {COLUMNS} FROM commands WHERE command_id = %s", (command_id,)).fetchone()  # noqa: S608


def audit(conn: psycopg.Connection[Any], command_id: uuid.UUID) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT at, actor, state, detail FROM command_audit WHERE command_id = %s ORDER BY id",
            (command_id,),
        ).fetchall()


def for_device(conn: psycopg.Connection[Any], device_id: str, *, limit: int) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        query = f"SELECT {COLUMNS} FROM commands WHERE device_id = %s"  # noqa: S608 - constant columns
        return cur.execute(
            query + " ORDER BY requested_at DESC, seq DESC LIMIT %s", (device_id, limit)
        ).fetchall()


def expire_due(
    conn: psycopg.Connection[Any], *, now: datetime, grace_s: float = 600.0, actor: str = "linli"
) -> int:
    """Queued commands past their time to live become ``expired`` (with an audit entry each).

    One never published expires at its time; one published but never reported stored `grace_s`
    later: until then the gateway may hold it (it expires it itself and says so), and its report
    is on the way.
    """
    gone = conn.execute(
        "UPDATE commands SET state = 'expired', updated_at = %s,"
        " reason = 'its time to live passed before it reached the gateway'"
        " WHERE state = 'queued' AND expires_at <= %s AND (sent_at IS NULL OR expires_at <= %s)"
        " RETURNING command_id",
        (now, now, now - timedelta(seconds=grace_s)),
    ).fetchall()
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO command_audit (command_id, at, actor, state, detail)"
            " VALUES (%s, %s, %s, 'expired', %s)",
            [(row[0], now, actor, "time to live passed while queued") for row in gone],
        )
    return len(gone)
