"""Credentials: argon2id password hashes, signed access tokens, one-use refresh tokens, API keys.

Access tokens are JWTs (HS256) signed with the key of ``[api] token_key_file`` and carry only the
subject (``staff:<id>``) and expiry: roles and communities come from the people file (checked
again every ``[api] auth_cache_s``), so a token carries no rights that outlive a change. Refresh
tokens and API key secrets are random and kept only as SHA-256 digests (they are long and random:
a slow hash adds nothing).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from cloud.errors import CloudError

_HASHER: Final = PasswordHasher()  # argon2id, the library's recommended parameters
_ALGORITHM: Final = "HS256"
_ISSUER: Final = "linli"
KEY_PREFIX: Final = "lk_"
MIN_PASSWORD: Final = 10


class CredentialError(CloudError):
    """A token, key or password that does not prove anything (the message says why, for logs)."""


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise CredentialError(f"a password needs at least {MIN_PASSWORD} characters")
    return _HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def dummy_verify() -> None:
    """Spend the time of a verification for an unknown login (no timing hint that it is unknown)."""
    verify_password(_DUMMY, "x" * MIN_PASSWORD)


_DUMMY: Final = _HASHER.hash(secrets.token_urlsafe(16))


def load_or_create_key(path: Path) -> bytes:
    """The signing key in `path`; created (32 random bytes, mode 0600) when the file is missing."""
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_hex(32).encode()
        # written whole under a name of its own, then linked into place: another API process
        # starting at the same moment sees no file or a complete one, never an empty one
        draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key + b"\n")
        try:
            os.link(draft, path)
        except FileExistsError:  # another API process created it meanwhile: use theirs
            return load_or_create_key(path)
        finally:
            draft.unlink()
    except OSError as exc:
        raise CredentialError(f"cannot read the token key {path}: {exc.strerror}") from exc
    if len(key) < 32:
        raise CredentialError(f"the token key {path} is too short: at least 32 bytes")
    return key


def issue_access_token(key: bytes, subject: str, *, ttl_s: int, now: datetime) -> str:
    claims = {"sub": subject, "iss": _ISSUER, "iat": now, "exp": now + timedelta(seconds=ttl_s)}
    return jwt.encode(claims, key, algorithm=_ALGORITHM)


def token_claims(key: bytes, token: str) -> tuple[str, datetime]:
    """The subject and expiry of a token signed with `key`; `CredentialError` if it is forged
    or malformed (expiry not checked)."""
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[_ALGORITHM],
            issuer=_ISSUER,
            options={"require": ["exp", "sub", "iss"], "verify_exp": False},
        )
    except jwt.PyJWTError as exc:
        raise CredentialError(f"invalid token: {exc}") from exc
    subject = claims["sub"]
    if not isinstance(subject, str):
        raise CredentialError("invalid token: bad subject")
    return subject, datetime.fromtimestamp(float(claims["exp"]), UTC)


class TokenReader:
    """Access tokens read with `token_claims`, each signature verified once: a client sends the same
    token with every request until it expires (the expiry is checked every time)."""

    def __init__(self, key: bytes, *, capacity: int = 10_000) -> None:
        self._key = key
        self._capacity = capacity
        self._verified: dict[str, tuple[str, datetime]] = {}

    def subject(self, token: str, *, now: datetime) -> str:
        known = self._verified.get(token)
        if known is None:
            known = token_claims(self._key, token)
            if len(self._verified) >= self._capacity:
                self._verified.clear()
            self._verified[token] = known
        subject, expires = known
        if expires <= now:
            raise CredentialError("token expired")
        return subject


def new_secret() -> tuple[str, bytes]:
    """A random token and its digest (what is stored)."""
    token = secrets.token_urlsafe(32)
    return token, digest(token)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    secret: str

    @property
    def text(self) -> str:
        return f"{KEY_PREFIX}{self.key_id}_{self.secret}"


def new_api_key() -> tuple[ApiKey, bytes]:
    key = ApiKey(key_id=secrets.token_hex(6), secret=secrets.token_urlsafe(32))
    return key, digest(key.secret)


def parse_api_key(text: str) -> ApiKey:
    if not text.startswith(KEY_PREFIX):
        raise CredentialError("not an API key")
    key_id, sep, secret = text[len(KEY_PREFIX) :].partition("_")
    if not sep or not key_id or not secret:
        raise CredentialError("malformed API key")
    return ApiKey(key_id=key_id, secret=secret)


def same_digest(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)
