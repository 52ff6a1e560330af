"""Place a call debit vertical on the fake Webull and show it filled with both legs and the
two positions it leaves: ``python -m tests.brokers.webull.vertical``.

Everything runs for real over HTTP with signed requests: the adapter infers the strategy
(``VERTICAL``) from the legs, sends them decomposed (underlying, strike, expiry, right) to
``POST /trading/orders/place``, reads the order back with its legs from
``GET /trading/orders/get`` and the strategy's legs from ``GET /trading/assets/positions/list``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from decimal import Decimal

from app.brokers.base import OrderStatus, PriceEffect
from tests.brokers.webull.option_support import contract, mark, vertical
from tests.brokers.webull.support import running_fake


def say(line: str) -> None:
    sys.stdout.write(line + "\n")


async def main() -> None:
    async with running_fake() as wb:
        adapter = await wb.adapter()
        account = wb.account.account_id
        buy, sell = contract(wb.fake, 0), contract(wb.fake, 2)
        price = mark(wb.fake, buy) - mark(wb.fake, sell) + Decimal("0.20")
        order = vertical(buy, sell, price=price, effect=PriceEffect.debit, quantity=2)
        placed = await adapter.place_order(account, order)
        sent = wb.account.orders[placed.broker_order_id]
        say(f"placed {placed.broker_order_id}: {placed.status.value}")
        say(
            f"  on the wire: option_strategy={sent.strategy} side={sent.side} "
            f"limit_price={sent.limit_price} legs="
            + json.dumps([leg.wire() for leg in sent.legs], separators=(",", ":"))
        )
        await wb.fake.match()
        filled = await adapter.get_order(account, placed.broker_order_id)
        assert filled.status is OrderStatus.filled, filled.status
        say(
            f"order {filled.broker_order_id}: {filled.status.value}, "
            f"{filled.filled_quantity} x {filled.symbol} {filled.price_effect} "
            f"net {filled.avg_fill_price} (limit {filled.limit_price})"
        )
        for leg in filled.legs:
            say(
                f"  leg {leg.side.value:4} {leg.ratio} x {leg.symbol}: "
                f"filled {leg.filled_quantity} (leg id {leg.broker_leg_id})"
            )
        positions = [p for p in await adapter.get_positions(account) if p.contract is not None]
        say("positions:")
        for p in positions:
            assert p.contract is not None
            say(
                json.dumps(
                    {
                        "symbol": p.symbol,
                        "quantity": str(p.quantity),
                        "avg_cost": str(p.avg_cost),
                        "market_value": str(p.market_value),
                        "strike": str(p.contract.strike),
                        "right": p.contract.right.value,
                        "expiration": p.contract.expiration.isoformat(),
                    }
                )
            )
        assert len(positions) == 2


if __name__ == "__main__":
    asyncio.run(main())
