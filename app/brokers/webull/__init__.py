"""Webull (Tier A, HMAC-signed OpenAPI with an app-confirmed access token):
https://developer.webull.com/apis/docs/ (Trading API, v2 paths)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.brokers.base import AuthKind, BrokerAdapter, Tier
from app.config import Settings

if TYPE_CHECKING:
    from app.brokers.registry import Activation, AdapterContext, BrokerSpec
    from app.security.credentials import Credentials

PENDING_DISPLAY = "Webull: confirm the access token in the Webull app"


def _factory(ctx: AdapterContext, credentials: Credentials | None) -> BrokerAdapter:
    from app.brokers.webull.adapter import WebullAdapter

    return WebullAdapter(ctx.settings, credentials, ctx.http)


def _configured(settings: Settings) -> bool:
    # Each user registers their own Webull app (App Key/Secret): nothing to configure here.
    return bool(settings.webull_base_url)


def _activation(stored: Credentials) -> Activation:
    from app.brokers.registry import Activation
    from app.brokers.webull import auth, mapping

    status = stored[auth.TOKEN_STATUS]
    expires_at = mapping.token_expiry(stored[auth.TOKEN_EXPIRES])
    if status == "NORMAL":
        return Activation(stored, "active", "", expires_at)
    if status == "PENDING":
        return Activation(
            stored,
            "pending",
            "enter the verification code sent by SMS in the Webull app to confirm the token",
            expires_at,
        )
    return Activation(stored, "failed", f"the Webull access token is {status.lower()}", None)


async def _begin(ctx: AdapterContext, credentials: Credentials) -> Activation:
    """Create the access token: this is also the first signed call, so a wrong App Key or
    Secret is refused here (``AuthenticationFailed``)."""
    from app.brokers.webull.adapter import WebullAdapter

    adapter = WebullAdapter(ctx.settings, credentials, ctx.http)
    try:
        return _activation(await adapter.create_token())
    finally:
        await adapter.close()


async def _check(ctx: AdapterContext, credentials: Credentials) -> Activation:
    from app.brokers.webull.adapter import WebullAdapter

    adapter = WebullAdapter(ctx.settings, credentials, ctx.http)
    try:
        return _activation(await adapter.check_token())
    finally:
        await adapter.close()


async def _renew(ctx: AdapterContext, credentials: Credentials) -> Activation:
    """Refresh a confirmed access token before its 15 days run out: ``active`` with the new
    expiry, or ``failed`` when Webull reports it ``INVALID``/``EXPIRED``."""
    from app.brokers.webull.adapter import WebullAdapter

    adapter = WebullAdapter(ctx.settings, credentials, ctx.http)
    try:
        return _activation(await adapter.refresh_token())
    finally:
        await adapter.close()


def webull_spec() -> BrokerSpec:
    from app.brokers.registry import BrokerSpec, CredentialSetup
    from app.brokers.webull.adapter import WEBULL_CAPABILITIES
    from app.brokers.webull.auth import check_credentials

    return BrokerSpec(
        slug="webull",
        name="Webull",
        tier=Tier.A,
        auth=AuthKind.api_key,
        capabilities=WEBULL_CAPABILITIES,
        factory=_factory,
        configured=_configured,
        check_credentials=check_credentials,
        credential_setup=CredentialSetup(
            begin=_begin, check=_check, pending_display=PENDING_DISPLAY, renew=_renew
        ),
    )
