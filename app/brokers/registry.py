"""The tier-aware broker registry: the only place that knows which brokers exist.

A ``BrokerSpec`` says what a path is (tier, label, auth kind, capabilities) and how to build
an adapter for one connection. Services resolve adapters through here, never by name checks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from app.brokers.base import AggregatorEvent, AuthKind, BrokerAdapter, Capabilities, Tier
from app.config import Settings

if TYPE_CHECKING:
    from app.brokers.http import HttpPool
    from app.brokers.oauth import OAuthSpec
    from app.paper.engine import PaperEngine
    from app.security.credentials import Credentials


@dataclass(frozen=True, slots=True)
class AdapterContext:
    """What adapters may use besides their credentials: shared clients and the paper engine."""

    settings: Settings
    paper_engine: PaperEngine
    owner: str
    # Shared broker HTTP clients and per-credential rate buckets (None: the adapter makes its
    # own and closes it in ``close()``).
    http: HttpPool | None = None


AdapterFactory = Callable[[AdapterContext, "Credentials | None"], BrokerAdapter]
# An aggregator's webhook: (settings, raw body, headers, now) -> the verified event, or
# ``errors.WebhookRejected`` when it does not prove it comes from the aggregator.
WebhookVerifier = Callable[[Settings, bytes, Mapping[str, str], datetime], AggregatorEvent]


@dataclass(frozen=True, slots=True)
class Activation:
    """Where a credential stands after a broker-side activation step.

    Webull's access token is created by a signed call and is ``PENDING`` until the user
    confirms it in the Webull app: ``pending`` until then, ``active`` once confirmed,
    ``failed`` when it expired or was refused. ``credentials`` is what to store (the user's
    key plus whatever the step issued); ``reason`` is safe to show.
    """

    credentials: Credentials
    state: Literal["active", "pending", "failed"]
    reason: str = ""
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CredentialSetup:
    """A broker's activation step for API-key connections (see ``Activation``).

    ``begin`` runs when the connection is created (before anything is stored), ``check``
    afterwards while the connection waits for the user (``app.services.connections``).
    Both raise ``app.brokers.errors`` like adapter calls. ``pending_display`` is what the
    connection shows while it waits.

    ``renew`` (optional) extends an activated credential that expires (Webull's access
    token lasts 15 days): the connection service's renewal pass
    (``ConnectionService.renew_all_expiring``) runs it on active connections whose
    ``expires_at`` is near. ``active`` carries the renewed credential and its new expiry;
    ``failed`` means the broker will not renew it (the connection becomes ``broken``).
    """

    begin: Callable[[AdapterContext, Credentials], Awaitable[Activation]]
    check: Callable[[AdapterContext, Credentials], Awaitable[Activation]]
    pending_display: str
    renew: Callable[[AdapterContext, Credentials], Awaitable[Activation]] | None = None


@dataclass(frozen=True, slots=True)
class BrokerSpec:
    slug: str
    name: str
    tier: Tier
    auth: AuthKind
    capabilities: Capabilities
    factory: AdapterFactory
    configured: Callable[[Settings], bool]
    # API-key paths: the credential fields a connection takes, checked for shape (names,
    # not values, in any ValueError) before anything is sent to the broker.
    check_credentials: Callable[[Mapping[str, str]], Credentials] | None = None
    # Whether the broker can issue us a fresh credential without the user (the OAuth refresh
    # flow re-issues). The Tier A rotation sweep (app.services.token_rotation) hands such
    # connections to its ``Reissuer`` when their token passes ``rotate_after``; the others
    # (API keys, which only the user can regenerate) are flagged ``rotation_due``.
    can_reissue: bool = False
    # The platform's own account on this broker (ownership ``platform``): its credential
    # from the deployment's settings, or None where this deployment has none configured.
    platform_credentials: Callable[[Settings], Credentials | None] | None = None
    # OAuth paths (``auth=oauth2``): the broker's authorization server, as data. The connect
    # flow (GET /v1/oauth/{slug}/authorize) and the token refresher use only this.
    oauth: OAuthSpec | None = None
    # API-key paths whose key must be activated at the broker first (Webull's access token).
    credential_setup: CredentialSetup | None = None
    # One order stream serves every account of a credential and only one may be open at a
    # time: the adapter is a ``SupportsSharedOrderStream`` and the supervisor runs one
    # stream per connection.
    shared_order_stream: bool = False

    def oauth_ready(self, settings: Settings) -> bool:
        """Whether this deployment can run the OAuth flow for this broker."""
        return (
            self.auth is AuthKind.oauth2
            and self.oauth is not None
            and self.configured(settings)
            and self.oauth.configured(settings, self.slug)
        )

    # Aggregators whose users link brokerages at a hosted portal, the connection being made
    # by POST /v1/connections (SnapTrade; ``app.services.aggregators``). Plaid has its own
    # link flow instead.
    portal_connect: bool = False
    # Aggregators that notify by signed webhook (POST /v1/webhooks/<slug>).
    webhook: WebhookVerifier | None = None

    @property
    def label(self) -> str:
        return {"A": "Live", "B": "Live", "C": "Linked", "paper": "Paper"}[self.tier.value]

    def platform_credentials_for(self, settings: Settings) -> Credentials | None:
        """The platform account's credential, or None when this deployment has none."""
        if self.platform_credentials is None:
            return None
        return self.platform_credentials(settings)

    @property
    def token_tier(self) -> str | None:
        """The ``broker_tokens.broker_tier`` value, or None for paths without a credential."""
        return {"A": "tier_a", "B": "tier_b", "C": "tier_c"}.get(self.tier.value)


def _paper_factory(ctx: AdapterContext, _credentials: Credentials | None) -> BrokerAdapter:
    from app.paper.adapter import PaperAdapter

    return PaperAdapter(ctx.paper_engine, owner=ctx.owner)


def _always(_settings: Settings) -> bool:
    return True


def _paper_spec() -> BrokerSpec:
    from app.paper.adapter import PAPER_CAPABILITIES

    return BrokerSpec(
        slug="paper",
        name="Paper",
        tier=Tier.paper,
        auth=AuthKind.none,
        capabilities=PAPER_CAPABILITIES,
        factory=_paper_factory,
        configured=_always,
    )


class BrokerRegistry:
    def __init__(self, specs: list[BrokerSpec]) -> None:
        self._specs = {spec.slug: spec for spec in specs}

    def register(self, spec: BrokerSpec) -> None:
        """Add a broker path, or replace the one with the same slug (plugins, test faults)."""
        self._specs[spec.slug] = spec

    def get(self, slug: str) -> BrokerSpec | None:
        return self._specs.get(slug)

    def all(self) -> list[BrokerSpec]:
        return list(self._specs.values())

    def available(self, settings: Settings) -> list[BrokerSpec]:
        """Brokers offered for new connections on this deployment (OAuth brokers only with
        their client id, secret and redirect URI configured)."""
        return [
            spec
            for spec in self._specs.values()
            if spec.configured(settings)
            and (spec.auth is not AuthKind.oauth2 or spec.oauth_ready(settings))
        ]


def default_registry() -> BrokerRegistry:
    from app.brokers.alpaca import alpaca_spec
    from app.brokers.coinbase import coinbase_spec
    from app.brokers.ibkr import ibkr_spec
    from app.brokers.plaid import plaid_spec
    from app.brokers.robinhood import robinhood_spec
    from app.brokers.schwab import schwab_spec
    from app.brokers.snaptrade import snaptrade_spec
    from app.brokers.tastytrade import tastytrade_spec
    from app.brokers.tradier import tradier_spec
    from app.brokers.webull import webull_spec

    return BrokerRegistry(
        [
            _paper_spec(),
            alpaca_spec(),
            tradier_spec(),
            tastytrade_spec(),
            schwab_spec(),
            coinbase_spec(),
            robinhood_spec(),
            webull_spec(),
            ibkr_spec(),
            plaid_spec(),
            snaptrade_spec(),
        ]
    )
