"""The API's dependencies: its state, a database connection per request, the authenticated caller.

@router.get("/devices")
def devices(db: Db, principal: Reader) -> ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import psycopg
from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from cloud.api.access import Permission, Principal
from cloud.api.gate import ConnectionGate
from cloud.api.history import RollupState
from cloud.api.hourly import HourlyCache
from cloud.api.security import CredentialError, TokenReader, digest, parse_api_key, same_digest
from cloud.commands.schedules import Schedules
from cloud.config import CloudSettings
from cloud.incidents.record import Context
from device_profiles.model import Profile


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class ApiState:
    """What every request needs, built in the application's lifespan."""

    settings: CloudSettings
    pool: ConnectionPool[psycopg.Connection[Any]]
    token_key: bytes
    context: Context
    clock: Callable[[], datetime] = utcnow
    #: the requests' way to the pool (built in the lifespan, on the event loop)
    gate: ConnectionGate = field(init=False)
    #: where hourly history comes from (cloud.api.history)
    rollup: RollupState = field(default_factory=RollupState)
    #: the rolled-up hours asked for recently (cloud.api.hourly); None: off
    hourly: HourlyCache | None = field(init=False)
    #: credentials checked against the database recently: a staff id or an API key -> (the
    #: principal, when checked, the key's expiry); trusted for ``[api] auth_cache_s``
    checked: dict[str, tuple[Principal, datetime, datetime | None]] = field(default_factory=dict)
    #: the device profiles (shipped, and ``[alerts] profiles``) by id, for device details
    profiles: dict[str, Profile] = field(default_factory=dict)
    #: the streetlight schedules (``[commands] schedules``), for their view
    schedules: Schedules | None = None
    #: access tokens whose signature was verified
    tokens: TokenReader = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = TokenReader(self.token_key)
        hours = self.settings.api.hourly_cache_hours
        self.hourly = HourlyCache(max_hours=hours) if hours > 0 else None
        self.gate = ConnectionGate(
            pool=self.pool, permits=self.pool.max_size, timeout_s=self.settings.api.pool_timeout_s
        )


async def get_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.linli
    return state


State = Annotated[ApiState, Depends(get_state)]


async def connection(state: State) -> AsyncIterator[psycopg.Connection[Any]]:
    """One pooled connection (autocommit) for the request (`ConnectionGate`); a pool exhausted or
    a database down is answered 503 by the application's handlers."""
    async with state.gate.connection() as conn:
        yield conn


#: a connection for logging in (no caller yet)
OpenDb = Annotated[psycopg.Connection[Any], Depends(connection)]

bearer = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


def _unauthorized(reason: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=reason,
        headers={"WWW-Authenticate": "Bearer"},
    )


async def authenticate(
    state: State,
    token: Annotated[str | None, Depends(bearer)],
    key: Annotated[str | None, Depends(api_key_header)],
) -> Principal:
    """The caller, from ``Authorization: Bearer <access token or API key>`` or ``X-API-Key``.

    The token's signature and expiry are checked on every request; whether the account is still
    enabled (or the key not revoked) is read from the database at most every ``[api]
    auth_cache_s`` seconds per account or key, on a connection of its own (a long answer such as
    the live feed holds none)."""
    credential = key or token
    if not credential:
        raise _unauthorized("not authenticated: log in (POST /api/v1/auth/token) or send an API key")
    now = state.clock()
    try:
        if credential.startswith("lk_"):
            ident = credential
        else:
            ident = state.tokens.subject(credential, now=now).removeprefix("staff:")
    except CredentialError as exc:
        raise _unauthorized(str(exc)) from exc
    cached = state.checked.get(ident)
    if cached is not None:
        principal, checked_at, expires_at = cached
        fresh = now - checked_at < timedelta(seconds=state.settings.api.auth_cache_s)
        if fresh and (expires_at is None or now < expires_at):
            return principal
    return await run_in_threadpool(_check_in_database, state, ident, now)


def _check_in_database(state: ApiState, ident: str, now: datetime) -> Principal:
    with state.pool.connection(timeout=state.settings.api.pool_timeout_s) as db:
        expires_at = None
        try:
            if ident.startswith("lk_"):
                principal, expires_at = _key_principal(db, ident, now)
            else:
                principal = staff_principal(state, db, ident)
        except CredentialError as exc:
            state.checked.pop(ident, None)
            raise _unauthorized(str(exc)) from exc
    if len(state.checked) >= 10_000:
        state.checked.clear()
    state.checked[ident] = (principal, now, expires_at)
    return principal


def staff_principal(state: ApiState, db: psycopg.Connection[Any], staff_id: str) -> Principal:
    """A staff member who may use the API now: an account not disabled, still in the people file."""
    row = db.execute("SELECT disabled FROM api_users WHERE staff_id = %s", (staff_id,)).fetchone()
    member = state.context.people.member(staff_id)
    if row is None or row[0] or member is None:
        raise _unauthorized("this account is disabled or no longer exists")
    return Principal.of_staff(member)


def _key_principal(
    db: psycopg.Connection[Any], text: str, now: datetime
) -> tuple[Principal, datetime | None]:
    key = parse_api_key(text)
    with db.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT secret_hash, name, communities, expires_at, revoked_at, last_used_at"
            " FROM api_keys WHERE key_id = %s",
            (key.key_id,),
        ).fetchone()
    if row is None or not same_digest(bytes(row["secret_hash"]), digest(key.secret)):
        raise CredentialError("unknown API key")
    if row["revoked_at"] is not None:
        raise CredentialError("this API key was revoked")
    if row["expires_at"] is not None and row["expires_at"] <= now:
        raise CredentialError("this API key has expired")
    if row["last_used_at"] is None or now - row["last_used_at"] > timedelta(minutes=1):
        db.execute("UPDATE api_keys SET last_used_at = %s WHERE key_id = %s", (now, key.key_id))
    return Principal.of_key(key.key_id, row["name"], row["communities"]), row["expires_at"]


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]


async def authenticated_connection(
    _caller: CurrentPrincipal, conn: OpenDb
) -> AsyncIterator[psycopg.Connection[Any]]:
    """The request's connection, taken once the caller is known: checking the caller may need a
    connection of its own, and a request must never hold one while it waits for another."""
    yield conn


#: the request's connection (after authentication)
Db = Annotated[psycopg.Connection[Any], Depends(authenticated_connection)]


def require(permission: Permission) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency: the caller, who must hold `permission` (403 naming it if not)."""

    async def check(principal: CurrentPrincipal) -> Principal:
        return permitted(principal, permission)

    return check


def permitted(principal: Principal, permission: Permission) -> Principal:
    if not principal.may(permission):
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN,
            detail=f"the role {', '.join(principal.roles)} may not use this ({permission})",
        )
    return principal


DeviceReader = Annotated[Principal, Depends(require("devices"))]
HistoryReader = Annotated[Principal, Depends(require("history"))]
IncidentReader = Annotated[Principal, Depends(require("incidents"))]
Actor = Annotated[Principal, Depends(require("act"))]
Auditor = Annotated[Principal, Depends(require("audit"))]


def address_of(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


async def client_address(request: Request) -> str:
    return address_of(request)


Address = Annotated[str, Depends(client_address)]


def not_found(what: str, ident: object) -> HTTPException:
    """The one answer for "missing" and "not yours": no hint that another community's row exists."""
    return HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"no {what} {ident}")
