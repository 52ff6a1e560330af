"""Connections, accounts, balances, positions, quotes and transactions."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from app.brokers.base import AssetClass
from app.schemas.common import DecimalStr, ResponseModel, StrictModel, UTCTimestamp
from app.schemas.options import ContractOut

# "Sandbox": an account at a broker's own paper/sandbox environment (never live money).
Label = Literal["Live", "Linked", "Paper", "Sandbox"]
AccountMode = Literal["paper", "live", "sandbox"]
TierOut = Literal["A", "B", "C", "paper"]

PARTIAL_DESCRIPTION = (
    "true when the broker's answer held rows the gateway cannot represent: they are left "
    "out (logged, counted in /metrics) and the rest is shown"
)


SupportOut = Literal["native", "emulated", "unsupported"]


class OptionCapabilitiesOut(ResponseModel):
    """Options beyond ``asset_classes.option`` (single-leg orders): discovery, the most legs
    in one order, the order types and times in force taken for multi-leg orders."""

    model_config = ConfigDict(frozen=True, extra="allow")

    chain: SupportOut
    expirations: SupportOut
    max_legs: int
    combo_order_types: list[str]
    combo_time_in_force: list[str]
    greeks: SupportOut
    exercise: SupportOut


class CapabilitiesOut(ResponseModel):
    """What the broker path supports (``native``, ``emulated`` by the gateway, or
    ``unsupported``); the pre-trade gate reads exactly this. ``preview``: the broker's own
    order preview (``native``) or the gateway's estimate from quotes (``emulated``)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    asset_classes: dict[str, SupportOut]
    order_types: dict[str, SupportOut]
    time_in_force: dict[str, SupportOut]
    fractional: SupportOut
    extended_hours: SupportOut
    short_selling: SupportOut
    multi_leg: SupportOut
    modify: SupportOut
    order_stream: SupportOut
    place_orders: bool
    client_order_ids: SupportOut
    options: OptionCapabilitiesOut
    preview: SupportOut


class BrokerOut(ResponseModel):
    slug: str
    name: str
    tier: TierOut
    label: Label
    auth: Literal["api_key", "oauth2", "aggregator", "gateway", "none"]
    capabilities: CapabilitiesOut


class BrokerList(ResponseModel):
    items: list[BrokerOut]


class ConnectionCreate(StrictModel):
    broker: str = Field(min_length=1, max_length=40)
    credentials: dict[str, str] = Field(default_factory=dict, max_length=20)
    options: dict[str, str] = Field(default_factory=dict, max_length=20)


class CredentialsReplace(StrictModel):
    """A fresh API key for an existing connection (what answers ``rotation_due``)."""

    credentials: dict[str, str] = Field(min_length=1, max_length=20)


class PortalOut(ResponseModel):
    """Where the browser links (or re-links) a brokerage at an aggregator (SnapTrade's
    Connection Portal). The URL works once and only until ``expires_at``."""

    url: str
    expires_at: UTCTimestamp


class PortalRequest(StrictModel):
    """Optional: go straight to one brokerage (the aggregator's slug, e.g. ``SCHWAB``)."""

    brokerage: str | None = Field(default=None, min_length=1, max_length=40)


class ConnectionOut(ResponseModel):
    id: str
    broker: str
    tier: TierOut
    ownership: Literal["byob", "platform", "paper"]
    status: Literal["active", "expiring", "broken", "revoked"]
    display: str
    label: Label
    created_at: UTCTimestamp
    expires_at: UTCTimestamp | None
    refresh_expires_at: UTCTimestamp | None
    last_refresh_at: UTCTimestamp | None
    last_refresh_outcome: str | None
    rotation_due: bool = Field(
        description=(
            "The credential is past its rotation date (90 days for a Live API key) and the "
            "broker cannot re-issue it: ask the user for a fresh key "
            "(PUT /v1/connections/{id}/credentials). A `connection.rotation_due` event is "
            "emitted once when this turns true; storing a fresh credential clears it."
        )
    )
    rotation_due_at: UTCTimestamp | None = Field(
        description="When the connection was flagged `rotation_due` (null when it is not)."
    )
    accounts: list[str]
    environment: str = Field(
        default="live",
        description="live, or the broker's own paper/sandbox environment the connection was "
        "made in (options.environment: Alpaca paper, Tradier and tastytrade sandbox, Webull "
        "test); such a connection's label is Sandbox and its accounts' mode sandbox",
    )
    # Aggregator connections only, in the answer that created them: the Connection Portal
    # where the user links the brokerage (a new one: POST /v1/connections/{id}/portal).
    portal: PortalOut | None = None


class ConnectionPage(ResponseModel):
    items: list[ConnectionOut]
    next_cursor: str | None


class AccountOut(ResponseModel):
    id: str
    connection_id: str
    broker: str
    tier: TierOut
    label: Label
    mode: AccountMode = Field(
        description="live money, our paper broker, or sandbox: the broker's own paper/sandbox "
        "environment (never live money)"
    )
    name: str
    number_masked: str
    currency: str
    can_trade: bool


class AccountPage(ResponseModel):
    items: list[AccountOut]
    next_cursor: str | None


class BalancesOut(ResponseModel):
    cash: DecimalStr
    equity: DecimalStr
    buying_power: DecimalStr
    currency: str
    as_of: UTCTimestamp


class PositionOut(ResponseModel):
    symbol: str
    asset_class: AssetClass
    quantity: DecimalStr = Field(description="Signed: negative is short")
    avg_cost: DecimalStr
    current_price: DecimalStr
    market_value: DecimalStr = Field(
        description="current_price x quantity, times the contract multiplier for an option"
    )
    unrealized_pl: DecimalStr
    as_of: UTCTimestamp
    contract: ContractOut | None = Field(
        default=None, description="An option position: the contract's terms"
    )


class PositionList(ResponseModel):
    items: list[PositionOut]
    next_cursor: str | None = None
    partial: bool = Field(default=False, description=PARTIAL_DESCRIPTION)


class QuoteOut(ResponseModel):
    bid: DecimalStr
    ask: DecimalStr
    last: DecimalStr
    as_of: UTCTimestamp


class QuotesOut(ResponseModel):
    quotes: dict[str, QuoteOut]


class TransactionOut(ResponseModel):
    id: str
    type: str
    occurred_at: UTCTimestamp
    amount: DecimalStr
    symbol: str | None
    quantity: DecimalStr | None
    price: DecimalStr | None
    description: str


class TransactionList(ResponseModel):
    items: list[TransactionOut]
    next_cursor: str | None = None
    partial: bool = Field(default=False, description=PARTIAL_DESCRIPTION)


class ConnectionHealthRow(ResponseModel):
    broker: str
    status: str
    count: int


class ConnectionHealth(ResponseModel):
    """Connections per broker and status, across every user (ops only)."""

    items: list[ConnectionHealthRow]
    as_of: UTCTimestamp
