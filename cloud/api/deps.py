"""The API's dependencies: its state, a database connection per request, the authenticated caller.

@router.get("/devices")
def devices(db: Db, principal: Reader) -> ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import psycopg
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from cloud.api.access import Permission, Principal
from cloud.api.history import RollupState
from cloud.api.security import CredentialError, digest, parse_api_key, read_access_token, same_digest
from cloud.config import CloudSettings
from cloud.incidents.record import Context


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
    #: where hourly history comes from (cloud.api.history)
    rollup: RollupState = field(default_factory=RollupState)


def get_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.linli
    return state


State = Annotated[ApiState, Depends(get_state)]


def connection(state: State) -> Iterator[psycopg.Connection[Any]]:
    """One pooled connection (autocommit) for the request; a pool exhausted or a database down
    is answered 503 by the application's handlers."""
    with state.pool.connection(timeout=state.settings.api.pool_timeout_s) as conn:
        yield conn


Db = Annotated[psycopg.Connection[Any], Depends(connection)]

bearer = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


def _unauthorized(reason: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=reason,
        headers={"WWW-Authenticate": "Bearer"},
    )


def authenticate(
    state: State,
    db: Db,
    token: Annotated[str | None, Depends(bearer)],
    key: Annotated[str | None, Depends(api_key_header)],
) -> Principal:
    """The caller, from ``Authorization: Bearer <access token or API key>`` or ``X-API-Key``."""
    return principal_of(state, db, key or token)


def authenticate_briefly(
    state: State,
    token: Annotated[str | None, Depends(bearer)],
    key: Annotated[str | None, Depends(api_key_header)],
) -> Principal:
    """`authenticate` on a connection given back at once: for long answers (the live feed)
    that must not hold a pooled connection while they stream."""
    with state.pool.connection(timeout=state.settings.api.pool_timeout_s) as conn:
        return principal_of(state, conn, key or token)


def principal_of(state: ApiState, db: psycopg.Connection[Any], credential: str | None) -> Principal:
    if not credential:
        raise _unauthorized("not authenticated: log in (POST /api/v1/auth/token) or send an API key")
    now = state.clock()
    try:
        if credential.startswith("lk_"):
            return _key_principal(db, credential, now)
        subject = read_access_token(state.token_key, credential, now=now)
    except CredentialError as exc:
        raise _unauthorized(str(exc)) from exc
    return staff_principal(state, db, subject.removeprefix("staff:"))


def staff_principal(state: ApiState, db: psycopg.Connection[Any], staff_id: str) -> Principal:
    """A staff member who may use the API now: an account not disabled, still in the people file."""
    row = db.execute("SELECT disabled FROM api_users WHERE staff_id = %s", (staff_id,)).fetchone()
    member = state.context.people.member(staff_id)
    if row is None or row[0] or member is None:
        raise _unauthorized("this account is disabled or no longer exists")
    return Principal.of_staff(member)


def _key_principal(db: psycopg.Connection[Any], text: str, now: datetime) -> Principal:
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
    return Principal.of_key(key.key_id, row["name"], row["communities"])


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]


def require(permission: Permission) -> Callable[[Principal], Principal]:
    """A dependency: the caller, who must hold `permission` (403 naming it if not)."""

    def check(principal: CurrentPrincipal) -> Principal:
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


def _streaming_incident_reader(principal: Annotated[Principal, Depends(authenticate_briefly)]) -> Principal:
    return permitted(principal, "incidents")


StreamingIncidentReader = Annotated[Principal, Depends(_streaming_incident_reader)]


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


Address = Annotated[str, Depends(client_address)]


def not_found(what: str, ident: object) -> HTTPException:
    """The one answer for "missing" and "not yours": no hint that another community's row exists."""
    return HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"no {what} {ident}")
