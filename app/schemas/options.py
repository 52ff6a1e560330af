"""Option contracts, discovery (expirations, chain) and order preview bodies."""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Literal

from pydantic import Field

from app.brokers.base import (
    ExpirationType,
    Greeks,
    OptionContract,
    OptionQuote,
    OptionRight,
    OptionStyle,
    OrderPreview,
    PreviewSource,
    PriceEffect,
)
from app.schemas.common import DecimalStr, ResponseModel, StrictModel, UTCTimestamp


class ContractOut(ResponseModel):
    """The terms of one option contract. ``multiplier``: underlying units per contract."""

    underlying: str
    root: str
    expiration: date
    right: OptionRight
    strike: DecimalStr
    multiplier: DecimalStr
    style: OptionStyle

    @classmethod
    def of(cls, contract: OptionContract) -> ContractOut:
        return cls(
            underlying=contract.underlying,
            root=contract.root,
            expiration=contract.expiration,
            right=contract.right,
            strike=contract.strike,
            multiplier=contract.multiplier,
            style=contract.style,
        )


class ExpirationOut(ResponseModel):
    expiration: date
    expiration_type: ExpirationType


class ExpirationList(ResponseModel):
    underlying: str
    items: list[ExpirationOut]


class GreeksOut(ResponseModel):
    """Per-share sensitivities; ``iv`` as a fraction (0.25 = 25%)."""

    delta: DecimalStr | None
    gamma: DecimalStr | None
    theta: DecimalStr | None
    vega: DecimalStr | None
    rho: DecimalStr | None
    iv: DecimalStr | None

    @classmethod
    def of(cls, greeks: Greeks) -> GreeksOut:
        return cls(
            delta=greeks.delta,
            gamma=greeks.gamma,
            theta=greeks.theta,
            vega=greeks.vega,
            rho=greeks.rho,
            iv=greeks.iv,
        )


class OptionQuoteOut(ResponseModel):
    """One contract of a chain. ``source``: where the quote and greeks come from (``broker``,
    a vendor the broker names such as ``orats``, or ``model`` on the paper broker)."""

    symbol: str = Field(description="The canonical (unpadded) OCC symbol")
    contract: ContractOut
    bid: DecimalStr | None
    ask: DecimalStr | None
    last: DecimalStr | None
    open_interest: int | None
    greeks: GreeksOut | None
    source: str
    as_of: UTCTimestamp

    @classmethod
    def of(cls, quote: OptionQuote) -> OptionQuoteOut:
        return cls(
            symbol=quote.contract.symbol,
            contract=ContractOut.of(quote.contract),
            bid=quote.bid,
            ask=quote.ask,
            last=quote.last,
            open_interest=quote.open_interest,
            greeks=GreeksOut.of(quote.greeks) if quote.greeks is not None else None,
            source=quote.source,
            as_of=quote.as_of,
        )


class OptionChain(ResponseModel):
    """Contracts ordered by expiration, strike, then right (call before put)."""

    underlying: str
    items: list[OptionQuoteOut]
    next_cursor: str | None


class OrderPreviewOut(ResponseModel):
    """What an order would do; nothing is placed. ``estimated_cash_change`` is signed from the
    account's side (negative: cash leaves it) and agrees with ``direction``.
    ``source``: ``broker`` (the broker's own preview) or ``estimate`` (the gateway's, from
    quotes). A non-empty ``rejections`` means the broker would refuse the order."""

    estimated_cash_change: DecimalStr
    direction: PriceEffect
    buying_power_change: DecimalStr | None
    fees: DecimalStr
    warnings: list[str]
    rejections: list[str]
    source: PreviewSource

    @classmethod
    def of(cls, preview: OrderPreview) -> OrderPreviewOut:
        return cls(
            estimated_cash_change=preview.estimated_cash_change,
            direction=preview.direction,
            buying_power_change=preview.buying_power_change,
            fees=preview.fees,
            warnings=list(preview.warnings),
            rejections=list(preview.rejections),
            source=preview.source,
        )


class ExerciseAction(StrEnum):
    """``exercise``: exercise the whole long position now. ``do_not_exercise``: do not
    exercise it automatically at expiry even when in the money (it then expires)."""

    exercise = "exercise"
    do_not_exercise = "do_not_exercise"


class ExerciseCreate(StrictModel):
    """An exercise instruction for a held long option position."""

    action: ExerciseAction


class ExerciseOut(ResponseModel):
    """An instruction the broker took (``status`` ``accepted``), or one whose answer was lost
    (``unknown``, HTTP 202: check the position and the account's transactions; sending it
    again with the same Idempotency-Key replays this answer). What the exercise does to the
    account (the contract leaves, the underlying arrives) is reported as transactions and
    ``order.filled`` events of the broker's own lifecycle orders."""

    id: str
    account_id: str
    symbol: str
    contract: ContractOut
    action: ExerciseAction
    status: Literal["accepted", "unknown"]
    requested_at: UTCTimestamp
