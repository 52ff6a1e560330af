"""``GET /v1/portfolio``: one picture across every account of the user.

Money is never added across currencies, and paper money is never added to real money:
totals and per-symbol rows are keyed by ``(currency, mode)``. Positions are never netted
across accounts: every per-symbol row carries the per-account breakdown it sums.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.brokers.base import AssetClass
from app.schemas.accounts import Label, TierOut
from app.schemas.common import DecimalStr, ResponseModel, UTCTimestamp
from app.schemas.options import ContractOut

Mode = Literal["paper", "live", "sandbox"]

UnavailableReason = Literal[
    "timeout",
    "broker_unavailable",
    "rate_limited",
    "connection_broken",
    "connection_revoked",
    "broker_error",
    "broker_not_available",
    "internal_error",
]


class PortfolioTotal(ResponseModel):
    """Sums over the accounts read just now that share one currency and one mode."""

    currency: str
    mode: Mode
    equity: DecimalStr
    cash: DecimalStr
    market_value: DecimalStr = Field(description="sum of the positions' market values")
    accounts: int = Field(description="how many accounts the sums cover")


class AccountHolding(ResponseModel):
    """One account's position in a symbol, exactly as its broker reported it."""

    account_id: str
    broker: str
    label: Label
    quantity: DecimalStr
    avg_cost: DecimalStr
    current_price: DecimalStr
    market_value: DecimalStr
    unrealized_pl: DecimalStr
    as_of: UTCTimestamp


class PortfolioPosition(ResponseModel):
    """A symbol across accounts: the totals are plain sums of ``accounts`` beside them.

    Options are never netted: long and short holdings of one contract are two rows
    (``position_side``), and every contract is a row of its own (no "strategy" rows)."""

    symbol: str
    asset_class: AssetClass
    currency: str
    mode: Mode
    quantity: DecimalStr
    market_value: DecimalStr
    accounts: list[AccountHolding]
    position_side: Literal["long", "short"] | None = Field(
        default=None, description="Options only: the rows of long and of short holdings"
    )
    contract: ContractOut | None = Field(default=None, description="Options: the contract")


class PortfolioAccount(ResponseModel):
    """An account read just now."""

    account_id: str
    connection_id: str
    broker: str
    tier: TierOut
    label: Label
    mode: Mode
    currency: str
    cash: DecimalStr
    equity: DecimalStr
    buying_power: DecimalStr
    positions: int
    as_of: UTCTimestamp
    partial: bool = Field(
        default=False,
        description="true when the broker's positions answer held rows the gateway cannot "
        "represent: they are left out of positions and totals (logged, counted in /metrics)",
    )


class SnapshotPosition(ResponseModel):
    symbol: str
    asset_class: AssetClass
    quantity: DecimalStr
    avg_cost: DecimalStr
    current_price: DecimalStr
    market_value: DecimalStr
    unrealized_pl: DecimalStr


class LastGood(ResponseModel):
    """The account's last good read; not included in any total."""

    as_of: UTCTimestamp
    age_seconds: int = Field(ge=0)
    currency: str
    cash: DecimalStr
    equity: DecimalStr
    buying_power: DecimalStr
    positions: list[SnapshotPosition]


class UnavailableAccount(ResponseModel):
    """An account that could not be read for this answer, and why."""

    account_id: str
    connection_id: str
    broker: str
    tier: TierOut
    label: Label
    mode: Mode
    reason: UnavailableReason
    detail: str
    attempted: bool = Field(
        description=(
            "false when the broker was not asked this time because it timed out or was "
            "unavailable moments ago (it is re-checked in the background)"
        )
    )
    last_good: LastGood | None


class PortfolioOut(ResponseModel):
    as_of: UTCTimestamp
    complete: bool = Field(description="true when every account was read just now")
    totals: list[PortfolioTotal]
    positions: list[PortfolioPosition]
    accounts: list[PortfolioAccount]
    unavailable: list[UnavailableAccount]
