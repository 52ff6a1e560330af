"""Place a call debit vertical on the fake IBKR gateway and show it filled with both legs and
the two positions it leaves: ``python -m tests.brokers.ibkr.vertical``.

Everything runs for real over HTTP: the adapter resolves both contracts through the secdef
walk, sends one combo (``conidex`` with the USD spread conid, signed ratios, a positive
price for the debit), answers the order-question chain, reads the order and its legs back
(leg prices from the executions) and the positions from the portfolio rows.
"""

from __future__ import annotations

import asyncio
import json
import sys
from decimal import Decimal

from app.brokers.base import OrderStatus, PriceEffect
from tests.brokers.ibkr.option_support import contract, net_ask, vertical
from tests.brokers.ibkr.support import running_fake


def say(line: str) -> None:
    sys.stdout.write(line + "\n")


async def main() -> None:
    async with running_fake() as ib:
        adapter = ib.adapter()
        account = ib.account.account_id
        buy, sell = contract(ib.fake, 0), contract(ib.fake, 2)
        price = net_ask(ib.fake, buy, sell) + Decimal("0.20")  # room for the market to move
        order = vertical(buy, sell, price=price, effect=PriceEffect.debit, quantity=2)
        placed = await adapter.place_order(account, order)
        sent = next(o for o in ib.fake.orders.values() if o.coid == order.client_order_id)
        say(f"placed {placed.broker_order_id}: {placed.status.value}")
        say(f"  on the wire: conidex={sent.conidex} side={sent.side} price={sent.price}")
        await ib.fake.match()
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
                f"filled {leg.filled_quantity} @ {leg.avg_fill_price}"
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
                        "multiplier": str(p.contract.multiplier),
                    }
                )
            )
        assert len(positions) == 2


if __name__ == "__main__":
    asyncio.run(main())
