"""Multi-broker routing: the routed order request, the route decision, routes and rules."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from app.brokers.base import AssetClass, OrderStatus
from app.schemas.common import ResponseModel, StrictModel, UTCTimestamp
from app.schemas.orders import Order, OrderCreate

AUTO = "auto"
MAX_ALLOWED_ACCOUNTS = 100
MAX_RULE_ACCOUNTS = 50

AccountRef = Annotated[str, Field(min_length=1, max_length=64)]
TradingMode = Literal["live", "paper"]
Selection = Literal["auto", "explicit"]
CandidateSource = Literal["explicit", "rule", "default"]
# Why the first candidate leads: the caller named it; the user's routing rule for the asset
# class ranks it first; no rule ranks it and it is the oldest eligible account; or nothing
# is eligible.
DecisionReason = Literal["explicit_account", "routing_rule", "default_order", "no_eligible_account"]
ModeSource = Literal["request", "account", "preferred_account"]
AttemptOutcome = Literal["pending", "accepted", "rejected", "not_sent", "unknown", "skipped"]
RouteStatus = Literal["routing", "placed", "waiting_for_reconciliation", "failed"]


class RoutedOrderCreate(OrderCreate):
    """``POST /v1/orders`` and ``POST /v1/orders/route``: an order plus where it may go.

    ``account_id``: ``"auto"`` (the router chooses, with failover) or one of your account
    ids (placed there, exactly like ``POST /v1/accounts/{id}/orders``; no failover).
    ``allowed_accounts``: only these accounts may be chosen. ``mode``: ``live`` or ``paper``;
    by default the mode of your most preferred account. A route never mixes paper and live.
    """

    account_id: AccountRef = Field(description='"auto", or one of your account ids')
    allowed_accounts: list[AccountRef] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_ALLOWED_ACCOUNTS,
        json_schema_extra={"uniqueItems": True},
    )
    mode: TradingMode | None = None

    @model_validator(mode="after")
    def _consistent_route(self) -> RoutedOrderCreate:
        if self.allowed_accounts is not None:
            if len(set(self.allowed_accounts)) != len(self.allowed_accounts):
                raise ValueError("allowed_accounts lists an account more than once")
            if self.account_id != AUTO and self.account_id not in self.allowed_accounts:
                raise ValueError("account_id is not one of allowed_accounts")
        return self

    @property
    def is_auto(self) -> bool:
        return self.account_id == AUTO


class RouteCandidate(ResponseModel):
    account_id: str
    broker: str
    rank: int = Field(description="1 is tried first")
    source: CandidateSource


class PassedOver(ResponseModel):
    """An account the router will not use for this order, with a stable reason ``code``:
    the problem code a placement on that account would answer (``read_only_account``,
    ``connection_broken``, ``live_trading_disabled``, ``paper_first_required``,
    ``unsupported_order``), or ``unknown_account``, ``not_in_allowed_accounts``,
    ``mode_mismatch``."""

    account_id: str
    broker: str | None
    code: str
    detail: str


class RouteDecision(ResponseModel):
    selection: Selection
    asset_class: AssetClass
    mode: TradingMode
    mode_source: ModeSource
    account_id: str | None = Field(description="The account tried first; null when none")
    reason: DecisionReason
    detail: str
    candidates: list[RouteCandidate]
    passed_over: list[PassedOver]


class RouteAttemptOut(ResponseModel):
    """One try at one account. ``outcome`` is what was known when the request ended;
    ``order_status`` is the attempt's order now (reconciliation may have moved it)."""

    seq: int
    account_id: str
    broker: str
    order_id: str | None
    outcome: AttemptOutcome
    code: str | None
    detail: str | None
    order_status: OrderStatus | None
    created_at: UTCTimestamp
    updated_at: UTCTimestamp


class Route(ResponseModel):
    id: str
    status: RouteStatus
    account_id: str | None = Field(description="The account holding the order, if any")
    order_id: str | None
    failed_over: bool
    decision: RouteDecision
    attempts: list[RouteAttemptOut]
    created_at: UTCTimestamp


class RoutedOrder(ResponseModel):
    """201: placed (``route.status`` ``placed``). 202: sent and the outcome is unknown
    (``waiting_for_reconciliation``): no other broker is tried."""

    route: Route
    order: Order


class RoutingRuleIn(StrictModel):
    asset_class: AssetClass
    accounts: list[AccountRef] = Field(
        min_length=1, max_length=MAX_RULE_ACCOUNTS, json_schema_extra={"uniqueItems": True}
    )

    @model_validator(mode="after")
    def _unique(self) -> RoutingRuleIn:
        if len(set(self.accounts)) != len(self.accounts):
            raise ValueError("a rule lists an account more than once")
        return self


class RoutingRulesIn(StrictModel):
    rules: list[RoutingRuleIn] = Field(max_length=len(AssetClass))

    @model_validator(mode="after")
    def _one_per_class(self) -> RoutingRulesIn:
        classes = [rule.asset_class for rule in self.rules]
        if len(set(classes)) != len(classes):
            raise ValueError("at most one rule per asset class")
        return self


class RoutingRuleOut(ResponseModel):
    asset_class: AssetClass
    accounts: list[str]
    updated_at: UTCTimestamp


class RoutingRules(ResponseModel):
    rules: list[RoutingRuleOut]
