"""Place a call vertical (debit) spread through the SnapTrade adapter against the fake
SnapTrade: the impact first, then the placement; show it filled with both legs and the two
positions it opened.

    .venv/bin/python -m tests.brokers.snaptrade.vertical
"""

from __future__ import annotations

import asyncio
import sys
from decimal import Decimal

from tests.brokers.snaptrade.support import running_fake
from tests.brokers.snaptrade.test_options import natural_debit, vertical, vertical_legs


def show(line: str) -> None:
    sys.stdout.write(line + "\n")


async def main() -> None:
    async with running_fake() as run:
        adapter = run.adapter()
        account = run.account.id
        legs = vertical_legs(run)
        price = (natural_debit(run, legs) * Decimal("1.2")).quantize(Decimal("0.01"))
        order = vertical(legs, price)
        preview = await adapter.preview_order(account, order)
        show(
            f"impact: {preview.direction.value} {preview.estimated_cash_change} "
            f"(fees {preview.fees}, source {preview.source.value})"
        )
        placed = await adapter.place_order(account, order)
        trading = [p.split("/", 3)[3] for _, p in run.fake.requests if "/trading/" in p]
        show("requests: " + ", ".join(f"POST /accounts/{{id}}/{p}" for p in trading))
        show(f"placed {placed.broker_order_id}: {placed.status.value}, debit {price} x 2")
        await run.fake.match()
        filled = await adapter.get_order(account, placed.broker_order_id)
        show(
            f"order {filled.broker_order_id}: {filled.status.value}, "
            f"{filled.filled_quantity} filled at a net {filled.price_effect} "
            f"of {filled.avg_fill_price}"
        )
        for leg in filled.legs:
            show(
                f"  leg {leg.symbol} {leg.side.value} ratio {leg.ratio} "
                f"{leg.position_effect}: {leg.filled_quantity} at {leg.avg_fill_price}"
            )
        for position in await adapter.get_positions(account):
            show(
                f"position {position.symbol}: {position.quantity} "
                f"(avg cost {position.avg_cost}/share, market value {position.market_value})"
            )


if __name__ == "__main__":
    asyncio.run(main())
