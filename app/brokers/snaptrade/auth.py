"""SnapTrade partner request signing, per-user credentials and webhook verification.

Requests (https://docs.snaptrade.com/docs/request-signatures; the official Python SDK's
``snaptrade_client/request_after_hook.py`` and ``request_before_url_hook.py``, passiv/
snaptrade-sdks @ 2df67c03):

* the query carries ``clientId`` and ``timestamp`` (Unix seconds), after the operation's own
  parameters (``userId``, ``userSecret``, ...);
* the ``Signature`` header is base64(HMAC-SHA256(consumerKey, canonical JSON of
  ``{"content": <JSON body, or null when absent or {}>, "path": <the request path as sent>,
  "query": <the raw query string as sent>}``)), canonical meaning sorted keys and no
  whitespace (``json.dumps(..., separators=(",", ":"), sort_keys=True)``).

The signature covers the query *exactly as sent*, so it is computed in an httpx auth flow
over the final request, after httpx encoded the parameters and the body.

Webhooks (https://docs.snaptrade.com/docs/webhooks, "Verifying Webhook Authenticity"): the
``Signature`` header is base64(HMAC-SHA256(consumerKey, canonical JSON of the parsed
payload)); a payload whose ``eventTimestamp`` is older than a few minutes is a replay.

Per-user credentials: SnapTrade's ``userId`` (ours to choose) and the ``userSecret`` it
generates at ``POST /snapTrade/registerUser``; both are sealed in the vault.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Generator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from app.brokers import errors
from app.brokers.base import AggregatorEvent
from app.brokers.http import credential_key
from app.brokers.snaptrade.mapping import REFRESH_EVENTS, SLUG, ts
from app.config import Settings
from app.security.credentials import Credentials, is_single_line, require_fields
from app.security.redaction import register_secret

USER_ID = "user_id"
USER_SECRET = "user_secret"  # noqa: S105 - a field name, not a secret
CREDENTIAL_FIELDS = frozenset({USER_ID, USER_SECRET})


def canonical(value: Any) -> str:
    """SnapTrade's canonical JSON: sorted keys at every level, no whitespace."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _hmac(consumer_key: str, message: str) -> str:
    digest = hmac.new(consumer_key.encode(), message.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def signature(consumer_key: str, *, path: str, query: str, content: Any) -> str:
    """The ``Signature`` header of one request. ``content`` is the parsed JSON body."""
    if content == {}:
        content = None  # "Use null when the request has no body or the body is empty."
    return _hmac(consumer_key, canonical({"content": content, "path": path, "query": query}))


def webhook_signature(consumer_key: str, payload: Any) -> str:
    return _hmac(consumer_key, canonical(payload))


class PartnerKey:
    """The deployment's SnapTrade API key. The consumer key never appears in a repr."""

    __slots__ = ("client_id", "consumer_key")

    def __init__(self, client_id: str, consumer_key: str) -> None:
        register_secret(consumer_key)
        self.client_id = client_id
        self.consumer_key = consumer_key

    def __repr__(self) -> str:
        return f"PartnerKey(client_id={self.client_id!r}, consumer_key=***)"


def partner_key(settings: Settings) -> PartnerKey:
    if settings.snaptrade_client_id is None or settings.snaptrade_consumer_key is None:
        raise errors.AuthenticationFailed("SnapTrade is not configured here", broker=SLUG)
    return PartnerKey(
        settings.snaptrade_client_id, settings.snaptrade_consumer_key.get_secret_value()
    )


class SignedRequests(httpx.Auth):
    """Adds ``clientId`` and ``timestamp`` to the query and signs the request as sent."""

    requires_request_body = True

    def __init__(self, key: PartnerKey, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._clock = clock

    def __repr__(self) -> str:
        return f"SignedRequests({self._key!r})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        own = f"clientId={quote(self._key.client_id, safe='')}&timestamp={int(self._clock())}"
        query = request.url.query.decode("ascii")
        query = f"{query}&{own}" if query else own
        request.url = request.url.copy_with(query=query.encode("ascii"))
        path = request.url.raw_path.decode("ascii").split("?", 1)[0]
        content = json.loads(request.content) if request.content else None
        request.headers["Signature"] = signature(
            self._key.consumer_key, path=path, query=query, content=content
        )
        yield request


def check_credentials(values: Mapping[str, str]) -> Credentials:
    """The credential a connection stores; ValueError naming the problem (never a value)."""
    require_fields(values, CREDENTIAL_FIELDS)
    for name in sorted(CREDENTIAL_FIELDS):
        value = values[name]
        if not is_single_line(value, 512):
            raise ValueError(f"{name} is not a valid SnapTrade {name.replace('_', ' ')}")
    return Credentials({name: values[name] for name in sorted(CREDENTIAL_FIELDS)})


def user_params(credentials: Credentials | None) -> dict[str, str]:
    """``userId`` and ``userSecret``: the query of every user-scoped call."""
    if credentials is None or not CREDENTIAL_FIELDS <= set(credentials):
        raise errors.AuthenticationFailed(
            "no SnapTrade user secret for this connection", broker=SLUG
        )
    return {"userId": credentials[USER_ID], "userSecret": credentials[USER_SECRET]}


def bucket_key(key: PartnerKey) -> str:
    """SnapTrade limits per clientId (every user together): one bucket per partner key."""
    return credential_key(SLUG, key.client_id)


# --- webhooks ----------------------------------------------------------------------------


def verify_webhook(
    settings: Settings, body: bytes, headers: Mapping[str, str], now: datetime
) -> AggregatorEvent:
    """The event a SnapTrade webhook carries, once its signature and age are checked.

    Raises ``WebhookRejected`` (never acting on anything) when the signature is missing or
    does not match the consumer key's, the body is not a JSON object, the ``clientId`` is
    not ours, or ``eventTimestamp`` is older than ``snaptrade_webhook_max_age_seconds`` (or
    more than that in the future).
    """
    key = partner_key(settings)
    sent = headers.get("signature") or headers.get("Signature")
    if not sent:
        raise errors.WebhookRejected("the webhook has no Signature header", broker=SLUG)
    try:
        payload = json.loads(body)
    except ValueError:
        raise errors.WebhookRejected("the webhook body is not JSON", broker=SLUG) from None
    if not isinstance(payload, dict):
        raise errors.WebhookRejected("the webhook body is not a JSON object", broker=SLUG)
    expected = webhook_signature(key.consumer_key, payload)
    if not hmac.compare_digest(expected.encode(), sent.strip().encode()):
        raise errors.WebhookRejected("the webhook signature does not match", broker=SLUG)
    # Signed by our consumer key from here on; the remaining checks are about replays and
    # payloads meant for another client.
    client_id = payload.get("clientId")
    if client_id is not None and client_id != key.client_id:
        raise errors.WebhookRejected("the webhook is for another SnapTrade client", broker=SLUG)
    try:
        occurred = ts(payload.get("eventTimestamp"), "eventTimestamp")
    except errors.UnknownBrokerValue:
        raise errors.WebhookRejected(
            "the webhook has no valid eventTimestamp", broker=SLUG
        ) from None
    max_age = timedelta(seconds=settings.snaptrade_webhook_max_age_seconds)
    if abs(now - occurred) > max_age:
        raise errors.WebhookRejected("the webhook is too old (a replay?)", broker=SLUG)
    event_type, user_id = payload.get("eventType"), payload.get("userId")
    if not isinstance(event_type, str) or not isinstance(user_id, str):
        raise errors.WebhookRejected("the webhook has no eventType or userId", broker=SLUG)
    # ``webhookId`` per the docs' examples; the spec's WebhookBase spells it ``webookId``.
    event_id = payload.get("webhookId") or payload.get("webookId")
    link = payload.get("brokerageAuthorizationId") or payload.get("connectionId")
    account = payload.get("accountId")
    return AggregatorEvent(
        event_id=str(event_id) if event_id else "",
        event_type=event_type,
        user_ref=user_id,
        occurred_at=occurred.astimezone(UTC),
        refresh=event_type in REFRESH_EVENTS,
        link_id=link if isinstance(link, str) else None,
        account_ref=account if isinstance(account, str) else None,
    )
