"""Staff accounts and integrators' API keys: the library behind ``linli users`` and
``linli apikeys`` (each function one statement or transaction on a connection)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from cloud.api.security import CredentialError, hash_password, new_api_key
from cloud.incidents.people import ALL_COMMUNITIES, People


class AccountError(CredentialError):
    """An account or key operation that cannot be done (the message says why)."""


def add_user(conn: psycopg.Connection[Any], people: People, staff_id: str, password: str) -> None:
    """Give staff member `staff_id` (of the people file) a password to log in with."""
    if people.member(staff_id) is None:
        raise AccountError(f"{staff_id!r} is not a staff member of the people file")
    hashed = hash_password(password)
    try:
        conn.execute("INSERT INTO api_users (staff_id, password_hash) VALUES (%s, %s)", (staff_id, hashed))
    except psycopg.errors.UniqueViolation as exc:
        raise AccountError(f"{staff_id!r} already has an account (linli users passwd)") from exc


def set_password(conn: psycopg.Connection[Any], staff_id: str, password: str) -> None:
    """Change a password; the account's refresh tokens stop working (log in again everywhere)."""
    hashed = hash_password(password)
    with conn.transaction():
        cur = conn.execute(
            "UPDATE api_users SET password_hash = %s, password_changed_at = now() WHERE staff_id = %s",
            (hashed, staff_id),
        )
        if cur.rowcount == 0:
            raise AccountError(f"{staff_id!r} has no account (linli users add)")
        conn.execute(
            "UPDATE api_refresh_tokens SET used_at = now() WHERE staff_id = %s AND used_at IS NULL",
            (staff_id,),
        )


def set_disabled(conn: psycopg.Connection[Any], staff_id: str, disabled: bool) -> None:
    """Disable (or enable) an account: a disabled one is refused within ``[api] auth_cache_s``,
    tokens included."""
    cur = conn.execute("UPDATE api_users SET disabled = %s WHERE staff_id = %s", (disabled, staff_id))
    if cur.rowcount == 0:
        raise AccountError(f"{staff_id!r} has no account (linli users add)")


@dataclass(frozen=True, slots=True)
class UserRow:
    staff_id: str
    disabled: bool
    created_at: datetime
    password_changed_at: datetime


def list_users(conn: psycopg.Connection[Any]) -> list[UserRow]:
    rows = conn.execute(
        "SELECT staff_id, disabled, created_at, password_changed_at FROM api_users ORDER BY staff_id"
    ).fetchall()
    return [UserRow(*r) for r in rows]


def create_key(
    conn: psycopg.Connection[Any],
    *,
    name: str,
    communities: list[str],
    expires_at: datetime | None,
) -> str:
    """A new API key for an integrator (read-only history and devices of `communities`, or
    ``*`` for all); returns the key's text, which is shown once and never stored."""
    if not name.strip():
        raise AccountError("an API key needs a name (who it is for)")
    if not communities:
        raise AccountError("an API key needs at least one community (or * for all)")
    for c in communities:
        if c != ALL_COMMUNITIES and not c.strip():
            raise AccountError("an empty community id")
    key, secret_hash = new_api_key()
    conn.execute(
        "INSERT INTO api_keys (key_id, secret_hash, name, communities, expires_at)"
        " VALUES (%s, %s, %s, %s, %s)",
        (key.key_id, secret_hash, name, communities, expires_at),
    )
    return key.text


def revoke_key(conn: psycopg.Connection[Any], key_id: str) -> None:
    cur = conn.execute(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = %s", (key_id,)
    )
    if cur.rowcount == 0:
        raise AccountError(f"no API key {key_id!r}")


@dataclass(frozen=True, slots=True)
class KeyRow:
    key_id: str
    name: str
    communities: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


def list_keys(conn: psycopg.Connection[Any]) -> list[KeyRow]:
    rows = conn.execute(
        "SELECT key_id, name, communities, created_at, expires_at, revoked_at, last_used_at"
        " FROM api_keys ORDER BY created_at"
    ).fetchall()
    return [KeyRow(*r) for r in rows]


def expiry(now: datetime, days: float | None) -> datetime | None:
    return None if days is None else now + timedelta(days=days)
