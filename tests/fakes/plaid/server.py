"""A fake Plaid (Investments, Items, Link tokens, webhooks) for tests.

It speaks Plaid's real protocol, from the official OpenAPI file (plaid/plaid-openapi
``2020-09-14.yml``) and https://plaid.com/docs/api/ :

* Every route is ``POST`` with a JSON body carrying ``client_id`` and ``secret`` (the
  ``PLAID-CLIENT-ID``/``PLAID-SECRET`` headers are accepted too, as documented); wrong keys
  answer 400 ``INVALID_INPUT``/``INVALID_API_KEYS``.
* Paths: ``/link/token/create``, ``/sandbox/public_token/create``,
  ``/item/public_token/exchange``, ``/item/get``, ``/item/remove``, ``/accounts/get``,
  ``/investments/holdings/get``, ``/investments/transactions/get`` (``count``/``offset``
  paging, ``total_investment_transactions``), ``/institutions/get_by_id``,
  ``/webhook_verification_key/get``, ``/sandbox/item/fire_webhook``.
* Bodies follow the spec's schemas (``AccountBase``, ``Holding``, ``Security``,
  ``InvestmentTransaction``, ``Item``, ``Institution``, ``JWKPublicKey``) with JSON numbers,
  and ``request_id`` on every answer.
* Errors in Plaid's shape: ``{"error_type", "error_code", "error_code_reason",
  "error_message", "display_message", "request_id", "causes", "status",
  "documentation_url", "suggested_action"}``; ``ITEM_LOGIN_REQUIRED`` (400 ``ITEM_ERROR``,
  the spec's example text), ``INVALID_ACCESS_TOKEN`` and ``INVALID_PUBLIC_TOKEN`` (400
  ``INVALID_INPUT``), 429 ``RATE_LIMIT_EXCEEDED`` (the docs' ``ACCOUNTS_LIMIT`` body; the
  codes of other endpoints' limits are not documented, so the fault says which to send),
  500 ``API_ERROR``/``INTERNAL_SERVER_ERROR``.
* Sandbox-like tokens: ``link-sandbox-<uuid>``, ``public-sandbox-<uuid>`` (single use, 30
  minutes), ``access-sandbox-<uuid>``; the sandbox institution First Platypus Bank
  (``ins_109508``).
* Webhooks signed as Plaid signs them: an ES256 JWT in ``Plaid-Verification`` whose header
  names the key (``kid``) and whose claims are ``iat`` and ``request_body_sha256``; the
  public key is served by ``/webhook_verification_key/get`` as a JWK.

Plaid Link itself is a browser widget; ``public_token(login)`` stands for a user who
completed it. A ``FakeLogin`` is the user's login at an institution (the accounts and
holdings that really exist there); every Item created from it gets new ``account_id``s, as
Plaid does for a re-link.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.brokers.base import OptionContract

ZERO = Decimal(0)
SANDBOX_INSTITUTION = "ins_109508"
INSTITUTIONS = {
    "ins_109508": "First Platypus Bank",  # Plaid's sandbox institution
    "ins_109512": "Houndstooth Bank",  # the spec's /institutions/get_by_id example
    "ins_3": "Chase",  # the spec's Item example
}
PUBLIC_TOKEN_TTL = timedelta(minutes=30)  # "The public_token ... expires after 30 minutes"
LINK_TOKEN_TTL = timedelta(hours=4)
DOCS = "https://plaid.com/docs/errors/"


def _b64(value: int) -> str:
    return base64.urlsafe_b64encode(value.to_bytes(32, "big")).rstrip(b"=").decode()


def _number(value: Decimal | int) -> int | float:
    """JSON numbers as Plaid sends them (the adapter reads them back as Decimal)."""
    value = Decimal(value)
    return int(value) if value == value.to_integral_value() else float(value)


def _request_id() -> str:
    return secrets.token_urlsafe(11)[:15]


def _plaid_id() -> str:
    """Plaid-style opaque ids: 37 base62-ish characters."""
    return (
        base64.b64encode(secrets.token_bytes(30)).decode().replace("+", "x").replace("/", "y")[:37]
    )


def plaid_error(
    status: int,
    error_type: str,
    error_code: str,
    message: str,
    display: str | None = None,
    *,
    suggested_action: str | None = None,
) -> JSONResponse:
    return JSONResponse(
        {
            "error_type": error_type,
            "error_code": error_code,
            "error_code_reason": None,
            "error_message": message,
            "display_message": display,
            "request_id": _request_id(),
            "causes": [],
            "status": status,
            "documentation_url": DOCS + error_type.lower().replace("_", "-") + "/",
            "suggested_action": suggested_action,
        },
        status_code=status,
    )


@dataclass
class Faults:
    """Fault switches. Counters apply to the next N requests (of ``path`` only, when set).

    ``latency``: seconds before every answer. ``server_errors``: 500 ``API_ERROR``.
    ``rate_limited`` / ``rate_limit_code``: 429 ``RATE_LIMIT_EXCEEDED`` (Plaid sends no
    Retry-After). ``institution_down``: 400 ``INSTITUTION_ERROR``/``INSTITUTION_DOWN``.
    Items can be put in ``ITEM_LOGIN_REQUIRED`` (``require_login``) or revoked
    (``revoke``: the access token stops existing).
    """

    latency: float = 0.0
    server_errors: int = 0
    rate_limited: int = 0
    rate_limit_code: str = "ACCOUNTS_LIMIT"
    institution_down: int = 0
    path: str | None = None


@dataclass
class FakeSecurity:
    security_id: str
    name: str
    ticker: str | None
    type: str | None
    subtype: str | None
    close_price: Decimal
    currency: str = "USD"
    option_contract: dict[str, Any] | None = None
    cusip: str | None = None

    def wire(self) -> dict[str, Any]:
        return {
            "close_price": _number(self.close_price),
            "close_price_as_of": None,
            "cusip": self.cusip,
            "institution_id": None,
            "institution_security_id": None,
            "is_cash_equivalent": self.type == "cash",
            "isin": None,
            "iso_currency_code": self.currency,
            "name": self.name,
            "proxy_security_id": None,
            "security_id": self.security_id,
            "sedol": None,
            "ticker_symbol": self.ticker,
            "type": self.type,
            "subtype": self.subtype,
            "unofficial_currency_code": None,
            "update_datetime": None,
            "market_identifier_code": None if self.type == "cash" else "XNAS",
            "sector": None,
            "industry": None,
            "cfi_code": None,
            "figi": None,  # in plaid-python 46's Security; newer than the spec file read
            "option_contract": self.option_contract,
            "fixed_income": None,
        }


@dataclass
class FakeHolding:
    security: FakeSecurity
    quantity: Decimal
    price: Decimal
    cost_basis: Decimal | None
    price_as_of: date | None = None

    @property
    def value(self) -> Decimal:
        return self.quantity * self.price


@dataclass
class FakeInstitutionAccount:
    """One account as it exists at the institution (its Plaid ``account_id`` is per Item)."""

    key: int
    name: str
    mask: str
    type: str
    subtype: str
    cash: Decimal
    official_name: str | None = None
    available_reported: bool = True
    currency: str = "USD"
    holdings: list[FakeHolding] = field(default_factory=list)
    transactions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def current(self) -> Decimal:
        return self.cash + sum((h.value for h in self.holdings), ZERO)


@dataclass
class FakeLogin:
    """A user's login at an institution."""

    institution_id: str
    accounts: list[FakeInstitutionAccount] = field(default_factory=list)


@dataclass
class FakeItem:
    item_id: str
    access_token: str
    login: FakeLogin
    account_ids: dict[int, str]
    webhook: str | None
    login_required: bool = False
    removed: bool = False

    def account_id(self, account: FakeInstitutionAccount) -> str:
        return self.account_ids[account.key]


class FakePlaid:
    """The fake's state, its fault switches, test controls and its ASGI ``app``."""

    def __init__(
        self,
        *,
        client_id: str | None = None,
        secret: str | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.client_id = client_id or secrets.token_hex(12)
        self.secret = secret or secrets.token_hex(15)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.faults = Faults()
        self.logins: list[FakeLogin] = []
        self.items: dict[str, FakeItem] = {}  # by access token
        self.public_tokens: dict[str, tuple[FakeLogin, str | None, datetime]] = {}
        self.link_tokens: dict[str, dict[str, Any]] = {}  # link token -> its request body
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.bodies: list[tuple[str, dict[str, Any]]] = []  # (path, body without secret)
        self.securities: dict[str, FakeSecurity] = {}
        self.webhook_client: httpx.AsyncClient | None = None
        self.webhook_answers: list[int] = []
        self._keys = itertools.count(1)
        self._signing = ec.generate_private_key(ec.SECP256R1())
        self.kid = str(uuid.uuid4())
        self.key_created = int(self.clock().timestamp())
        self._seed_securities()
        self.app = Starlette(
            routes=[
                Route(path, handler, methods=["POST"])
                for path, handler in (
                    ("/link/token/create", self.link_token_create),
                    ("/sandbox/public_token/create", self.sandbox_public_token_create),
                    ("/item/public_token/exchange", self.public_token_exchange),
                    ("/item/get", self.item_get),
                    ("/item/remove", self.item_remove),
                    ("/accounts/get", self.accounts_get),
                    # Real-time balances: the same accounts, balances fetched anew.
                    ("/accounts/balance/get", self.accounts_get),
                    ("/investments/holdings/get", self.holdings_get),
                    ("/investments/transactions/get", self.transactions_get),
                    ("/institutions/get_by_id", self.institutions_get_by_id),
                    ("/webhook_verification_key/get", self.verification_key_get),
                    ("/sandbox/item/fire_webhook", self.sandbox_fire_webhook),
                )
            ],
            # https://plaid.com/docs/errors/invalid-request/#not_found: an endpoint that
            # does not exist answers 404 INVALID_REQUEST/NOT_FOUND in Plaid's envelope.
            exception_handlers={404: self._no_route, 405: self._no_route},
        )

    async def _no_route(self, request: Request, exc: Exception) -> Response:
        self.requests.append((request.method, request.url.path))
        return plaid_error(404, "INVALID_REQUEST", "NOT_FOUND", "not found")

    # --- test controls -------------------------------------------------------------------

    def _seed_securities(self) -> None:
        # Ids and descriptions from the spec's /investments/holdings/get example.
        for security in (
            FakeSecurity(
                "d6ePmbPxgWCWmMVv66q9iPV94n91vMtov5Are", "U S Dollar", "USD", "cash", "cash", 1
            ),
            FakeSecurity(
                "KDwjlXj1Rqt58dVvmzRguxJybmyQL8FgeWWAy",
                "Achillion Pharmaceuticals Inc.",
                "ACHN",
                "equity",
                "common stock",
                Decimal("2.11"),
                cusip="00448Q201",
            ),
            FakeSecurity(
                "JDdP7XPMklt5vwPmDN45t3KAoWAPmjtpaW7DP",
                "Matthews Pacific Tiger Fund Insti Class",
                "MIPTX",
                "mutual fund",
                "mutual fund",
                Decimal(27),
            ),
            FakeSecurity(
                "8E4L9XLl6MudjEpwPAAgivmdZRdBPJuvMPlPb",
                "Nflx Feb 01'18 $355 Call",
                "NFLX180201C00355000",
                "derivative",
                "option",
                Decimal("0.011"),
                option_contract={
                    "contract_type": "call",
                    "expiration_date": "2018-02-01",
                    "strike_price": 355,
                    "underlying_security_ticker": "NFLX",
                },
            ),
            FakeSecurity(
                "vLRMV3MvY1FYNP91on35CJD5QN5rw9Fpa9qOL",
                "Dogecoin",
                "DOGE",
                "cryptocurrency",
                "cryptocurrency",
                Decimal("0.140034616"),
            ),
        ):
            self.securities[security.ticker or security.security_id] = security

    def security(self, ticker: str, *, kind: str = "equity", price: str = "100") -> FakeSecurity:
        """The security with this ticker, created as an equity (or ``kind``) if new."""
        found = self.securities.get(ticker)
        if found is None:
            subtype = {"equity": "common stock", "etf": "etf"}.get(kind, kind)
            found = FakeSecurity(
                security_id=hashlib.sha256(ticker.encode()).hexdigest()[:37],
                name=f"{ticker} Inc.",
                ticker=ticker,
                type=kind,
                subtype=subtype,
                close_price=Decimal(price),
            )
            self.securities[ticker] = found
        return found

    def hold_option(
        self,
        account: FakeInstitutionAccount,
        contract: OptionContract,
        contracts: int,
        price: str,
        *,
        cost_basis: str | None = None,
    ) -> FakeHolding:
        """Hold ``contracts`` (negative: written) of an option, as Plaid reports one: a
        ``derivative`` security (subtype ``option``) whose ``ticker_symbol`` is the OCC symbol
        and whose ``option_contract`` has contract_type, expiration_date, strike_price and
        underlying_security_ticker (plaid-python plaid/model/option_contract.py; the
        holdings example's NFLX call); the holding's ``quantity`` counts options, "typically
        the number of contracts multiplied by 100" (plaid/model/holding.py), at a price per
        option, so ``institution_value`` already includes the multiplier."""
        found = self.securities.get(contract.symbol)
        if found is None:
            found = FakeSecurity(
                security_id=hashlib.sha256(contract.symbol.encode()).hexdigest()[:37],
                name=f"{contract.underlying} {contract.expiration:%b %d'%y} "
                f"${contract.strike} {contract.right.value.title()}",
                ticker=contract.symbol,
                type="derivative",
                subtype="option",
                close_price=Decimal(price),
                option_contract={
                    "contract_type": contract.right.value,
                    "expiration_date": contract.expiration.isoformat(),
                    "strike_price": _number(contract.strike),
                    "underlying_security_ticker": contract.underlying,
                },
            )
            self.securities[contract.symbol] = found
        account.holdings = [h for h in account.holdings if h.security is not found]
        holding = FakeHolding(
            security=found,
            quantity=Decimal(contracts) * contract.multiplier,
            price=Decimal(price),
            cost_basis=None if cost_basis is None else Decimal(cost_basis),
            price_as_of=self.clock().date(),
        )
        account.holdings.append(holding)
        return holding

    def add_login(
        self, institution_id: str = SANDBOX_INSTITUTION, *, cash: str = "25000"
    ) -> FakeLogin:
        """A login with one investment account ("Plaid IRA", mask 5555) holding ``cash``
        (deposited), and a checking account the investments import must leave out."""
        login = FakeLogin(institution_id=institution_id)
        self.logins.append(login)
        self.add_account(login, cash=cash)
        login.accounts.append(
            FakeInstitutionAccount(
                key=next(self._keys),
                name="Plaid Checking",
                mask="0000",
                type="depository",
                subtype="checking",
                cash=Decimal(100),
                official_name="Plaid Gold Standard 0% Interest Checking",
            )
        )
        return login

    def add_account(
        self,
        login: FakeLogin,
        *,
        cash: str = "25000",
        name: str = "Plaid IRA",
        mask: str = "5555",
        subtype: str = "ira",
    ) -> FakeInstitutionAccount:
        account = FakeInstitutionAccount(
            key=next(self._keys),
            name=name,
            mask=mask,
            type="investment",
            subtype=subtype,
            cash=Decimal(cash),
        )
        login.accounts.insert(sum(1 for a in login.accounts if a.type == "investment"), account)
        if account.cash:
            self.add_transaction(
                account,
                kind="cash",
                subtype="deposit",
                amount=-account.cash,  # Plaid: money in is negative
                name="DEPOSIT",
                security=self.securities["USD"],
            )
        return account

    def hold(
        self,
        account: FakeInstitutionAccount,
        ticker: str,
        quantity: str,
        price: str,
        *,
        cost_basis: str | None = None,
        kind: str = "equity",
    ) -> FakeHolding:
        """Add (or replace) a holding, as if bought earlier at the institution."""
        security = self.security(ticker, kind=kind, price=price)
        account.holdings = [h for h in account.holdings if h.security is not security]
        holding = FakeHolding(
            security=security,
            quantity=Decimal(quantity),
            price=Decimal(price),
            cost_basis=None if cost_basis is None else Decimal(cost_basis),
            price_as_of=self.clock().date(),
        )
        account.holdings.append(holding)
        return holding

    def add_transaction(
        self,
        account: FakeInstitutionAccount,
        *,
        kind: str,
        subtype: str,
        amount: Decimal,
        name: str,
        security: FakeSecurity | None = None,
        quantity: Decimal = ZERO,
        price: Decimal = ZERO,
        on: date | None = None,
    ) -> None:
        account.transactions.append(
            {
                "investment_transaction_id": _plaid_id(),
                "security_id": None if security is None else security.security_id,
                "date": (on or self.clock().date()).isoformat(),
                "transaction_datetime": None,
                "name": name,
                "quantity": quantity,
                "amount": amount,
                "price": price,
                "fees": ZERO,
                "type": kind,
                "subtype": subtype,
                "iso_currency_code": account.currency,
                "unofficial_currency_code": None,
                "cancel_transaction_id": None,
            }
        )

    def public_token(self, login: FakeLogin, webhook: str | None = None) -> str:
        """The user completed Link for ``login``: a public token for the app to exchange."""
        token = f"public-sandbox-{uuid.uuid4()}"
        self.public_tokens[token] = (login, webhook, self.clock())
        return token

    def complete_link(self, link_token: str, login: FakeLogin) -> str:
        """The user finished Link (opened with ``link_token``) by signing in to ``login``:
        the public token Link hands the frontend; the Item gets the link token's webhook."""
        created = self.link_tokens[link_token]
        return self.public_token(login, created.get("webhook"))

    def create_item(self, login: FakeLogin, webhook: str | None = None) -> FakeItem:
        """A new Item for ``login`` (what an exchanged public token makes): new item id,
        access token and ``account_id``s, as every (re-)link gets from Plaid."""
        item = FakeItem(
            item_id=_plaid_id(),
            access_token=f"access-sandbox-{uuid.uuid4()}",
            login=login,
            account_ids={a.key: _plaid_id() for a in login.accounts},
            webhook=webhook,
        )
        self.items[item.access_token] = item
        return item

    def item_of(self, login: FakeLogin) -> FakeItem:
        """The newest live Item made from ``login``."""
        for item in reversed(list(self.items.values())):
            if item.login is login and not item.removed:
                return item
        raise KeyError("no live Item for this login")

    def require_login(self, item: FakeItem) -> None:
        """The institution wants the user to sign in again (``ITEM_LOGIN_REQUIRED``)."""
        item.login_required = True

    def revoke(self, item: FakeItem) -> None:
        """The Item is gone at Plaid: its access token answers ``INVALID_ACCESS_TOKEN``."""
        item.removed = True

    def release_hung(self) -> None:
        """Nothing hangs in this fake; here for the runner's shutdown hook."""

    @property
    def jwk(self) -> dict[str, Any]:
        numbers = self._signing.public_key().public_numbers()
        return {
            "alg": "ES256",
            "created_at": self.key_created,
            "crv": "P-256",
            "expired_at": None,
            "kid": self.kid,
            "kty": "EC",
            "use": "sig",
            "x": _b64(numbers.x),
            "y": _b64(numbers.y),
        }

    def sign(
        self,
        body: bytes,
        *,
        issued_at: datetime | None = None,
        key: ec.EllipticCurvePrivateKey | None = None,
        kid: str | None = None,
    ) -> str:
        """A ``Plaid-Verification`` JWT for ``body`` (ES256, ``kid`` in the header)."""
        claims = {
            "iat": int((issued_at or self.clock()).timestamp()),
            "request_body_sha256": hashlib.sha256(body).hexdigest(),
        }
        return jwt.encode(
            claims, key or self._signing, algorithm="ES256", headers={"kid": kid or self.kid}
        )

    def webhook_body(self, item: FakeItem, webhook_type: str, webhook_code: str) -> bytes:
        """A webhook body as the spec's examples have it."""
        body: dict[str, Any] = {
            "webhook_type": webhook_type,
            "webhook_code": webhook_code,
            "item_id": item.item_id,
            "error": None,
            "environment": "sandbox",
        }
        if webhook_type == "HOLDINGS":
            body.update(new_holdings=1, updated_holdings=0)
        elif webhook_type == "INVESTMENTS_TRANSACTIONS":
            body.update(new_investments_transactions=1, cancelled_investments_transactions=0)
        elif webhook_type == "ITEM" and webhook_code == "ERROR":
            body["error"] = {
                "error_type": "ITEM_ERROR",
                "error_code": "ITEM_LOGIN_REQUIRED",
                "error_code_reason": None,
                "error_message": "the login details of this item have changed (credentials, "
                "MFA, or required user action) and a user login is required to update this "
                "information. use Link's update mode to restore the item to a good state",
                "display_message": None,
                "status": 400,
            }
        return json.dumps(body, indent=2).encode()

    async def send_webhook(
        self, item: FakeItem, webhook_type: str, webhook_code: str
    ) -> httpx.Response:
        """POST a signed webhook to the Item's webhook URL (``webhook_client`` or a new one)."""
        if item.webhook is None:
            raise ValueError("the Item has no webhook URL")
        body = self.webhook_body(item, webhook_type, webhook_code)
        headers = {"Content-Type": "application/json", "Plaid-Verification": self.sign(body)}
        if self.webhook_client is not None:
            response = await self.webhook_client.post(item.webhook, content=body, headers=headers)
        else:
            async with httpx.AsyncClient(timeout=10.0) as client:
                response = await client.post(item.webhook, content=body, headers=headers)
        self.webhook_answers.append(response.status_code)
        return response

    # --- plumbing ------------------------------------------------------------------------

    async def _gate(self, request: Request) -> dict[str, Any] | Response:
        """Log, apply faults, parse the body and check the client credentials."""
        path = request.url.path
        self.requests.append((request.method, path))
        raw = await request.body()
        if self.faults.latency:
            await asyncio.sleep(self.faults.latency)
        applies = self.faults.path in (None, path)
        if applies and self.faults.server_errors > 0:
            self.faults.server_errors -= 1
            return plaid_error(
                500,
                "API_ERROR",
                "INTERNAL_SERVER_ERROR",
                "an unexpected error occurred",
                "Something went wrong. Please try again later.",
            )
        if applies and self.faults.rate_limited > 0:
            self.faults.rate_limited -= 1
            return plaid_error(
                429,
                "RATE_LIMIT_EXCEEDED",
                self.faults.rate_limit_code,
                "rate limit exceeded for attempts to access this item. please try again later",
            )
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            return plaid_error(
                400, "INVALID_REQUEST", "INVALID_BODY", "body could not be parsed as JSON"
            )
        if not isinstance(body, dict):
            return plaid_error(400, "INVALID_REQUEST", "INVALID_BODY", "body must be a JSON object")
        self.bodies.append((path, {k: v for k, v in body.items() if k != "secret"}))
        client_id = body.get("client_id", request.headers.get("PLAID-CLIENT-ID"))
        secret = body.get("secret", request.headers.get("PLAID-SECRET"))
        if client_id is None or secret is None:
            return plaid_error(
                400,
                "INVALID_REQUEST",
                "MISSING_FIELDS",
                "the following required fields are missing: client_id, secret",
            )
        if client_id != self.client_id or secret != self.secret:
            return plaid_error(
                400, "INVALID_INPUT", "INVALID_API_KEYS", "invalid client_id or secret provided"
            )
        if applies and self.faults.institution_down > 0:
            self.faults.institution_down -= 1
            return plaid_error(
                400,
                "INSTITUTION_ERROR",
                "INSTITUTION_DOWN",
                "this institution is not currently responding to this request. please try "
                "again soon",
                "This financial institution is not currently responding to requests. We "
                "apologize for the inconvenience.",
            )
        return body

    async def _item_gate(self, request: Request) -> tuple[dict[str, Any], FakeItem] | Response:
        body = await self._gate(request)
        if isinstance(body, Response):
            return body
        token = body.get("access_token")
        if not isinstance(token, str):
            return plaid_error(
                400,
                "INVALID_REQUEST",
                "MISSING_FIELDS",
                "the following required fields are missing: access_token",
            )
        item = self.items.get(token)
        if item is None or item.removed:
            return plaid_error(
                400, "INVALID_INPUT", "INVALID_ACCESS_TOKEN", "could not find matching access token"
            )
        if item.login_required:
            return plaid_error(
                400,
                "ITEM_ERROR",
                "ITEM_LOGIN_REQUIRED",
                "the login details of this item have changed (credentials, MFA, or required "
                "user action) and a user login is required to update this information. use "
                "Link's update mode to restore the item to a good state",
                "The login details of this item have changed. Please update your login.",
                suggested_action="Prompt the user to re-authenticate their account.",
            )
        return body, item

    def _ok(self, body: dict[str, Any]) -> JSONResponse:
        return JSONResponse({**body, "request_id": _request_id()})

    def _item_wire(self, item: FakeItem) -> dict[str, Any]:
        return {
            "available_products": ["balance", "identity"],
            "billed_products": ["investments"],
            "products": ["investments"],
            "consented_products": ["investments"],
            "consent_expiration_time": None,
            "error": None,
            "institution_id": item.login.institution_id,
            "institution_name": INSTITUTIONS.get(item.login.institution_id),
            "item_id": item.item_id,
            "update_type": "background",
            "webhook": item.webhook or "",
            "auth_method": None,
        }

    def _account_wire(self, item: FakeItem, account: FakeInstitutionAccount) -> dict[str, Any]:
        investment = account.type == "investment"
        available = account.cash if account.available_reported else None
        current = account.current if investment else account.cash
        balances: dict[str, Any] = {
            "available": None if available is None else _number(available),
            "current": _number(current),
            "iso_currency_code": account.currency,
            "limit": None,
            "unofficial_currency_code": None,
        }
        if investment:
            balances["margin_loan_amount"] = None
        return {
            "account_id": item.account_id(account),
            "balances": balances,
            "mask": account.mask,
            "name": account.name,
            "official_name": account.official_name,
            "subtype": account.subtype,
            "type": account.type,
        }

    def _accounts(self, item: FakeItem, body: dict[str, Any]) -> list[FakeInstitutionAccount]:
        options = body.get("options") or {}
        wanted = options.get("account_ids") if isinstance(options, dict) else None
        accounts = item.login.accounts
        if isinstance(wanted, list):
            accounts = [a for a in accounts if item.account_id(a) in wanted]
        return accounts

    # --- link and items ------------------------------------------------------------------

    async def link_token_create(self, request: Request) -> Response:
        body = await self._gate(request)
        if isinstance(body, Response):
            return body
        missing = [f for f in ("client_name", "language", "country_codes") if f not in body]
        user = body.get("user")
        if not isinstance(user, dict) or not user.get("client_user_id"):
            missing.append("user.client_user_id")
        if missing:
            return plaid_error(
                400,
                "INVALID_REQUEST",
                "MISSING_FIELDS",
                f"the following required fields are missing: {', '.join(missing)}",
            )
        token = f"link-sandbox-{uuid.uuid4()}"
        self.link_tokens[token] = body
        expiration = (self.clock() + LINK_TOKEN_TTL).replace(microsecond=0)
        return self._ok(
            {"link_token": token, "expiration": expiration.isoformat().replace("+00:00", "Z")}
        )

    async def sandbox_public_token_create(self, request: Request) -> Response:
        body = await self._gate(request)
        if isinstance(body, Response):
            return body
        institution = body.get("institution_id")
        if institution not in INSTITUTIONS:
            return plaid_error(
                400, "INVALID_INPUT", "INVALID_INSTITUTION", "invalid institution_id provided"
            )
        options = body.get("options") or {}
        login = next((lg for lg in self.logins if lg.institution_id == institution), None)
        if login is None:
            login = self.add_login(str(institution))
        webhook = options.get("webhook") if isinstance(options, dict) else None
        return self._ok({"public_token": self.public_token(login, webhook)})

    async def public_token_exchange(self, request: Request) -> Response:
        body = await self._gate(request)
        if isinstance(body, Response):
            return body
        found = self.public_tokens.pop(str(body.get("public_token")), None)
        if found is None or found[2] + PUBLIC_TOKEN_TTL < self.clock():
            return plaid_error(
                400, "INVALID_INPUT", "INVALID_PUBLIC_TOKEN", "could not find matching public token"
            )
        login, webhook, _created = found
        item = self.create_item(login, webhook)
        return self._ok({"access_token": item.access_token, "item_id": item.item_id})

    async def item_get(self, request: Request) -> Response:
        gated = await self._item_gate(request)
        if isinstance(gated, Response):
            return gated
        _body, item = gated
        return self._ok({"item": self._item_wire(item), "status": None})

    async def item_remove(self, request: Request) -> Response:
        gated = await self._item_gate(request)
        if isinstance(gated, Response):
            return gated
        gated[1].removed = True
        return self._ok({})

    async def institutions_get_by_id(self, request: Request) -> Response:
        body = await self._gate(request)
        if isinstance(body, Response):
            return body
        institution = body.get("institution_id")
        if not body.get("country_codes"):
            return plaid_error(
                400,
                "INVALID_REQUEST",
                "MISSING_FIELDS",
                "the following required fields are missing: country_codes",
            )
        name = INSTITUTIONS.get(str(institution))
        if name is None:
            return plaid_error(
                400, "INVALID_INPUT", "INVALID_INSTITUTION", "invalid institution_id provided"
            )
        return self._ok(
            {
                "institution": {
                    "country_codes": ["US"],
                    "institution_id": institution,
                    "name": name,
                    "products": ["balance", "investments", "transactions"],
                    "routing_numbers": [],
                    "dtc_numbers": [],
                    "oauth": False,
                    # required by plaid-python 46's Institution (newer than the spec file)
                    "connection_availability": "SUPPORTED",
                }
            }
        )

    async def verification_key_get(self, request: Request) -> Response:
        body = await self._gate(request)
        if isinstance(body, Response):
            return body
        if body.get("key_id") != self.kid:
            return plaid_error(
                400, "INVALID_INPUT", "INVALID_WEBHOOK_VERIFICATION_KEY_ID", "invalid key_id"
            )
        return self._ok({"key": self.jwk})

    async def sandbox_fire_webhook(self, request: Request) -> Response:
        gated = await self._item_gate(request)
        if isinstance(gated, Response):
            return gated
        body, item = gated
        code = body.get("webhook_code")
        kind = body.get("webhook_type", "TRANSACTIONS")
        if code != "DEFAULT_UPDATE" or kind not in ("HOLDINGS", "INVESTMENTS_TRANSACTIONS"):
            return plaid_error(
                400, "INVALID_INPUT", "INVALID_FIELD", "webhook_code / webhook_type not supported"
            )
        await self.send_webhook(item, str(kind), str(code))
        return self._ok({"webhook_fired": True})

    # --- data ----------------------------------------------------------------------------

    async def accounts_get(self, request: Request) -> Response:
        gated = await self._item_gate(request)
        if isinstance(gated, Response):
            return gated
        body, item = gated
        return self._ok(
            {
                "accounts": [self._account_wire(item, a) for a in self._accounts(item, body)],
                "item": self._item_wire(item),
            }
        )

    async def holdings_get(self, request: Request) -> Response:
        gated = await self._item_gate(request)
        if isinstance(gated, Response):
            return gated
        body, item = gated
        accounts = [a for a in self._accounts(item, body) if a.type == "investment"]
        holdings: list[dict[str, Any]] = []
        securities: dict[str, FakeSecurity] = {}
        for account in accounts:
            rows = list(account.holdings)
            if account.cash:
                usd = self.securities["USD"]
                rows.append(FakeHolding(usd, account.cash, Decimal(1), account.cash))
            for holding in rows:
                securities[holding.security.security_id] = holding.security
                holdings.append(
                    {
                        "account_id": item.account_id(account),
                        "cost_basis": None
                        if holding.cost_basis is None
                        else _number(holding.cost_basis),
                        "institution_price": _number(holding.price),
                        "institution_price_as_of": None
                        if holding.price_as_of is None
                        else holding.price_as_of.isoformat(),
                        "institution_price_datetime": None,
                        "institution_value": _number(holding.value),
                        "iso_currency_code": account.currency,
                        "quantity": _number(holding.quantity),
                        "security_id": holding.security.security_id,
                        "unofficial_currency_code": None,
                        "vested_quantity": None,
                        "vested_value": None,
                    }
                )
        return self._ok(
            {
                "accounts": [self._account_wire(item, a) for a in accounts],
                "holdings": holdings,
                "securities": [s.wire() for s in securities.values()],
                "item": self._item_wire(item),
            }
        )

    async def transactions_get(self, request: Request) -> Response:
        gated = await self._item_gate(request)
        if isinstance(gated, Response):
            return gated
        body, item = gated
        try:
            start = date.fromisoformat(str(body.get("start_date")))
            end = date.fromisoformat(str(body.get("end_date")))
        except ValueError:
            return plaid_error(
                400, "INVALID_REQUEST", "INVALID_FIELD", "start_date and end_date must be dates"
            )
        options = body.get("options") or {}
        count = options.get("count", 100)
        offset = options.get("offset", 0)
        if not isinstance(count, int) or not 1 <= count <= 500 or offset < 0:
            return plaid_error(
                400, "INVALID_REQUEST", "INVALID_FIELD", "count must be 1..500, offset >= 0"
            )
        accounts = [a for a in self._accounts(item, body) if a.type == "investment"]
        rows = [
            {**t, "account_id": item.account_id(a)}
            for a in accounts
            for t in a.transactions
            if start <= date.fromisoformat(t["date"]) <= end
        ]
        # "Transactions are returned in reverse-chronological order".
        rows.sort(key=lambda t: t["date"], reverse=True)
        page = rows[offset : offset + count]
        by_id = {s.security_id: s for s in self.securities.values()}
        used = {t["security_id"] for t in page if t["security_id"] in by_id}
        return self._ok(
            {
                "accounts": [self._account_wire(item, a) for a in accounts],
                "investment_transactions": [
                    {
                        **t,
                        "quantity": _number(t["quantity"]),
                        "amount": _number(t["amount"]),
                        "price": _number(t["price"]),
                        "fees": _number(t["fees"]),
                    }
                    for t in page
                ],
                "securities": [by_id[s].wire() for s in sorted(used)],
                "item": self._item_wire(item),
                "total_investment_transactions": len(rows),
            }
        )
