"""Place a four-leg iron condor at the fake tastytrade through the adapter, over real HTTP,
and print the order filled with its four legs and the four resulting positions.

    .venv/bin/python -m tests.brokers.tastytrade.iron_condor
"""

from __future__ import annotations

import asyncio
import sys

from tests.brokers.tastytrade.options_support import iron_condor_legs, spread
from tests.brokers.tastytrade.support import running_fake


def say(line: str) -> None:
    sys.stdout.write(line + "\n")


async def main() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        number = run.account.number
        order = spread("bg-ic-demo", iron_condor_legs(run.fake), qty="1", price="0.05")
        placed = await adapter.place_order(number, order)
        effect = placed.price_effect.value if placed.price_effect else ""
        say(
            f"placed {placed.broker_order_id}: {placed.status.value}, {placed.quantity} x "
            f"{placed.symbol} iron condor, limit {placed.limit_price} {effect}"
        )
        await run.fake.match()
        filled = await adapter.get_order(number, placed.broker_order_id)
        say(
            f"order {filled.broker_order_id}: {filled.status.value}, filled "
            f"{filled.filled_quantity} at a net {filled.avg_fill_price} {effect}"
        )
        for leg in filled.legs:
            opens = leg.position_effect.value if leg.position_effect else ""
            say(
                f"  leg {leg.side.value:4} {opens:5} {leg.symbol:22} ratio {leg.ratio}"
                f" filled {leg.filled_quantity} @ {leg.avg_fill_price}"
            )
        say("positions:")
        for position in await adapter.get_positions(number):
            multiplier = position.contract.multiplier if position.contract else 1
            say(
                f"  {position.symbol:22} {position.quantity:>4} x{multiplier}"
                f" avg {position.avg_cost} mark {position.current_price}"
                f" value {position.market_value}"
            )


if __name__ == "__main__":
    asyncio.run(main())
