"""Place a four-leg iron condor through the Tradier adapter against the fake Tradier, show it
filled with its four legs and the four positions it opened.

    .venv/bin/python -m tests.brokers.tradier.condor
"""

from __future__ import annotations

import asyncio
import sys
from decimal import Decimal

from tests.brokers.tradier.support import running_fake
from tests.brokers.tradier.test_option_adapter import condor, condor_legs, current_credit


def show(line: str) -> None:
    sys.stdout.write(line + "\n")


async def main() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        legs = condor_legs(run)
        price = (current_credit(run, legs) * Decimal("0.8")).quantize(Decimal("0.01"))
        placed = await adapter.place_order(number, condor("bg-condor-demo", legs, str(price)))
        show(f"placed {placed.broker_order_id}: {placed.status.value}, credit {price} x 2")
        await run.fake.match()
        order = await adapter.get_order(number, placed.broker_order_id)
        show(
            f"order {order.broker_order_id}: {order.status.value}, "
            f"{order.filled_quantity} filled at a net {order.price_effect} "
            f"of {order.avg_fill_price}"
        )
        for leg in order.legs:
            show(
                f"  leg {leg.symbol} {leg.side.value} ratio {leg.ratio} "
                f"{leg.position_effect}: {leg.filled_quantity} at {leg.avg_fill_price}"
            )
        for position in await adapter.get_positions(number):
            show(
                f"position {position.symbol}: {position.quantity} "
                f"(market value {position.market_value})"
            )


if __name__ == "__main__":
    asyncio.run(main())
