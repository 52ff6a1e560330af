"""One command: a four-leg iron condor at the fake Alpaca, filled, its legs and positions.

    .venv/bin/python -m tests.brokers.alpaca.iron_condor

Starts the fake on a localhost port, places the condor through ``AlpacaAdapter`` over real
HTTP (one ``mleg`` order, a signed net credit), lets the fake match it, then prints the order
with its four legs and the four resulting positions as the adapter reads them back.
"""

from __future__ import annotations

import asyncio
import sys

from app.brokers.base import PriceEffect
from tests.brokers.alpaca.options import combo, iron_condor_legs
from tests.brokers.alpaca.support import running_fake


def show(line: str) -> None:
    sys.stdout.write(line + "\n")


async def main() -> None:
    async with running_fake(cash="25000") as run:
        adapter = run.adapter()
        order = combo(
            "bg-condor-demo",
            iron_condor_legs(run.fake),
            qty="2",
            limit_price="0.10",
            effect=PriceEffect.credit,
        )
        placed = await adapter.place_order(run.account.id, order)
        sent = run.fake.accounts[run.account.key_id].orders[placed.broker_order_id]
        show(f"placed {placed.broker_order_id} {placed.status.value}: 2 x iron condor on")
        show(f"  {placed.symbol}, credit {placed.limit_price} (wire: {sent.limit_price})")
        await run.fake.match()
        filled = await adapter.get_order(run.account.id, placed.broker_order_id)
        show(
            f"order {filled.status.value}: {filled.filled_quantity} units at a net "
            f"{filled.price_effect.value if filled.price_effect else ''} of {filled.avg_fill_price}"
        )
        for leg in filled.legs:
            effect = leg.position_effect.value if leg.position_effect else "?"
            show(
                f"  leg {leg.side.value:4} {leg.ratio} x {leg.symbol} to {effect:5} "
                f"filled {leg.filled_quantity} @ {leg.avg_fill_price}"
            )
        show("positions:")
        for position in await adapter.get_positions(run.account.id):
            multiplier = position.contract.multiplier if position.contract else 1
            show(
                f"  {position.symbol} qty {position.quantity:>3} price {position.current_price} "
                f"value {position.market_value} (x{multiplier})"
            )


if __name__ == "__main__":
    asyncio.run(main())
