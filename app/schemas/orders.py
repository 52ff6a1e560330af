"""Order request and response bodies."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import Field, model_validator

from app.brokers.base import OrderSide, OrderStatus, OrderType, TimeInForce
from app.db.models import Order as OrderRow
from app.schemas.common import DecimalStr, ResponseModel, StrictModel, UTCTimestamp

MAX_DECIMAL_PLACES_QUANTITY = 9


def _check_positive(name: str, value: Decimal | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{name} must be greater than zero")


class OrderCreate(StrictModel):
    symbol: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9.\-/ ]+$")
    side: OrderSide
    quantity: DecimalStr
    order_type: OrderType
    limit_price: DecimalStr | None = None
    stop_price: DecimalStr | None = None
    time_in_force: TimeInForce = TimeInForce.day
    extended_hours: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> OrderCreate:
        _check_positive("quantity", self.quantity)
        _check_positive("limit_price", self.limit_price)
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
        return self


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

    @classmethod
    def from_row(cls, row: OrderRow) -> Order:
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
        )


class OrderPage(ResponseModel):
    items: list[Order]
    next_cursor: str | None


OrderListStatus = Literal["open", "closed", "all"]
