"""Driver for scripts/bench/ibkr_chain (see that file). Not a test: it prints figures.

The adapter runs with its production pacing (``ibkr_requests_per_second``, default 8) against
the fake gateway over real HTTP; the fake enforces IBKR's documented 10 requests a second
and answers 429 (and a penalty box) beyond it.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from app.brokers.base import OptionChainQuery  # noqa: E402
from tests.brokers.ibkr.option_support import UNDERLYING, expiration, strikes  # noqa: E402
from tests.brokers.ibkr.support import running_fake  # noqa: E402

STRIKES = 40


def say(line: str) -> None:
    sys.stdout.write(line + "\n")


def endpoint(path: str) -> str:
    return path.removeprefix("/v1/api")


async def main() -> None:
    async with running_fake() as ib:
        adapter = ib.adapter()
        await adapter.list_accounts()  # the session (auth status, pre-flight): not counted
        listed = strikes(ib.fake)[:STRIKES]
        query = OptionChainQuery(
            UNDERLYING,
            expiration=expiration(ib.fake),
            strike_gte=listed[0],
            strike_lte=listed[-1],
        )
        say(
            f"IBKR chain: {UNDERLYING} {query.expiration}, {len(listed)} strikes "
            f"{listed[0]}..{listed[-1]}, calls and puts; adapter paced at "
            f"{ib.settings().ibkr_requests_per_second}/s, fake limit 10/s"
        )
        for label in ("cold", "warm"):
            before = len(ib.fake.requests)
            started = time.perf_counter()
            chain = await adapter.get_option_chain(query)
            elapsed = time.perf_counter() - started
            sent = ib.fake.requests[before:]
            by_path = Counter(endpoint(p) for _m, p in sent)
            quoted = sum(1 for q in chain if q.bid is not None and q.ask is not None)
            say(
                f"{label}: {len(chain)} contracts ({quoted} quoted), {len(sent)} requests, "
                f"{elapsed:.2f} s, {len(sent) / elapsed:.1f} req/s"
            )
            for path, count in sorted(by_path.items()):
                say(f"    {count:4d}  {path}")
        say(f"429 answers from the fake: {ib.fake.too_many} (pacing breaches: {ib.fake.penalties})")


if __name__ == "__main__":
    logging.disable(logging.WARNING)
    asyncio.run(main())
