"""JWT verification: HS256 for development, JWKS (RS256) against a real local HTTP server."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from app import errors
from app.config import Settings
from app.security.jwt import (
    LEEWAY_SECONDS,
    HS256Verifier,
    JWKSVerifier,
    Principal,
    VerifiedTokens,
    build_verifier,
    issue_dev_token,
    load_or_create_dev_secret,
)

SECRET = "test-secret-0123456789abcdef0123456789abcdef"


def _claims(**overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    # Parametrized tokens are built when tests are collected: they must outlive the whole
    # run (a full run takes longer than five minutes), or they fail as "expired" instead.
    claims: dict[str, Any] = {"sub": "user-1", "iat": now, "exp": now + timedelta(hours=6)}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


async def _unauthorized(verifier: Any, token: str) -> errors.Unauthorized:
    with pytest.raises(errors.Unauthorized) as info:
        await verifier.verify(token)
    assert info.value.status == 401
    assert info.value.code == "unauthorized"
    if token:
        assert token not in str(info.value.detail)
    return info.value


async def test_hs256_valid_token_gives_principal_with_roles() -> None:
    verifier = HS256Verifier(SecretStr(SECRET), audience="gateway", issuer="idp")
    token = issue_dev_token(SECRET, "user-1", admin=True, audience="gateway", issuer="idp")
    principal = await verifier.verify(token)
    assert principal == Principal("user-1", frozenset({"admin"}))
    assert principal.is_admin


async def test_roles_may_be_a_space_separated_string() -> None:
    token = jwt.encode(_claims(roles="trader admin"), SECRET, algorithm="HS256")
    principal = await HS256Verifier(SECRET).verify(token)
    assert principal.roles == frozenset({"trader", "admin"})


async def test_dev_token_without_admin_is_not_admin() -> None:
    principal = await HS256Verifier(SECRET).verify(issue_dev_token(SecretStr(SECRET), "u-2"))
    assert principal.user_id == "u-2"
    assert not principal.is_admin


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [
        (
            lambda: jwt.encode(_claims(exp=datetime.now(UTC) - timedelta(minutes=5)), SECRET),
            "expired",
        ),
        (lambda: jwt.encode(_claims(), "another-secret-0123456789abcdef012345"), "bad signature"),
        (lambda: jwt.encode(_claims(aud="someone-else"), SECRET), "wrong audience"),
        (lambda: jwt.encode(_claims(sub=None), SECRET), "missing claim sub"),
        (lambda: jwt.encode(_claims(exp=None), SECRET), "missing claim exp"),
        (lambda: jwt.encode(_claims(sub=""), SECRET), "invalid sub"),
        (lambda: jwt.encode(_claims(roles=[1, 2]), SECRET), "invalid roles"),
        (lambda: "garbage", "malformed"),
        (lambda: "a.b.c", "malformed"),
        (lambda: "", "malformed"),
        (lambda: jwt.encode(_claims(), key=None, algorithm="none"), "algorithm not allowed"),
    ],
    ids=[
        "expired",
        "wrong-secret",
        "wrong-audience",
        "missing-sub",
        "missing-exp",
        "empty-sub",
        "bad-roles",
        "garbage",
        "three-garbage-parts",
        "empty",
        "alg-none",
    ],
)
async def test_hs256_refusals(make_token: Callable[[], str], reason: str) -> None:
    # Tokens are made when the test runs: made at collection, a valid one could expire
    # before a long suite reaches it.
    error = await _unauthorized(HS256Verifier(SECRET), make_token())
    assert reason in error.detail


async def test_expected_audience_is_required() -> None:
    verifier = HS256Verifier(SECRET, audience="gateway")
    error = await _unauthorized(verifier, issue_dev_token(SECRET, "user-1"))
    assert "aud" in error.detail


async def test_leeway_accepts_a_token_expired_seconds_ago() -> None:
    token = jwt.encode(_claims(exp=datetime.now(UTC) - timedelta(seconds=5)), SECRET)
    assert (await HS256Verifier(SECRET).verify(token)).user_id == "user-1"


async def test_a_verified_token_is_refused_again_once_it_expires() -> None:
    """Verified tokens are remembered, never past their expiry (and its leeway)."""
    verifier = HS256Verifier(SECRET)
    now = int(datetime.now(UTC).timestamp())
    # Within the leeway for about two more seconds.
    token = jwt.encode(_claims(exp=now - LEEWAY_SECONDS + 2), SECRET, algorithm="HS256")
    assert (await verifier.verify(token)).user_id == "user-1"
    await asyncio.sleep(3.2)
    assert "token expired" in (await _unauthorized(verifier, token)).detail


def test_verified_tokens_expire_are_bounded_and_skip_long_tokens() -> None:
    now = [1000.0]
    verified = VerifiedTokens(size=2, max_token_length=10, wall=lambda: now[0])
    alice, bob = Principal("alice", frozenset()), Principal("bob", frozenset())
    verified.put("t-alice", alice, expires=1100.0)
    assert verified.get("t-alice") == alice
    assert verified.get("t-other") is None
    now[0] = 1100.0 + LEEWAY_SECONDS
    assert verified.get("t-alice") == alice
    now[0] += 0.001
    assert verified.get("t-alice") is None
    assert len(verified) == 0
    verified.put("x" * 11, bob, expires=2000.0)
    assert verified.get("x" * 11) is None
    verified.put("t-1", alice, expires=2000.0)
    verified.put("t-2", bob, expires=2000.0)
    verified.put("t-3", bob, expires=2000.0)  # full: starts over
    assert len(verified) == 1
    assert verified.get("t-3") == bob


def test_weak_secrets_and_wrong_algorithms_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        HS256Verifier("short")
    with pytest.raises(ValueError, match="HMAC"):
        HS256Verifier(SECRET, algorithms=["RS256"])
    with pytest.raises(ValueError, match="asymmetric"):
        JWKSVerifier("http://127.0.0.1:1/jwks", httpx.AsyncClient(), algorithms=["HS256"])
    assert SECRET not in repr(HS256Verifier(SECRET))


def test_dev_secret_file_is_created_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "var" / "dev-secrets.json"
    secret, created = load_or_create_dev_secret(path)
    assert created
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(path.read_text())["jwt_secret"] == secret.get_secret_value()
    again, created_again = load_or_create_dev_secret(path)
    assert not created_again
    assert again.get_secret_value() == secret.get_secret_value()


# --- JWKS against a real HTTP server ---------------------------------------------------


class _JWKSServer:
    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.hits = 0
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                body = json.dumps(outer.document).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def publish(self, kid: str, key: rsa.RSAPrivateKey) -> None:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        jwk.update({"kid": kid, "use": "sig", "alg": "RS256"})
        self.document["keys"].append(jwk)


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[_JWKSServer]:
    server = _JWKSServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()
        server.thread.join(timeout=5)


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _rs256(key: rsa.RSAPrivateKey, kid: str, **claims: Any) -> str:
    return jwt.encode(_claims(**claims), key, algorithm="RS256", headers={"kid": kid})


async def test_jwks_verifier_accepts_a_token_signed_by_a_published_key(
    jwks_server: _JWKSServer,
) -> None:
    key = _rsa()
    jwks_server.publish("key-1", key)
    async with httpx.AsyncClient() as http:
        verifier = JWKSVerifier(jwks_server.url, http, audience="gateway", issuer="idp")
        token = _rs256(key, "key-1", aud="gateway", iss="idp", roles=["admin"])
        principal = await verifier.verify(token)
        assert principal == Principal("user-1", frozenset({"admin"}))
        hits = jwks_server.hits
        await verifier.verify(token)
        assert jwks_server.hits == hits, "known keys are served from the cache"

        wrong_aud = _rs256(key, "key-1", aud="other", iss="idp")
        assert "wrong audience" in (await _unauthorized(verifier, wrong_aud)).detail
        forged = _rs256(_rsa(), "key-1", aud="gateway", iss="idp")
        assert "bad signature" in (await _unauthorized(verifier, forged)).detail


async def test_jwks_unknown_kid_is_refused_and_refetches_at_most_once_a_minute(
    jwks_server: _JWKSServer,
) -> None:
    now = [1000.0]
    key = _rsa()
    jwks_server.publish("key-2", key)
    async with httpx.AsyncClient() as http:
        verifier = JWKSVerifier(jwks_server.url, http, monotonic=lambda: now[0])
        assert (await verifier.verify(_rs256(key, "key-2"))).user_id == "user-1"
        hits = jwks_server.hits

        stranger = _rsa()
        error = await _unauthorized(verifier, _rs256(stranger, "key-unknown"))
        assert "unknown signing key" in error.detail
        await _unauthorized(verifier, _rs256(stranger, "key-unknown"))
        assert jwks_server.hits == hits, "refetch is rate-limited"

        # The identity service rotates in a new key: found after the refetch interval.
        jwks_server.publish("key-3", stranger)
        await _unauthorized(verifier, _rs256(stranger, "key-3"))
        now[0] += 61
        assert (await verifier.verify(_rs256(stranger, "key-3"))).user_id == "user-1"
        assert jwks_server.hits == hits + 1


async def test_a_token_whose_key_is_withdrawn_is_refused_after_the_keys_are_refreshed(
    jwks_server: _JWKSServer,
) -> None:
    """A remembered token is not served past a refresh of the keys, whether another
    token's unknown key or their age caused it: once its key is gone from the JWKS, it is
    refused like any token of an unknown key."""
    now = [5000.0]
    withdrawn, kept, newcomer = _rsa(), _rsa(), _rsa()
    jwks_server.publish("key-withdrawn", withdrawn)
    jwks_server.publish("key-kept", kept)
    async with httpx.AsyncClient() as http:
        verifier = JWKSVerifier(jwks_server.url, http, monotonic=lambda: now[0])
        token = _rs256(withdrawn, "key-withdrawn")
        other = _rs256(kept, "key-kept", sub="user-2")
        assert (await verifier.verify(token)).user_id == "user-1"
        assert (await verifier.verify(other)).user_id == "user-2"
        jwks_server.document["keys"] = [
            k for k in jwks_server.document["keys"] if k["kid"] != "key-withdrawn"
        ]
        jwks_server.publish("key-new", newcomer)
        now[0] += 61  # a token of a new key makes the verifier refetch (keys not stale)
        assert (await verifier.verify(_rs256(newcomer, "key-new"))).user_id == "user-1"
        assert "unknown signing key" in (await _unauthorized(verifier, token)).detail
        assert (await verifier.verify(other)).user_id == "user-2"

        now[0] += 3601  # stale keys: the next verification refreshes them first
        jwks_server.document["keys"] = [
            k for k in jwks_server.document["keys"] if k["kid"] != "key-kept"
        ]
        assert "unknown signing key" in (await _unauthorized(verifier, other)).detail


async def test_jwks_refuses_hmac_tokens_and_reports_an_unreachable_jwks() -> None:
    async with httpx.AsyncClient() as http:
        verifier = JWKSVerifier("http://127.0.0.1:9/jwks.json", http)
        hs = jwt.encode(_claims(), SECRET, algorithm="HS256", headers={"kid": "k"})
        assert "algorithm" in (await _unauthorized(verifier, hs)).detail
        for _ in range(2):  # also while backing off after the failure
            with pytest.raises(errors.ServiceUnavailable) as info:
                await verifier.verify(_rs256(_rsa(), "k"))
            assert info.value.status == 503


async def test_build_verifier_picks_jwks_then_secret() -> None:
    async with httpx.AsyncClient() as http:
        jwks = Settings(jwks_url="http://127.0.0.1:9/jwks", jwt_secret=SecretStr(SECRET))
        assert isinstance(build_verifier(jwks, http), JWKSVerifier)
        hs = build_verifier(Settings(jwt_secret=SecretStr(SECRET), jwt_audience="gw"), http)
        token = issue_dev_token(SECRET, "user-9", audience="gw")
        assert (await hs.verify(token)).user_id == "user-9"
        with pytest.raises(RuntimeError):
            build_verifier(Settings(), http)
