"""``/api/v1/auth``: staff log in with a password (the OAuth2 password flow) and get a short-lived
access token and a one-use refresh token; ``/auth/me`` says who the caller is.

Failed logins are counted per account and per address: past ``[api] login_max_failures`` within
``login_window_s`` the answer is 429 with Retry-After, whether the password is right or not.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field

from cloud.api.deps import Address, ApiState, CurrentPrincipal, State, staff_principal
from cloud.api.deps import OpenDb as Db
from cloud.api.security import digest, dummy_verify, issue_access_token, new_secret, verify_password

router = APIRouter(prefix="/auth", tags=["auth"])


class TokenPair(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int = Field(description="seconds the access token is valid")
    refresh_token: str
    refresh_expires_in: int


class RefreshRequest(BaseModel):
    refresh_token: Annotated[str, Field(min_length=1, max_length=200)]


class Me(BaseModel):
    id: str
    kind: str
    name: str
    roles: list[str]
    communities: list[str]
    permissions: list[str]


def _throttled(state: ApiState, db: psycopg.Connection[Any], login: str, address: str) -> int | None:
    """Seconds to wait when the account or the address has failed too often lately, else None."""
    api = state.settings.api
    since = state.clock() - timedelta(seconds=api.login_window_s)
    row = db.execute(
        "SELECT count(*) FILTER (WHERE login = %s), count(*) FILTER (WHERE address = %s), min(at)"
        " FROM api_login_attempts WHERE NOT ok AND at > %s AND (login = %s OR address = %s)",
        (login, address, since, login, address),
    ).fetchone()
    assert row is not None  # noqa: S101 - an aggregate always answers
    by_login, by_address, oldest = row
    if max(by_login, by_address) < api.login_max_failures:
        return None
    wait: int = max(1, math.ceil((oldest - since).total_seconds()))
    return wait


def _issue(state: ApiState, db: psycopg.Connection[Any], staff_id: str) -> TokenPair:
    api = state.settings.api
    now = state.clock()
    refresh, refresh_hash = new_secret()
    db.execute(
        "INSERT INTO api_refresh_tokens (token_hash, staff_id, created_at, expires_at)"
        " VALUES (%s, %s, %s, %s)",
        (refresh_hash, staff_id, now, now + timedelta(seconds=api.refresh_token_ttl_s)),
    )
    return TokenPair(
        access_token=issue_access_token(
            state.token_key, f"staff:{staff_id}", ttl_s=api.access_token_ttl_s, now=now
        ),
        expires_in=api.access_token_ttl_s,
        refresh_token=refresh,
        refresh_expires_in=api.refresh_token_ttl_s,
    )


_BAD_LOGIN = HTTPException(
    status_code=status.HTTP_401_UNAUTHORIZED,
    detail="wrong login or password",
    headers={"WWW-Authenticate": "Bearer"},
)


@router.post(
    "/token",
    responses={401: {"description": "wrong login or password"}, 429: {"description": "too many failures"}},
)
def login(
    form: Annotated[OAuth2PasswordRequestForm, Depends()], state: State, db: Db, address: Address
) -> TokenPair:
    """Log in with a staff id and password; returns an access token and a refresh token."""
    if "\x00" in form.username or "\x00" in form.password:
        raise _BAD_LOGIN
    wait = _throttled(state, db, form.username, address)
    if wait is not None:
        raise HTTPException(
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"too many failed logins for this account or address; try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    row = db.execute(
        "SELECT password_hash, disabled FROM api_users WHERE staff_id = %s", (form.username,)
    ).fetchone()
    if row is None:
        dummy_verify()
    ok = (
        row is not None
        and verify_password(row[0], form.password)
        and not row[1]
        and state.context.people.member(form.username) is not None
    )
    db.execute(
        "INSERT INTO api_login_attempts (at, login, address, ok) VALUES (%s, %s, %s, %s)",
        (state.clock(), form.username, address, ok),
    )
    if not ok:
        raise _BAD_LOGIN
    return _issue(state, db, form.username)


@router.post("/refresh", responses={401: {"description": "the refresh token is not valid (any more)"}})
def refresh(body: RefreshRequest, state: State, db: Db) -> TokenPair:
    """Trade a refresh token (once) for a new access token and refresh token. A token used twice
    means it was stolen: every refresh token of that account is then revoked."""
    now = state.clock()
    token_hash = digest(body.refresh_token)
    with db.transaction():
        row = db.execute(
            "SELECT staff_id, expires_at, used_at FROM api_refresh_tokens WHERE token_hash = %s FOR UPDATE",
            (token_hash,),
        ).fetchone()
        if row is not None and row[1] > now:
            if row[2] is None:
                db.execute(
                    "UPDATE api_refresh_tokens SET used_at = %s WHERE token_hash = %s", (now, token_hash)
                )
            else:  # a second use: revoke the account's every refresh token
                db.execute(
                    "UPDATE api_refresh_tokens SET used_at = coalesce(used_at, %s) WHERE staff_id = %s",
                    (now, row[0]),
                )
    if row is None or row[1] <= now:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown or expired refresh token")
    if row[2] is not None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "this refresh token was already used: log in again")
    staff_principal(state, db, row[0])  # still allowed in
    return _issue(state, db, row[0])


@router.get("/me", responses={401: {"description": "not authenticated"}})
def me(principal: CurrentPrincipal) -> Me:
    """Who the caller is, and what it may do."""
    from cloud.api.access import PERMISSIONS

    return Me(
        id=principal.id,
        kind=principal.kind,
        name=principal.name,
        roles=list(principal.roles),
        communities=sorted(principal.communities),
        permissions=sorted({p for r in principal.roles for p in PERMISSIONS.get(r, ())}),
    )
