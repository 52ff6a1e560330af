"""Order request and response bodies.

Options (ISSUE 11, API.md "Options"): a single-leg option order is the equity body with an
OCC ``symbol`` (padded or unpadded on input, answered in the canonical unpadded form),
whole-contract ``quantity`` and a required ``position_effect``. A multi-leg order has
``legs`` (2 to 4) instead of ``symbol``/``side``, ``quantity`` in whole strategy units and,
for a limit order, an unsigned ``limit_price`` with ``price_effect``. Every check here is
made before anything is written; each failure is a 422 with a stable ``code``
(``app.errors.ORDER_VALIDATION_CODES``).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from functools import reduce
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from app.brokers.base import (
    InvalidOptionSymbol,
    OptionContract,
    OrderSide,
    OrderStatus,
    OrderType,
    PositionEffect,
    PriceEffect,
    TimeInForce,
    is_option_symbol,
)
from app.db.models import Order as OrderRow
from app.schemas.common import DecimalStr, ResponseModel, StrictModel, UTCTimestamp
from app.schemas.options import ContractOut

MAX_DECIMAL_PLACES_QUANTITY = 9
MAX_DECIMAL_PLACES_NOTIONAL = 2
MIN_LEGS = 2
MAX_LEGS = 4
"""Bounds of a multi-leg order on every broker; a broker may allow fewer
(``capabilities.options.max_legs``, answered ``unsupported_order``)."""

# Six digits in a row appear in no equity, fund or crypto symbol: text that has them was
# meant as an OCC option symbol, and is refused as one when it does not parse.
_OPTION_LIKE = re.compile(r"\d{6}")

SymbolText = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9.\-/ ]+$")]


def _check_positive(name: str, value: Decimal | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{name} must be greater than zero")


def _coded(code: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(code, message)


def canonical_option(text: str) -> OptionContract:
    """The contract an OCC symbol names; ``invalid_option_symbol`` when it names none."""
    try:
        return OptionContract.parse(text)
    except InvalidOptionSymbol as exc:
        raise _coded("invalid_option_symbol", str(exc)) from exc


def _canonical_symbol(text: str) -> str:
    """Option symbols in their canonical unpadded form; anything else unchanged."""
    if is_option_symbol(text) or _OPTION_LIKE.search(text):
        return canonical_option(text).symbol
    return text


def _is_whole(value: Decimal) -> bool:
    return value == value.to_integral_value()


class LegIn(StrictModel):
    """One leg: an option contract, its side, its ratio per strategy unit, open or close."""

    symbol: SymbolText
    side: OrderSide
    ratio: int = 1
    position_effect: PositionEffect

    @field_validator("symbol", mode="after")
    @classmethod
    def _option(cls, value: str) -> str:
        return canonical_option(value).symbol

    @field_validator("ratio", mode="after")
    @classmethod
    def _ratio(cls, value: int) -> int:
        if value < 1:
            raise _coded("invalid_leg_ratio", "ratio must be a whole number of at least 1")
        return value


class OrderCreate(StrictModel):
    symbol: SymbolText | None = Field(
        default=None, description="Required, except for a multi-leg order (give legs instead)"
    )
    side: OrderSide | None = Field(
        default=None, description="Required, except for a multi-leg order (each leg has one)"
    )
    quantity: DecimalStr = Field(
        default=Decimal(0),
        description="Shares, whole contracts for an option, whole strategy units for legs. "
        "Required unless notional is given (exactly one of the two)",
    )
    notional: DecimalStr | None = Field(
        default=None,
        description="A dollar-amount order instead of quantity (exactly one of the two): the "
        "amount to spend (buy) or raise (sell). Market orders, and limit orders where the "
        "broker's capabilities.notional_limit says so; equities and crypto only",
    )
    order_type: OrderType
    limit_price: DecimalStr | None = Field(
        default=None,
        description="Multi-leg: the unsigned net price; price_effect gives its direction",
    )
    stop_price: DecimalStr | None = None
    time_in_force: TimeInForce = TimeInForce.day
    extended_hours: bool = False
    position_effect: PositionEffect | None = Field(
        default=None,
        description="open or close: required for an option, optional for an equity "
        "(sell + open is a short sale, buy + close a cover)",
    )
    legs: list[LegIn] | None = Field(
        default=None, description="A multi-leg option order: 2 to 4 legs on one underlying"
    )
    price_effect: PriceEffect | None = Field(
        default=None,
        description="Multi-leg: debit, credit or even (required for a limit order)",
    )

    @field_validator("symbol", mode="after")
    @classmethod
    def _canonical(cls, value: str | None) -> str | None:
        return None if value is None else _canonical_symbol(value)

    @field_validator("legs", mode="before")
    @classmethod
    def _leg_count(cls, value: Any) -> Any:
        if isinstance(value, list) and not MIN_LEGS <= len(value) <= MAX_LEGS:
            raise _coded(
                "invalid_leg_count",
                f"a multi-leg order has {MIN_LEGS} to {MAX_LEGS} legs, not {len(value)}",
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> OrderCreate:
        if self.notional is not None:
            self._check_notional()
        else:
            _check_positive("quantity", self.quantity)
        _check_positive("stop_price", self.stop_price)
        exponent = self.quantity.as_tuple().exponent
        if isinstance(exponent, int) and -exponent > MAX_DECIMAL_PLACES_QUANTITY:
            raise ValueError("quantity has more than 9 decimal places")
        needs_limit = self.order_type in (OrderType.limit, OrderType.stop_limit)
        needs_stop = self.order_type in (OrderType.stop, OrderType.stop_limit)
        if needs_limit and self.limit_price is None:
            raise ValueError(f"a {self.order_type.value} order needs limit_price")
        if not needs_limit and self.limit_price is not None:
            raise ValueError(f"a {self.order_type.value} order takes no limit_price")
        if needs_stop and self.stop_price is None:
            raise ValueError(f"a {self.order_type.value} order needs stop_price")
        if not needs_stop and self.stop_price is not None:
            raise ValueError(f"a {self.order_type.value} order takes no stop_price")
        if self.legs is not None:
            self._check_multi_leg()
        else:
            _check_positive("limit_price", self.limit_price)
            self._check_single()
        return self

    def _check_notional(self) -> None:
        """A dollar amount instead of a quantity (ISSUE 15 item 3): exactly one of the two,
        > 0 with at most cents, on a plain (not option, not multi-leg) market or limit order.
        Whether the broker takes it is the capability gate's answer (``unsupported_order``)."""
        assert self.notional is not None
        if "quantity" in self.model_fields_set:
            raise ValueError("give quantity or notional, not both")
        _check_positive("notional", self.notional)
        exponent = self.notional.as_tuple().exponent
        if isinstance(exponent, int) and -exponent > MAX_DECIMAL_PLACES_NOTIONAL:
            raise ValueError("notional has more than 2 decimal places")
        if self.order_type not in (OrderType.market, OrderType.limit):
            raise ValueError(
                f"a notional order is a market or limit order, not {self.order_type.value}"
            )
        if self.legs is not None or (self.symbol is not None and is_option_symbol(self.symbol)):
            raise ValueError("an option order is in whole contracts: give quantity, not notional")

    def _check_single(self) -> None:
        if self.symbol is None:
            raise ValueError("symbol is required (or legs, for a multi-leg order)")
        if self.side is None:
            raise ValueError("side is required (or legs, for a multi-leg order)")
        if self.price_effect is not None:
            raise ValueError("price_effect is for multi-leg orders; side gives the direction")
        # A missing position_effect is answered by the service, after the capability gate
        # (a broker without options says so first): ``check_option_terms``.
        if is_option_symbol(self.symbol) and not _is_whole(self.quantity):
            raise _coded("fractional_contracts", "option quantity is in whole contracts")

    def _check_multi_leg(self) -> None:
        legs = self.legs or []
        if self.symbol is not None or self.side is not None:
            raise ValueError("a multi-leg order has no symbol or side: each leg has its own")
        if self.position_effect is not None:
            raise ValueError("a multi-leg order has no position_effect: each leg has its own")
        if not _is_whole(self.quantity):
            raise _coded("fractional_contracts", "quantity is in whole strategy units")
        contracts = [OptionContract.parse(leg.symbol) for leg in legs]
        if len({c.underlying for c in contracts}) > 1:
            raise _coded(
                "mixed_underlyings",
                "legs are on different underlyings: "
                + ", ".join(sorted({c.underlying for c in contracts})),
            )
        if len({leg.symbol for leg in legs}) != len(legs):
            raise _coded("duplicate_legs", "each contract may appear in one leg only")
        if reduce(math.gcd, (leg.ratio for leg in legs)) != 1:
            raise _coded(
                "leg_ratios_not_reduced",
                "the ratios share a common factor: divide them by it and multiply quantity",
            )
        if self.order_type is OrderType.limit and self.price_effect is None:
            raise _coded("price_effect_required", "a multi-leg limit order needs price_effect")
        if self.limit_price is not None:
            if self.price_effect is PriceEffect.even and self.limit_price != 0:
                raise ValueError("an even net price is 0")
            if self.price_effect is not PriceEffect.even:
                _check_positive("limit_price", self.limit_price)
        sides = {leg.side for leg in legs}
        if self.price_effect is not None and len(sides) == 1:
            # All buys can only cost money, all sells only bring it in.
            expected = PriceEffect.debit if sides == {OrderSide.buy} else PriceEffect.credit
            if self.price_effect is not expected:
                raise _coded(
                    "price_effect_mismatch",
                    f"every leg {next(iter(sides)).value}s: the net price is a "
                    f"{expected.value}, not {self.price_effect.value}",
                )

    # --- derived --------------------------------------------------------------------

    @property
    def is_multi_leg(self) -> bool:
        return self.legs is not None

    @property
    def is_short_sale(self) -> bool:
        """An equity (or crypto) sell that opens a short position."""
        return (
            not self.is_option
            and self.side is OrderSide.sell
            and self.position_effect is PositionEffect.open
        )

    @property
    def instrument(self) -> str:
        """The symbol the order is on: its ``symbol``, or the legs' underlying."""
        if self.legs is not None:
            return OptionContract.parse(self.legs[0].symbol).underlying
        assert self.symbol is not None  # validated
        return self.symbol

    @property
    def order_side(self) -> OrderSide:
        """The side of the order: its ``side``; for legs (the ``OrderRequest`` convention)
        ``sell`` for a credit and ``buy`` otherwise."""
        if self.legs is not None:
            if self.price_effect is PriceEffect.credit:
                return OrderSide.sell
            if self.price_effect is None and all(leg.side is OrderSide.sell for leg in self.legs):
                return OrderSide.sell
            return OrderSide.buy
        assert self.side is not None  # validated
        return self.side

    @property
    def is_option(self) -> bool:
        return self.legs is not None or (self.symbol is not None and is_option_symbol(self.symbol))

    def contracts(self) -> list[OptionContract]:
        """The option contracts the order names (one per leg, or its symbol's)."""
        if self.legs is not None:
            return [OptionContract.parse(leg.symbol) for leg in self.legs]
        if self.symbol is not None and is_option_symbol(self.symbol):
            return [OptionContract.parse(self.symbol)]
        return []


class OrderUpdateBody(StrictModel):
    quantity: DecimalStr | None = None
    limit_price: DecimalStr | None = None
    stop_price: DecimalStr | None = None
    time_in_force: TimeInForce | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> OrderUpdateBody:
        _check_positive("quantity", self.quantity)
        _check_positive("limit_price", self.limit_price)
        _check_positive("stop_price", self.stop_price)
        if (
            self.quantity is None
            and self.limit_price is None
            and self.stop_price is None
            and self.time_in_force is None
        ):
            raise ValueError(
                "give at least one of quantity, limit_price, stop_price, time_in_force"
            )
        return self


class OrderLegOut(ResponseModel):
    """One leg of a multi-leg order with its own fills (``avg_fill_price`` per share)."""

    symbol: str
    side: OrderSide
    ratio: int
    position_effect: PositionEffect | None
    filled_quantity: DecimalStr
    avg_fill_price: DecimalStr | None

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> OrderLegOut:
        avg = stored.get("avg_fill_price")
        effect = stored.get("position_effect")
        return cls(
            symbol=str(stored["symbol"]),
            side=OrderSide(stored["side"]),
            ratio=int(stored["ratio"]),
            position_effect=PositionEffect(effect) if effect is not None else None,
            filled_quantity=Decimal(str(stored.get("filled_quantity") or "0")),
            avg_fill_price=Decimal(str(avg)) if avg is not None else None,
        )


class Order(ResponseModel):
    id: str
    account_id: str
    client_order_id: str
    broker_order_id: str | None
    symbol: str
    side: OrderSide
    quantity: DecimalStr
    filled_quantity: DecimalStr
    avg_fill_price: DecimalStr | None
    order_type: OrderType
    limit_price: DecimalStr | None
    stop_price: DecimalStr | None
    time_in_force: TimeInForce
    extended_hours: bool
    status: OrderStatus
    reject_reason: str | None
    replaces_order_id: str | None
    replaced_by_order_id: str | None
    created_at: UTCTimestamp
    updated_at: UTCTimestamp
    position_effect: PositionEffect | None = None
    price_effect: PriceEffect | None = None
    notional: DecimalStr | None = Field(
        default=None,
        description="A dollar-amount order: the amount asked for; quantity, filled_quantity "
        "and avg_fill_price are then what the broker reports (quantity 0 until it is known)",
    )
    legs: list[OrderLegOut] = Field(
        default_factory=list,
        description="A multi-leg order's legs with their fills (empty for a plain order); "
        "symbol is then the legs' underlying",
    )
    contract: ContractOut | None = Field(
        default=None, description="A single-leg option order: the contract's terms"
    )

    @classmethod
    def from_row(cls, row: OrderRow) -> Order:
        contract = (
            ContractOut.of(OptionContract.parse(row.symbol))
            if not row.legs and is_option_symbol(row.symbol)
            else None
        )
        return cls(
            id=row.id,
            account_id=row.account_id,
            client_order_id=row.client_order_id,
            broker_order_id=row.broker_order_id,
            symbol=row.symbol,
            side=OrderSide(row.side),
            quantity=row.quantity,
            filled_quantity=row.filled_quantity,
            avg_fill_price=row.avg_fill_price,
            order_type=OrderType(row.order_type),
            limit_price=row.limit_price,
            stop_price=row.stop_price,
            time_in_force=TimeInForce(row.time_in_force),
            extended_hours=row.extended_hours,
            status=OrderStatus(row.status),
            reject_reason=row.reject_reason,
            replaces_order_id=row.replaces_order_id,
            replaced_by_order_id=row.replaced_by_order_id,
            created_at=row.created_at,
            updated_at=row.updated_at,
            position_effect=PositionEffect(row.position_effect) if row.position_effect else None,
            price_effect=PriceEffect(row.price_effect) if row.price_effect else None,
            notional=row.notional,
            legs=[OrderLegOut.from_stored(leg) for leg in row.legs or ()],
            contract=contract,
        )


class OrderPage(ResponseModel):
    items: list[Order]
    next_cursor: str | None


OrderListStatus = Literal["open", "closed", "all"]
