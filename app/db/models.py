"""ORM models. Every user-owned row carries ``user_id``; repositories filter on it.

Relationships are not declared: repositories load what they need explicitly, so there is
no lazy loading to trip over in async code.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base
from app.db.types import Money, UTCDateTime

ID = String(40)
USER_ID = String(255)
EventId = BigInteger().with_variant(Integer, "sqlite")

ORDER_STATUSES = (
    "pending_submit",
    "submitted",
    "accepted",
    "partially_filled",
    "filled",
    "pending_cancel",
    "canceled",
    "pending_replace",
    "replaced",
    "rejected",
    "expired",
    "unknown",
)


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


class Connection(Base):
    __tablename__ = "connections"
    __table_args__ = (
        CheckConstraint(_in("tier", ("A", "B", "C", "paper")), name="tier"),
        CheckConstraint(_in("ownership", ("byob", "platform", "paper")), name="ownership"),
        CheckConstraint(_in("status", ("active", "expiring", "broken", "revoked")), name="status"),
        Index(None, "user_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(USER_ID)
    broker_slug: Mapped[str] = mapped_column(String(40))
    tier: Mapped[str] = mapped_column(String(8))
    ownership: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(10))
    display: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    refresh_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_refresh_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_refresh_outcome: Mapped[str | None] = mapped_column(String(200), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Set by the rotation sweep when the active Tier A credential is past ``rotate_after``
    # and the broker cannot re-issue it; cleared when a fresh credential is stored.
    rotation_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # ``live``, or the broker's own paper/sandbox environment the connection was made in
    # (migration 0014; app/brokers/environments.py). Its accounts are ``mode`` sandbox.
    environment: Mapped[str] = mapped_column(String(10), default="live", server_default="live")
    # Bumped with every change of the credential or of whether it may be used (migration
    # 0016; app/security/credential_cache.py): the credential cache's entries carry it.
    credential_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class BrokerToken(Base):
    """The envelope-encrypted credential of one connection (the ADR's Velvet table).

    The CHECK constraint holds the read-only invariant at the data layer: a Tier C row
    cannot exist with ``no_order_write`` false.
    """

    __tablename__ = "broker_tokens"
    __table_args__ = (
        CheckConstraint(_in("broker_tier", ("tier_a", "tier_b", "tier_c")), name="broker_tier"),
        CheckConstraint("broker_tier <> 'tier_c' OR no_order_write", name="tier_c_no_order_write"),
        Index(None, "connection_id"),
        Index(None, "key_version"),
        Index(None, "rotate_after"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    connection_id: Mapped[str] = mapped_column(ID, ForeignKey("connections.id"))
    user_id: Mapped[str] = mapped_column(USER_ID)
    broker_tier: Mapped[str] = mapped_column(String(8))
    broker_slug: Mapped[str] = mapped_column(String(40))
    no_order_write: Mapped[bool] = mapped_column(Boolean, server_default=false(), default=False)
    token_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    wrapped_data_key: Mapped[bytes] = mapped_column(LargeBinary)
    key_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    refresh_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    rotate_after: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    def __repr__(self) -> str:
        return (
            f"BrokerToken(id={self.id!r}, connection_id={self.connection_id!r}, "
            f"broker_tier={self.broker_tier!r}, broker_slug={self.broker_slug!r}, "
            f"key_version={self.key_version!r}, token_ciphertext=<encrypted>)"
        )


class OAuthState(Base):
    """One pending OAuth authorization (the connect flow), stored server-side.

    Only hashes of the ``state`` and of the browser's cookie nonce are kept, and the PKCE
    verifier is sealed like a credential; a table dump cannot complete anyone's flow. A row
    is single use (``consumed_at`` set atomically by the callback) and lives 10 minutes; it
    is kept a while after use so a replay is told "already used", then purged.
    """

    __tablename__ = "oauth_states"
    __table_args__ = (
        UniqueConstraint("state_hash"),
        Index(None, "user_id", "expires_at"),
        Index(None, "expires_at"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    state_hash: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(USER_ID)
    broker_slug: Mapped[str] = mapped_column(String(40))
    browser_hash: Mapped[str] = mapped_column(String(64))
    verifier_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    verifier_wrapped_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    verifier_key_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    redirect_uri: Mapped[str] = mapped_column(String(2000))
    return_to: Mapped[str] = mapped_column(String(2000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    def __repr__(self) -> str:
        return (
            f"OAuthState(id={self.id!r}, broker_slug={self.broker_slug!r}, "
            f"expires_at={self.expires_at!r}, consumed_at={self.consumed_at!r})"
        )


# ``sandbox``: an account at a broker's own paper/sandbox environment (never live money).
ACCOUNT_MODES = ("paper", "live", "sandbox")


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (
        UniqueConstraint("connection_id", "broker_account_ref"),
        CheckConstraint(_in("mode", ACCOUNT_MODES), name="mode"),
        Index(None, "user_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(USER_ID)
    connection_id: Mapped[str] = mapped_column(ID, ForeignKey("connections.id"))
    broker_slug: Mapped[str] = mapped_column(String(40))
    tier: Mapped[str] = mapped_column(String(8))
    mode: Mapped[str] = mapped_column(String(8))
    name: Mapped[str] = mapped_column(String(200))
    number_masked: Mapped[str] = mapped_column(String(40))
    broker_account_ref: Mapped[str] = mapped_column(String(128))
    currency: Mapped[str] = mapped_column(String(3))
    can_trade: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint(_in("status", ORDER_STATUSES), name="status"),
        CheckConstraint(_in("side", ("buy", "sell")), name="side"),
        CheckConstraint(_in("order_type", ("market", "limit", "stop", "stop_limit")), name="type"),
        CheckConstraint(_in("time_in_force", ("day", "gtc", "ioc", "fok")), name="tif"),
        CheckConstraint(_in("position_effect", ("open", "close")), name="position_effect"),
        CheckConstraint(_in("price_effect", ("debit", "credit", "even")), name="price_effect"),
        Index(None, "account_id", "created_at"),
        Index(None, "user_id", "created_at"),
        Index(None, "status"),
        Index(None, "account_id", "broker_order_id"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(USER_ID)
    account_id: Mapped[str] = mapped_column(ID, ForeignKey("accounts.id"))
    client_order_id: Mapped[str] = mapped_column(String(64), unique=True)
    broker_order_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(4))
    quantity: Mapped[Decimal] = mapped_column(Money())
    filled_quantity: Mapped[Decimal] = mapped_column(Money())
    avg_fill_price: Mapped[Decimal | None] = mapped_column(Money(), nullable=True)
    order_type: Mapped[str] = mapped_column(String(10))
    limit_price: Mapped[Decimal | None] = mapped_column(Money(), nullable=True)
    stop_price: Mapped[Decimal | None] = mapped_column(Money(), nullable=True)
    time_in_force: Mapped[str] = mapped_column(String(3))
    extended_hours: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(20))
    reject_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    replaces_order_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    replaced_by_order_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Options (migration 0009). ``position_effect``: open/close of a single-leg order (or of
    # an equity short sale / cover). A multi-leg order has ``legs`` (``symbol`` is then the
    # legs' underlying and ``side`` the OrderRequest convention: sell for a credit) and
    # ``price_effect``; each leg is ``{"symbol", "side", "ratio", "position_effect",
    # "filled_quantity", "avg_fill_price", "broker_leg_id"}`` with decimals as strings.
    position_effect: Mapped[str | None] = mapped_column(String(5), nullable=True)
    price_effect: Mapped[str | None] = mapped_column(String(6), nullable=True)
    legs: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    # A dollar-amount order (migration 0014): the amount asked for; ``quantity`` is then what
    # the broker reports as filled (0 until it is known).
    notional: Mapped[Decimal | None] = mapped_column(Money(), nullable=True)


class OrderEvent(Base):
    """The outbox: one row per status change, written in the same transaction as the change.

    ``id`` increases monotonically and is the stream cursor.
    """

    __tablename__ = "order_events"
    __table_args__ = (Index(None, "user_id", "id"), Index(None, "account_id", "id"))

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(USER_ID)
    account_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    order_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    connection_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    type: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())


class IdempotencyKey(Base):
    """One claimed ``Idempotency-Key`` per (user, key): the request fingerprint and its result."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        UniqueConstraint("user_id", "key"),
        CheckConstraint(_in("state", ("in_flight", "completed")), name="state"),
        Index(None, "expires_at"),
        Index(None, "state", "owner"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(USER_ID)
    key: Mapped[str] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(300))
    fingerprint: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(10))
    order_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    response_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response_body: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    locked_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The process that claimed the key (``app.db.session.session_owner``); null for claims
    # made before owners were recorded. Reconciliation settles the in-flight keys of an
    # owner that is gone (app/services/reconciliation.py, ``settle_orphaned_keys``).
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True)


# --- The paper broker's own books. It is a broker: it knows paper accounts, not users. ---


class PaperAccount(Base):
    __tablename__ = "paper_accounts"
    __table_args__ = (Index(None, "owner"),)

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    owner: Mapped[str] = mapped_column(USER_ID)
    starting_cash: Mapped[Decimal] = mapped_column(Money())
    cash: Mapped[Decimal] = mapped_column(Money())
    # Running total of the cash held by open buy orders (sum of their reserved_cash), kept
    # on the locked account row so placement never needs a SUM over orders.
    reserved_cash: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0))
    # Last sequence number handed out to this account's orders and fills: orders are matched
    # in seq order, and fill ids embed it so they sort in the order they happened.
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    cycles_completed: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Cash held against the account's short option positions (cash-secured puts, the maximum
    # loss of spreads): buying power is cash - reserved_cash - collateral_cash (migration 0010).
    collateral_cash: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0))
    # ``cash`` (no short sales) or ``margin`` (short stock allowed); ``short_requirement`` is
    # the Reg T initial requirement (150% of the entry value) held against short stock:
    # buying power is cash - reserved_cash - collateral_cash - short_requirement (0015).
    account_type: Mapped[str] = mapped_column(String(6), default="cash")
    short_requirement: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0))


class PaperPosition(Base):
    __tablename__ = "paper_positions"
    __table_args__ = (Index(None, "expires_at"),)

    paper_account_id: Mapped[str] = mapped_column(
        ID, ForeignKey("paper_accounts.id"), primary_key=True
    )
    symbol: Mapped[str] = mapped_column(String(32), primary_key=True)
    asset_class: Mapped[str] = mapped_column(String(12))
    quantity: Mapped[Decimal] = mapped_column(Money())
    avg_cost: Mapped[Decimal] = mapped_column(Money())
    realized_pl: Mapped[Decimal] = mapped_column(Money())
    # Quantity held by open sell orders (sum of their remaining quantity): no shorting.
    # For an option position: the contracts held by open closing orders.
    reserved_quantity: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Shares pledged as cover for short calls (covered calls); not available to sell.
    pledged_quantity: Mapped[Decimal] = mapped_column(Money(), default=Decimal(0))
    # An option position's expiry instant (expiration day at EXPIRY_TIME_UTC); None for
    # equities and crypto. The ticker settles positions whose instant has passed.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class PaperOrder(Base):
    __tablename__ = "paper_orders"
    __table_args__ = (
        UniqueConstraint("paper_account_id", "client_order_id"),
        CheckConstraint(_in("status", ORDER_STATUSES), name="status"),
        Index(None, "status", "seq"),
        Index(None, "paper_account_id", "seq"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    paper_account_id: Mapped[str] = mapped_column(ID, ForeignKey("paper_accounts.id"))
    client_order_id: Mapped[str] = mapped_column(String(64))
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(4))
    quantity: Mapped[Decimal] = mapped_column(Money())
    filled_quantity: Mapped[Decimal] = mapped_column(Money())
    avg_fill_price: Mapped[Decimal | None] = mapped_column(Money(), nullable=True)
    order_type: Mapped[str] = mapped_column(String(10))
    limit_price: Mapped[Decimal | None] = mapped_column(Money(), nullable=True)
    stop_price: Mapped[Decimal | None] = mapped_column(Money(), nullable=True)
    time_in_force: Mapped[str] = mapped_column(String(3))
    extended_hours: Mapped[bool] = mapped_column(Boolean)
    stop_triggered: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(20))
    reject_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    reserved_cash: Mapped[Decimal] = mapped_column(Money())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Options (migration 0010): ``position_effect`` of a single-leg option order; a
    # multi-leg order has ``legs`` (``symbol`` is the underlying, ``quantity`` strategy
    # units, ``limit_price`` unsigned with ``price_effect``), each
    # ``{"symbol", "side", "ratio", "position_effect", "avg_fill_price"}`` (decimals as
    # strings). ``kind`` names an order the paper broker made itself at expiry
    # (``option_expiration``, ``option_exercise``, ``option_assignment``,
    # ``option_cash_settlement``); None for an order that was placed.
    position_effect: Mapped[str | None] = mapped_column(String(5), nullable=True)
    price_effect: Mapped[str | None] = mapped_column(String(6), nullable=True)
    legs: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    kind: Mapped[str | None] = mapped_column(String(24), nullable=True)
    # A dollar-amount market order (migration 0015): ``quantity`` is what the amount bought
    # or sold at the price it was computed at.
    notional: Mapped[Decimal | None] = mapped_column(Money(), nullable=True)


class PaperFill(Base):
    __tablename__ = "paper_fills"
    __table_args__ = (Index(None, "paper_account_id", "occurred_at"), Index(None, "paper_order_id"))

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    paper_order_id: Mapped[str] = mapped_column(ID, ForeignKey("paper_orders.id"))
    paper_account_id: Mapped[str] = mapped_column(ID, ForeignKey("paper_accounts.id"))
    symbol: Mapped[str] = mapped_column(String(32))
    side: Mapped[str] = mapped_column(String(4))
    quantity: Mapped[Decimal] = mapped_column(Money())
    price: Mapped[Decimal] = mapped_column(Money())
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The event an expiry fill records (the order's ``kind``); None for a trade.
    kind: Mapped[str | None] = mapped_column(String(24), nullable=True)


class RateLimitBucket(Base):
    """Shared pacing state for one credential at one broker (GCRA's theoretical arrival
    time). The key is a hash of the credential, never the credential."""

    __tablename__ = "rate_limit_buckets"

    key: Mapped[str] = mapped_column(String(120), primary_key=True)
    tat: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)


# --- The audit chain of live BYOB order actions (app/security/audit.py). ---

AUDIT_ACTIONS = ("place", "modify", "cancel", "exercise")


class AuditEntry(Base):
    """One live order action against a user-supplied credential, chained by keyed hash.

    Entries form one chain per user (``chain`` = ``user:<user id>``), plus the frozen
    ``global`` chain of the entries written before chains were per user. Within a chain
    ``seq`` runs 1, 2, 3... without gaps (assigned under that chain's head lock), and
    ``entry_hash`` is HMAC-SHA256 over ``prev_hash`` and the entry's canonical content, so
    an edited, deleted or reordered row breaks its chain at that row. Only ids, slugs, a
    request fingerprint (SHA-256 of the canonical request) and an outcome word are stored:
    never credentials or broker messages.
    """

    __tablename__ = "audit_entries"
    __table_args__ = (
        CheckConstraint(_in("action", AUDIT_ACTIONS), name="action"),
        Index(None, "user_id", "seq"),
        Index(None, "order_id"),
    )

    chain: Mapped[str] = mapped_column(String(300), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    user_id: Mapped[str] = mapped_column(USER_ID)
    action: Mapped[str] = mapped_column(String(10))
    order_id: Mapped[str] = mapped_column(ID)
    account_id: Mapped[str] = mapped_column(ID)
    connection_id: Mapped[str] = mapped_column(ID)
    broker_slug: Mapped[str] = mapped_column(String(40))
    request_fingerprint: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(80))
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))


class AuditChainHead(Base):
    """One row per chain: its last ``seq`` and that entry's hash.

    An append locks its chain's row (an upsert that takes the row lock on Postgres; SQLite
    has one writer), so appends to one chain serialize while different users' chains never
    wait for each other. It also pins the tail: deleting a chain's last entries leaves its
    head pointing past the end, which verification reports.
    """

    __tablename__ = "audit_chain_head"

    chain: Mapped[str] = mapped_column(String(300), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger)
    last_hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PortfolioSnapshot(Base):
    """The last good read of one account, kept for ``GET /v1/portfolio``.

    When an account cannot be read (timeout, broker error, broken connection) the portfolio
    reports it with this snapshot and its age instead of dropping it. One row per account,
    overwritten by every newer good read. ``positions`` holds the normalized positions with
    every number as a decimal string, so nothing passes through a float.
    """

    __tablename__ = "portfolio_snapshots"
    __table_args__ = (Index(None, "user_id"),)

    account_id: Mapped[str] = mapped_column(ID, ForeignKey("accounts.id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(USER_ID)
    currency: Mapped[str] = mapped_column(String(3))
    cash: Mapped[Decimal] = mapped_column(Money())
    equity: Mapped[Decimal] = mapped_column(Money())
    buying_power: Mapped[Decimal] = mapped_column(Money())
    positions: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    taken_at: Mapped[datetime] = mapped_column(UTCDateTime())


# --- Multi-broker routing (app/services/routing.py). ---

ASSET_CLASSES = ("equity", "option", "crypto", "mutual_fund")
ROUTE_SELECTIONS = ("auto", "explicit")
ROUTE_MODES = ("live", "paper")
# pending: the attempt's order row is committed and the broker has not answered yet;
# accepted: the broker took the order; rejected: it definitively refused it; not_sent: the
# request never reached it (429, connection refused); unknown: it may have it (timeout or
# 5xx after sending), reconciliation decides; skipped: refused before any order row was
# written (a kill-switch flipped since the decision, the broker does not list the symbol).
ROUTE_ATTEMPT_OUTCOMES = ("pending", "accepted", "rejected", "not_sent", "unknown", "skipped")


class RoutingRule(Base):
    """A user's preferred account order for one asset class (at most one row per class).

    ``account_ids`` is the ordered preference list. Accounts a rule does not list still come
    after the listed ones (in the default order); ``allowed_accounts`` on a request is how a
    caller restricts the set.
    """

    __tablename__ = "routing_rules"
    __table_args__ = (
        UniqueConstraint("user_id", "asset_class"),
        CheckConstraint(_in("asset_class", ASSET_CLASSES), name="asset_class"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(USER_ID)
    asset_class: Mapped[str] = mapped_column(String(12))
    account_ids: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class OrderRoute(Base):
    """One client request on ``POST /v1/orders``: the decision and its attempts.

    ``decision`` is the router's plan as it was made (candidates in order, every account
    passed over with its reason code). What happened at each broker is in ``route_attempts``;
    the route's status is derived from those attempts and their orders, never stored, so it
    cannot disagree with what reconciliation later finds.
    """

    __tablename__ = "order_routes"
    __table_args__ = (
        CheckConstraint(_in("selection", ROUTE_SELECTIONS), name="selection"),
        CheckConstraint(_in("mode", ROUTE_MODES), name="mode"),
        CheckConstraint(_in("asset_class", ASSET_CLASSES), name="asset_class"),
        Index(None, "user_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(USER_ID)
    selection: Mapped[str] = mapped_column(String(10))
    mode: Mapped[str] = mapped_column(String(8))
    asset_class: Mapped[str] = mapped_column(String(12))
    request_fingerprint: Mapped[str] = mapped_column(String(64))
    decision: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RouteAttempt(Base):
    """One try of a route at one account. An attempt that reached the point of calling the
    broker has its own order row (own ``client_order_id``), so reconciliation of each broker
    works on that broker's order alone; ``order_id`` is unique across attempts."""

    __tablename__ = "route_attempts"
    __table_args__ = (
        UniqueConstraint("route_id", "seq"),
        UniqueConstraint("order_id"),
        CheckConstraint(_in("outcome", ROUTE_ATTEMPT_OUTCOMES), name="outcome"),
        Index(None, "user_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    route_id: Mapped[str] = mapped_column(ID, ForeignKey("order_routes.id"))
    user_id: Mapped[str] = mapped_column(USER_ID)
    seq: Mapped[int] = mapped_column(Integer)
    account_id: Mapped[str] = mapped_column(ID, ForeignKey("accounts.id"))
    broker_slug: Mapped[str] = mapped_column(String(40))
    order_id: Mapped[str | None] = mapped_column(ID, ForeignKey("orders.id"), nullable=True)
    outcome: Mapped[str] = mapped_column(String(10))
    code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    detail: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
