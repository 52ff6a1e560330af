"""A fake OAuth 2.0 authorization server, with a tiny bearer-protected API, for tests.

It speaks the standards rather than one broker, so the broker-neutral connect flow and
token lifecycle are tested against the protocol every OAuth broker shares:

* RFC 6749 authorization endpoint (§4.1.1/§4.1.2): exact ``redirect_uri`` match against the
  registered client, then a 302 back with ``code`` and ``state`` or, on refusal, ``error`` and
  ``state`` (§4.1.2.1); an unknown client or redirect URI is answered 400 here, never
  redirected. The "user" consents (or declines) as the test says, with no login page.
* RFC 6749 token endpoint (§3.2, §4.1.3, §5.1, §5.2): form-encoded POSTs, client
  authentication by HTTP Basic (§2.3.1, with the form-urlencoding of id and secret) or by body
  parameters (never both), the ``authorization_code`` and ``refresh_token`` (§6) grants,
  ``Cache-Control: no-store``, errors as ``{"error", "error_description"}`` with 400, or 401
  plus ``WWW-Authenticate`` for ``invalid_client``. Codes are single use (a replay revokes
  what the code issued, §4.1.2) and live 10 minutes.
* RFC 7636 PKCE: ``S256`` challenges only; the verifier is checked at the token endpoint
  (§4.6) and a missing or wrong one is ``invalid_grant``.
* RFC 7009 revocation: 200 for any token (unknown ones too), revoking a refresh token ends
  the grant and its access tokens.
* RFC 9700 §4.14.2 (switch ``rotate_refresh_tokens``): each refresh issues a new refresh
  token; presenting a superseded one revokes the whole grant.
* RFC 6750 §3 on the API: 401 with ``WWW-Authenticate: Bearer error="invalid_token"``.
* Optional RFC 9207 ``iss`` on the authorization response (``issuer``).

The API is not a real broker's (a test-only "example" broker's accounts and balances), just
enough for an adapter to discover accounts with the access token.

Time comes from an injected clock. Fault switches live in ``faults`` (latency, 5xx, 429 with
Retry-After, a revocation endpoint answering 503) and ``hold_token_requests()``, which keeps
token requests waiting until ``release_token_requests()`` (to line up concurrent refreshes).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlencode, urlsplit, urlunsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

# RFC 7636 §4.1 / §4.2: 43..128 characters of the unreserved set.
PKCE_PATTERN = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
CODE_TTL = timedelta(minutes=10)  # RFC 6749 §4.1.2: "A maximum ... of 10 minutes is RECOMMENDED"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def s256(verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def oauth_error(status: int, error: str, description: str, **headers: str) -> JSONResponse:
    """RFC 6749 §5.2 error response."""
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers={**NO_STORE, **headers},
    )


def add_query(uri: str, params: dict[str, str]) -> str:
    parts = urlsplit(uri)
    query = f"{parts.query}&{urlencode(params)}" if parts.query else urlencode(params)
    return urlunsplit(parts._replace(query=query))


@dataclass
class FakeClient:
    client_id: str
    client_secret: str
    redirect_uris: frozenset[str]
    scopes: frozenset[str] = frozenset({"read", "trade"})


@dataclass
class FakeOwner:
    """The resource owner (the broker's customer) and their accounts."""

    name: str
    accounts: list[dict[str, str]]


@dataclass
class Grant:
    id: str
    client_id: str
    owner: str
    scope: str
    refresh_token: str | None
    refresh_expires_at: datetime | None
    revoked: bool = False
    superseded: set[str] = field(default_factory=set)


@dataclass
class Code:
    client_id: str
    redirect_uri: str | None  # as sent in the authorization request (None: not sent)
    challenge: str | None
    owner: str
    scope: str
    expires_at: datetime
    used: bool = False
    grant_id: str | None = None
    verifier: str | None = None  # the code_verifier presented (tests look for leaks of it)


@dataclass
class Access:
    grant_id: str
    expires_at: datetime
    revoked: bool = False


@dataclass
class TokenRequest:
    """One token endpoint request as the fake saw it (for counting in tests)."""

    grant_type: str | None
    path: str
    client_id: str | None
    grant_id: str | None
    status: int
    error: str | None


@dataclass
class Faults:
    """Counters apply to the next N token-endpoint requests, then reset.

    ``latency``: seconds before every token/revocation answer. ``server_errors``: answer
    ``server_error_status``. ``rate_limited``: answer 429 with ``Retry-After``.
    ``revoke_unavailable``: the next N revocation requests answer 503 (RFC 7009 §2.2.1).
    ``api_unavailable``: the next N API requests answer 503.
    """

    latency: float = 0.0
    server_errors: int = 0
    server_error_status: int = 503
    rate_limited: int = 0
    retry_after: int = 30
    revoke_unavailable: int = 0
    api_unavailable: int = 0


class FakeAuthorizationServer:
    """State, switches and the ASGI ``app`` (endpoints under ``/oauth`` and ``/api/v1``)."""

    def __init__(
        self,
        *,
        clock: Callable[[], datetime] | None = None,
        access_ttl: int = 1800,
        refresh_ttl: timedelta | None = timedelta(days=7),
        rotate_refresh_tokens: bool = False,
        issue_refresh_tokens: bool = True,
        require_pkce: bool = True,
        issuer: str | None = None,
        accept_json: bool = False,
    ) -> None:
        self.clock = clock or (lambda: datetime.now(UTC))
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.issue_refresh_tokens = issue_refresh_tokens
        self.require_pkce = require_pkce
        self.issuer = issuer
        self.accept_json = accept_json  # token requests as a JSON body (tastytrade does this)
        self.faults = Faults()
        self.consent = "approve"  # or "deny": what the user clicks at the broker
        self.login_as: str | None = None  # the owner who is "logged in" at the broker
        self.clients: dict[str, FakeClient] = {}
        self.owners: dict[str, FakeOwner] = {}
        self.codes: dict[str, Code] = {}
        self.grants: dict[str, Grant] = {}
        self.access: dict[str, Access] = {}
        self.token_requests: list[TokenRequest] = []
        self.revocations: list[tuple[str | None, bool]] = []  # (hint, token was known)
        self.api_requests: list[tuple[str, int]] = []  # (path, status)
        self.orders_placed: list[dict[str, Any]] = []
        self._released = asyncio.Event()
        self._released.set()
        self.waiting = 0  # token requests currently held
        self.app = Starlette(
            routes=[
                Route("/oauth/authorize", self.authorize, methods=["GET"]),
                Route("/oauth/token", self.token, methods=["POST"]),
                # A separate refresh endpoint, as some brokers have (same rules).
                Route("/oauth/refreshtoken", self.token, methods=["POST"]),
                Route("/oauth/revoke", self.revoke, methods=["POST"]),
                Route("/api/v1/accounts", self.accounts, methods=["GET"]),
                Route("/api/v1/accounts/{account_id}/balances", self.balances, methods=["GET"]),
                Route("/api/v1/accounts/{account_id}/orders", self.orders, methods=["POST"]),
            ]
        )

    # --- test controls -----------------------------------------------------------------

    def add_client(self, redirect_uri: str, *, secret: str | None = None) -> FakeClient:
        client = FakeClient(
            client_id="client-" + secrets.token_hex(8),
            client_secret=secret or secrets.token_urlsafe(24),
            redirect_uris=frozenset({redirect_uri}),
        )
        self.clients[client.client_id] = client
        return client

    def add_owner(self, name: str | None = None, *, accounts: int = 2) -> FakeOwner:
        owner = FakeOwner(
            name=name or "owner-" + secrets.token_hex(4),
            accounts=[
                {
                    "id": secrets.token_hex(6),
                    "name": f"Individual {n + 1}",
                    "number": f"{secrets.randbelow(10**8):08d}",
                }
                for n in range(accounts)
            ],
        )
        self.owners[owner.name] = owner
        self.login_as = self.login_as or owner.name
        return owner

    def grants_of(self, owner: str) -> list[Grant]:
        return [g for g in self.grants.values() if g.owner == owner]

    def revoke_grants(self, owner: str) -> None:
        """As if the user withdrew the app's access at the broker."""
        for grant in self.grants_of(owner):
            grant.revoked = True

    def refreshes(self, grant_id: str | None = None) -> list[TokenRequest]:
        """The refresh_token grant requests (for one grant, when given) seen so far."""
        return [
            r
            for r in self.token_requests
            if r.grant_type == "refresh_token" and (grant_id is None or r.grant_id == grant_id)
        ]

    def hold_token_requests(self) -> None:
        self._released.clear()

    def release_token_requests(self) -> None:
        self._released.set()

    # --- authorization endpoint (RFC 6749 §4.1.1) --------------------------------------

    async def authorize(self, request: Request) -> Response:
        query = request.query_params
        client = self.clients.get(query.get("client_id", ""))
        if client is None:
            return PlainTextResponse("unknown client_id", status_code=400)
        redirect_uri = query.get("redirect_uri")
        target = redirect_uri
        if target is None and len(client.redirect_uris) == 1:
            target = next(iter(client.redirect_uris))
        if target is None or target not in client.redirect_uris:
            # §4.1.2.1: never redirect to an unverified URI.
            return PlainTextResponse("redirect_uri does not match the client", status_code=400)
        state = query.get("state")

        def answer(params: dict[str, str]) -> Response:
            if state is not None:
                params["state"] = state
            if self.issuer is not None:
                params["iss"] = self.issuer
            assert target is not None
            return RedirectResponse(add_query(target, params), status_code=302)

        if query.get("response_type") != "code":
            return answer({"error": "unsupported_response_type"})
        challenge = query.get("code_challenge")
        method = query.get("code_challenge_method", "plain")
        if challenge is None and self.require_pkce:
            return answer({"error": "invalid_request", "error_description": "PKCE required"})
        if challenge is not None and (method != "S256" or not PKCE_PATTERN.match(challenge)):
            return answer({"error": "invalid_request", "error_description": "S256 challenges only"})
        requested = set(query.get("scope", "").split())
        if not requested <= client.scopes:
            return answer({"error": "invalid_scope"})
        if self.consent != "approve" or self.login_as is None:
            return answer({"error": "access_denied", "error_description": "the user declined"})
        code = secrets.token_urlsafe(24)
        self.codes[code] = Code(
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            challenge=challenge,
            owner=self.login_as,
            scope=" ".join(sorted(requested)) or "read",
            expires_at=self.clock() + CODE_TTL,
        )
        return answer({"code": code})

    # --- token endpoint (RFC 6749 §3.2) --------------------------------------------------

    async def token(self, request: Request) -> Response:
        form = await self._form(request)
        record = TokenRequest(
            grant_type=None if form is None else form.get("grant_type"),
            path=request.url.path,
            client_id=None,
            grant_id=None,
            status=200,
            error=None,
        )
        self.token_requests.append(record)
        response = await self._token(request, form, record)
        record.status = response.status_code
        return response

    async def _token(
        self, request: Request, form: dict[str, str] | None, record: TokenRequest
    ) -> Response:
        if self.faults.latency:
            await asyncio.sleep(self.faults.latency)
        if not self._released.is_set():
            self.waiting += 1
            try:
                await self._released.wait()
            finally:
                self.waiting -= 1
        if self.faults.server_errors > 0:
            self.faults.server_errors -= 1
            return JSONResponse(
                {"error": "server_error"}, status_code=self.faults.server_error_status
            )
        if self.faults.rate_limited > 0:
            self.faults.rate_limited -= 1
            return oauth_error(
                429,
                "temporarily_unavailable",
                "too many requests",
                **{"Retry-After": str(self.faults.retry_after)},
            )
        if form is None:
            return self._fail(
                record, 400, "invalid_request", "the body must be application/x-www-form-urlencoded"
            )
        client = self._authenticate(request, form)
        if isinstance(client, Response):
            record.error = "invalid_client"
            return client
        record.client_id = client.client_id
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            return self._code_grant(client, form, record)
        if grant_type == "refresh_token":
            return self._refresh_grant(client, form, record)
        return self._fail(record, 400, "unsupported_grant_type", "unknown grant_type")

    def _code_grant(
        self, client: FakeClient, form: dict[str, str], record: TokenRequest
    ) -> Response:
        code = self.codes.get(form.get("code", ""))
        if code is None or code.client_id != client.client_id:
            return self._fail(record, 400, "invalid_grant", "unknown authorization code")
        if code.used:
            # §4.1.2: a code used twice revokes what it issued.
            if code.grant_id is not None:
                self.grants[code.grant_id].revoked = True
            return self._fail(record, 400, "invalid_grant", "authorization code already used")
        code.used = True
        if code.expires_at <= self.clock():
            return self._fail(record, 400, "invalid_grant", "authorization code expired")
        if code.redirect_uri is not None and form.get("redirect_uri") != code.redirect_uri:
            return self._fail(record, 400, "invalid_grant", "redirect_uri does not match")
        code.verifier = form.get("code_verifier")
        if code.challenge is not None:
            verifier = form.get("code_verifier")
            if verifier is None or not PKCE_PATTERN.match(verifier):
                return self._fail(
                    record, 400, "invalid_grant", "code_verifier missing or malformed"
                )
            if s256(verifier) != code.challenge:
                return self._fail(record, 400, "invalid_grant", "code_verifier does not match")
        grant = Grant(
            id="grant-" + secrets.token_hex(6),
            client_id=client.client_id,
            owner=code.owner,
            scope=code.scope,
            refresh_token=secrets.token_urlsafe(32) if self.issue_refresh_tokens else None,
            refresh_expires_at=(
                None if self.refresh_ttl is None else self.clock() + self.refresh_ttl
            ),
        )
        self.grants[grant.id] = grant
        code.grant_id = grant.id
        record.grant_id = grant.id
        return self._issue(grant, include_refresh=True)

    def _refresh_grant(
        self, client: FakeClient, form: dict[str, str], record: TokenRequest
    ) -> Response:
        presented = form.get("refresh_token")
        if not presented:
            return self._fail(record, 400, "invalid_request", "refresh_token is required")
        grant = next(
            (g for g in self.grants.values() if presented in (g.refresh_token, *g.superseded)),
            None,
        )
        if grant is None or grant.client_id != client.client_id:
            return self._fail(record, 400, "invalid_grant", "unknown refresh token")
        record.grant_id = grant.id
        if presented != grant.refresh_token:
            grant.revoked = True  # RFC 9700 §4.14.2: reuse of a rotated token ends the grant
            return self._fail(record, 400, "invalid_grant", "refresh token already used")
        if grant.revoked:
            return self._fail(record, 400, "invalid_grant", "the grant was revoked")
        if grant.refresh_expires_at is not None and grant.refresh_expires_at <= self.clock():
            return self._fail(record, 400, "invalid_grant", "refresh token expired")
        if self.rotate_refresh_tokens:
            grant.superseded.add(presented)
            grant.refresh_token = secrets.token_urlsafe(32)
        return self._issue(grant, include_refresh=True)

    def _issue(self, grant: Grant, *, include_refresh: bool) -> Response:
        access = secrets.token_urlsafe(32)
        self.access[access] = Access(
            grant_id=grant.id, expires_at=self.clock() + timedelta(seconds=self.access_ttl)
        )
        body: dict[str, Any] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.access_ttl,
            "scope": grant.scope,
        }
        if include_refresh and grant.refresh_token is not None:
            body["refresh_token"] = grant.refresh_token
        return JSONResponse(body, headers=NO_STORE)

    def _fail(
        self, record: TokenRequest, status: int, error: str, description: str
    ) -> JSONResponse:
        record.error = error
        return oauth_error(status, error, description)

    async def _form(self, request: Request) -> dict[str, str] | None:
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type == "application/json" and self.accept_json:
            body = await request.json()
            if not isinstance(body, dict):
                return None
            return {k: v for k, v in body.items() if isinstance(v, str)}
        if content_type != "application/x-www-form-urlencoded":
            await request.body()
            return None
        body = (await request.body()).decode("utf-8", errors="replace")
        return dict(parse_qsl(body, keep_blank_values=True))

    def _authenticate(self, request: Request, form: dict[str, str]) -> FakeClient | Response:
        """§2.3.1: HTTP Basic (preferred) or body parameters, never both."""
        header = request.headers.get("authorization")
        in_body = "client_secret" in form
        if header is not None and in_body:
            return oauth_error(400, "invalid_request", "more than one client authentication")
        if header is not None:
            scheme, _, value = header.partition(" ")
            try:
                decoded = base64.b64decode(value, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            client_id, sep, secret = decoded.partition(":")
            client = self.clients.get(unquote_plus(client_id))
            if (
                scheme.lower() != "basic"
                or not sep
                or client is None
                or not secrets.compare_digest(unquote_plus(secret), client.client_secret)
            ):
                return oauth_error(
                    401,
                    "invalid_client",
                    "client authentication failed",
                    **{"WWW-Authenticate": 'Basic realm="fake-oauth"'},
                )
            if form.get("client_id") not in (None, client.client_id):
                return oauth_error(400, "invalid_request", "client_id does not match")
            return client
        if in_body:
            client = self.clients.get(form.get("client_id", ""))
            if client is None or not secrets.compare_digest(
                form["client_secret"], client.client_secret
            ):
                return oauth_error(401, "invalid_client", "client authentication failed")
            return client
        return oauth_error(401, "invalid_client", "client authentication required")

    # --- revocation endpoint (RFC 7009) ---------------------------------------------------

    async def revoke(self, request: Request) -> Response:
        if self.faults.latency:
            await asyncio.sleep(self.faults.latency)
        if self.faults.revoke_unavailable > 0:
            self.faults.revoke_unavailable -= 1
            return Response(status_code=503, headers={"Retry-After": "5"})
        form = await self._form(request)
        if form is None:
            return oauth_error(400, "invalid_request", "form body required")
        client = self._authenticate(request, form)
        if isinstance(client, Response):
            return client
        token = form.get("token")
        if not token:
            return oauth_error(400, "invalid_request", "token is required")
        hint = form.get("token_type_hint")
        known = False
        for grant in self.grants.values():
            if grant.client_id == client.client_id and grant.refresh_token == token:
                grant.revoked = True
                known = True
        found = self.access.get(token)
        if found is not None and self.grants[found.grant_id].client_id == client.client_id:
            found.revoked = True
            known = True
        self.revocations.append((hint, known))
        return Response(status_code=200)

    # --- the protected API (RFC 6750) ------------------------------------------------------

    def _bearer(self, request: Request) -> FakeOwner | Response:
        if self.faults.api_unavailable > 0:
            self.faults.api_unavailable -= 1
            return Response(status_code=503)
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return Response(status_code=401, headers={"WWW-Authenticate": 'Bearer realm="fake"'})
        access = self.access.get(token)
        grant = None if access is None else self.grants.get(access.grant_id)
        if (
            access is None
            or grant is None
            or access.revoked
            or grant.revoked
            or access.expires_at <= self.clock()
        ):
            return Response(
                status_code=401,
                headers={
                    "WWW-Authenticate": 'Bearer realm="fake", error="invalid_token", '
                    'error_description="The access token expired or was revoked"'
                },
            )
        return self.owners[grant.owner]

    async def accounts(self, request: Request) -> Response:
        owner = self._bearer(request)
        if isinstance(owner, Response):
            self.api_requests.append((request.url.path, owner.status_code))
            return owner
        self.api_requests.append((request.url.path, 200))
        return JSONResponse({"accounts": owner.accounts})

    async def balances(self, request: Request) -> Response:
        owner = self._bearer(request)
        if isinstance(owner, Response):
            self.api_requests.append((request.url.path, owner.status_code))
            return owner
        account_id = request.path_params["account_id"]
        if account_id not in {a["id"] for a in owner.accounts}:
            self.api_requests.append((request.url.path, 404))
            return JSONResponse({"error": "not_found"}, status_code=404)
        self.api_requests.append((request.url.path, 200))
        return JSONResponse(
            {"cash": "1000.50", "equity": "2500.75", "buying_power": "1000.50", "currency": "USD"}
        )

    async def orders(self, request: Request) -> Response:
        owner = self._bearer(request)
        if isinstance(owner, Response):
            self.api_requests.append((request.url.path, owner.status_code))
            return owner
        body = await request.json()
        order = {
            "id": "ord-" + secrets.token_hex(6),
            "client_order_id": body["client_order_id"],
            "symbol": body["symbol"],
            "side": body["side"],
            "quantity": body["quantity"],
            "status": "accepted",
            "created_at": self.clock().isoformat(),
        }
        self.orders_placed.append(order)
        self.api_requests.append((request.url.path, 200))
        return JSONResponse(order)
