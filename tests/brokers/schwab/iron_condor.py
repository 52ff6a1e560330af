"""Place a four-leg iron condor at the fake Schwab through the adapter, over real HTTP, and
show it filled with its four legs and the four resulting positions.

    .venv/bin/python -m tests.brokers.schwab.iron_condor
"""

from __future__ import annotations

import asyncio
import sys

from app.brokers.base import OptionRight, PriceEffect
from tests.brokers.schwab.support import running_fake
from tests.brokers.schwab.test_options import combo, contract, iron_condor


def say(line: str) -> None:
    sys.stdout.write(line + "\n")


async def main() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        ref = run.account.hash_value
        legs = iron_condor(run)
        short_put = contract(run, OptionRight.put, "185")
        say(f"AAPL iron condor, expiring {short_put.expiration}, 2 units, credit 0.05 or more")
        placed = await adapter.place_order(
            ref, combo(legs, qty="2", limit="0.05", effect=PriceEffect.credit)
        )
        say(f"placed  #{placed.broker_order_id} {placed.status.value}")
        await run.fake.match()
        order = await adapter.get_order(ref, placed.broker_order_id)
        say(
            f"order   #{order.broker_order_id} {order.status.value} "
            f"{order.filled_quantity}/{order.quantity} at net {order.avg_fill_price} "
            f"{order.price_effect.value if order.price_effect else ''}"
        )
        for leg in order.legs:
            say(
                f"  leg {leg.broker_leg_id}: {leg.side.value:4} {leg.symbol} x{leg.ratio} "
                f"filled {leg.filled_quantity} at {leg.avg_fill_price}"
            )
        say("positions")
        for p in await adapter.get_positions(ref):
            say(
                f"  {p.symbol} qty {p.quantity:>3} avg {p.avg_cost} price {p.current_price} "
                f"value {p.market_value}"
            )


if __name__ == "__main__":
    asyncio.run(main())
