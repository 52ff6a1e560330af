"""Caller authentication: verifying the identity service's JWTs.

Production verifies RS256/ES256 tokens against the identity service's JWKS
(``JWKSVerifier``); development and tests use a shared HS256 secret (``HS256Verifier``),
which ``brokerage token`` and the test harness sign with ``issue_dev_token``.

Every token failure becomes ``errors.Unauthorized`` (401) with a short reason such as
"token expired" or "bad signature". The token itself is never echoed, logged or put into
an exception message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import httpx
import jwt
from pydantic import SecretStr

from app import errors
from app.config import Settings
from app.security.keyring import create_private_file, read_private_file

log = logging.getLogger(__name__)

LEEWAY_SECONDS = 30
MAX_USER_ID_LENGTH = 255
MIN_HMAC_SECRET_BYTES = 32
HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: a user id (the ``sub`` claim) and roles."""

    user_id: str
    roles: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


class TokenVerifier(Protocol):
    async def verify(self, token: str) -> Principal:
        """Return the caller, or raise ``errors.Unauthorized``."""
        ...


def _secret_value(secret: SecretStr | str) -> str:
    return secret.get_secret_value() if isinstance(secret, SecretStr) else secret


def _check_hmac_secret(secret: str) -> None:
    if len(secret.encode("utf-8")) < MIN_HMAC_SECRET_BYTES:
        raise ValueError(f"the JWT secret must be at least {MIN_HMAC_SECRET_BYTES} bytes")


def _reason(exc: jwt.PyJWTError) -> str:
    # Order matters: several of these subclass one another.
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "token expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "token not yet valid"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "wrong audience"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "wrong issuer"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"missing claim {exc.claim}"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "bad signature"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "algorithm not allowed"
    if isinstance(exc, jwt.InvalidKeyError):
        return "signing key too weak"
    if isinstance(exc, jwt.DecodeError):
        return "malformed token"
    return "invalid token"


def _principal(claims: Mapping[str, Any]) -> Principal:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > MAX_USER_ID_LENGTH:
        raise errors.Unauthorized("invalid sub claim")
    raw = claims.get("roles", [])
    if isinstance(raw, str):
        roles = frozenset(raw.split())
    elif isinstance(raw, list) and all(isinstance(r, str) for r in raw):
        roles = frozenset(raw)
    else:
        raise errors.Unauthorized("invalid roles claim")
    return Principal(user_id=sub, roles=roles)


class VerifiedTokens:
    """Tokens verified already, with their principal, until they expire.

    A client sends the same token with every request for its lifetime; verifying it again
    (parse, signature, claims) is a fixed cost on every call of the order path. What can
    change the answer for the same bytes: time (``exp``, checked here with the same leeway
    as the decode), and for JWKS the published keys (the verifier clears this when it
    replaces them). Bounded: at most ``size`` tokens of at most ``max_token_length``
    characters (others are verified every time); when full, it starts over empty.
    """

    def __init__(
        self,
        size: int = 4096,
        max_token_length: int = 2048,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._size = size
        self._max_token_length = max_token_length
        self._wall = wall
        self._entries: dict[str, tuple[Principal, float]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str) -> Principal | None:
        hit = self._entries.get(token)
        if hit is None:
            return None
        principal, valid_until = hit
        if self._wall() > valid_until:
            del self._entries[token]
            return None
        return principal

    def put(self, token: str, principal: Principal, expires: float) -> None:
        if len(token) > self._max_token_length:
            return
        if len(self._entries) >= self._size:
            self._entries.clear()
        self._entries[token] = (principal, expires + LEEWAY_SECONDS)

    def clear(self) -> None:
        self._entries.clear()


def _decode(
    token: str,
    key: Any,
    *,
    algorithms: Sequence[str],
    audience: str | None,
    issuer: str | None,
) -> tuple[Principal, float]:
    """The token's principal and its ``exp`` (seconds since the epoch)."""
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=list(algorithms),
            audience=audience,
            issuer=issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": ["sub", "exp"], "enforce_minimum_key_length": True},
        )
    except jwt.PyJWTError as exc:
        raise errors.Unauthorized(_reason(exc)) from None
    return _principal(claims), float(claims["exp"])


class HS256Verifier:
    """Verifies tokens signed with a shared secret (development, tests, simple deployments).

    Raises ``ValueError`` at construction for a secret under 32 bytes or a non-HMAC
    algorithm.
    """

    def __init__(
        self,
        secret: SecretStr | str,
        audience: str | None = None,
        issuer: str | None = None,
        algorithms: Sequence[str] = ("HS256",),
    ) -> None:
        value = _secret_value(secret)
        _check_hmac_secret(value)
        if not algorithms or not set(algorithms) <= HMAC_ALGORITHMS:
            raise ValueError("HS256Verifier takes HMAC algorithms only")
        self._secret = SecretStr(value)
        self._audience = audience
        self._issuer = issuer
        self._algorithms = tuple(algorithms)
        self._verified = VerifiedTokens()

    def __repr__(self) -> str:
        return f"HS256Verifier(audience={self._audience!r}, issuer={self._issuer!r})"

    async def verify(self, token: str) -> Principal:
        known = self._verified.get(token)
        if known is not None:
            return known
        principal, expires = _decode(
            token,
            self._secret.get_secret_value(),
            algorithms=self._algorithms,
            audience=self._audience,
            issuer=self._issuer,
        )
        self._verified.put(token, principal, expires)
        return principal


class JWKSVerifier:
    """Verifies asymmetric tokens against the identity service's JWKS.

    Keys are cached by ``kid``. An unknown ``kid`` triggers a refetch (key rotation), at
    most once per ``min_refetch_seconds`` so a flood of forged kids cannot hammer the
    identity service; the cache is also refreshed after ``max_age_seconds``, keeping the
    old keys if that refresh fails. When no key can be obtained at all because the JWKS
    endpoint fails, the answer is 503 (``errors.ServiceUnavailable``): the caller's token
    may be fine.
    """

    def __init__(
        self,
        jwks_url: str,
        http: httpx.AsyncClient,
        audience: str | None = None,
        issuer: str | None = None,
        algorithms: Sequence[str] = ("RS256", "ES256"),
        *,
        min_refetch_seconds: float = 60.0,
        max_age_seconds: float = 3600.0,
        failure_backoff_seconds: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not algorithms or not set(algorithms) <= ASYMMETRIC_ALGORITHMS:
            # An HMAC algorithm here would let a public key be used as an HMAC secret.
            raise ValueError("JWKSVerifier takes asymmetric algorithms only")
        self._url = jwks_url
        self._http = http
        self._audience = audience
        self._issuer = issuer
        self._algorithms = tuple(algorithms)
        self._min_refetch = min_refetch_seconds
        self._max_age = max_age_seconds
        self._failure_backoff = failure_backoff_seconds
        self._monotonic = monotonic
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._next_fetch_at = 0.0
        self._lock = asyncio.Lock()
        # Cleared whenever the keys are replaced: a key withdrawn from the JWKS stops
        # vouching for the tokens it signed at the same refresh as before.
        self._verified = VerifiedTokens()

    def __repr__(self) -> str:
        return f"JWKSVerifier({self._url!r}, audience={self._audience!r})"

    async def verify(self, token: str) -> Principal:
        if not self._stale():
            known = self._verified.get(token)
            if known is not None:
                return known
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise errors.Unauthorized("malformed token") from None
        alg = header.get("alg")
        if alg not in self._algorithms:
            raise errors.Unauthorized("algorithm not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise errors.Unauthorized("malformed token")
        key = await self._key_for(kid)
        if key.algorithm_name != alg:
            raise errors.Unauthorized("algorithm not allowed")
        principal, expires = _decode(
            token, key, algorithms=[alg], audience=self._audience, issuer=self._issuer
        )
        self._verified.put(token, principal, expires)
        return principal

    async def _key_for(self, kid: str | None) -> jwt.PyJWK:
        key = self._lookup(kid)
        if key is not None and not self._stale():
            return key
        async with self._lock:
            key = self._lookup(kid)
            if (key is None or self._stale()) and self._monotonic() >= self._next_fetch_at:
                await self._fetch()
                key = self._lookup(kid)
            if self._fetched_at is None:
                raise errors.ServiceUnavailable("the identity service's keys are unavailable")
        if key is None:
            raise errors.Unauthorized("unknown signing key")
        return key

    def _stale(self) -> bool:
        return self._fetched_at is None or self._monotonic() - self._fetched_at > self._max_age

    def _lookup(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            # A token without a kid is only unambiguous against a single-key JWKS.
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _fetch(self) -> None:
        """Replace the cached keys; on failure keep them and back off briefly."""
        now = self._monotonic()
        try:
            response = await self._http.get(self._url, headers={"Accept": "application/json"})
            response.raise_for_status()
            document = response.json()
            keys = _parse_jwks(document)
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("fetching the JWKS from %s failed: %s", self._url, type(exc).__name__)
            self._next_fetch_at = now + self._failure_backoff
            return
        self._keys = keys
        self._verified.clear()
        self._fetched_at = now
        self._next_fetch_at = now + self._min_refetch


def _parse_jwks(document: Any) -> dict[str, jwt.PyJWK]:
    """Signing keys by kid; keys for encryption, without a kid, or unusable are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or entry.get("kty") == "oct":
            continue
        try:
            keys[kid] = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            continue
    return keys


def build_verifier(settings: Settings, http: httpx.AsyncClient) -> TokenVerifier:
    """The verifier the settings ask for: JWKS when ``jwks_url`` is set, else the secret.

    Raises ``RuntimeError`` when neither is configured (``app.startup`` provides a dev
    secret in the embedded mode), ``ValueError`` for a weak secret or bad algorithm list.
    """
    if settings.jwks_url:
        return JWKSVerifier(
            settings.jwks_url,
            http,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            algorithms=settings.jwt_algorithms,
        )
    if settings.jwt_secret is not None:
        return HS256Verifier(
            settings.jwt_secret, audience=settings.jwt_audience, issuer=settings.jwt_issuer
        )
    raise RuntimeError("no JWT verification configured: set jwks_url or jwt_secret")


def issue_dev_token(
    secret: SecretStr | str,
    user_id: str,
    *,
    admin: bool = False,
    audience: str | None = None,
    issuer: str | None = None,
    ttl: timedelta = timedelta(hours=12),
) -> str:
    """Sign an HS256 token for ``user_id`` (development and tests only)."""
    value = _secret_value(secret)
    _check_hmac_secret(value)
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": user_id,
        "iat": now,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
        "roles": ["admin"] if admin else [],
    }
    if audience is not None:
        claims["aud"] = audience
    if issuer is not None:
        claims["iss"] = issuer
    return jwt.encode(claims, value, algorithm="HS256")


def load_or_create_dev_secret(path: Path) -> tuple[SecretStr, bool]:
    """Read the development JWT secret from ``path``, generating it (mode 0600) if absent.

    The file is ``{"jwt_secret": "..."}``. Returns the secret and whether this call created
    it. Raises ``ValueError`` for a malformed file, ``OSError`` when it cannot be written.
    """
    created = False
    if not path.exists():
        text = json.dumps({"jwt_secret": secrets.token_urlsafe(48)})
        created = create_private_file(path, text)
    try:
        data = json.loads(read_private_file(path))
    except ValueError:
        raise ValueError(f"{path} is not valid JSON") from None
    value = data.get("jwt_secret") if isinstance(data, dict) else None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{path} has no jwt_secret")
    _check_hmac_secret(value)
    return SecretStr(value), created
