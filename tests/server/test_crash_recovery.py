"""After a forced kill mid-order, the retry's definitive answer comes within seconds.

A real gateway process is killed (SIGKILL) while the broker (the Alpaca fake) holds the
answer to an order it took; the process is started again and the client retries with the
same Idempotency-Key. Before the start-up settled orphaned keys this took a minute or more
(409 ``request_in_progress`` until the reconciler's 60 s grace for pending submits).
"""

from __future__ import annotations

from pathlib import Path

from tests.server.crashing import crash_mid_order

ROOT = Path(__file__).resolve().parents[2]


async def test_a_retry_after_a_kill_mid_order_is_answered_within_seconds(
    postgres_admin_url: str,
) -> None:
    figures = await crash_mid_order(ROOT, postgres_admin_url, within=60)
    assert figures.status == 201, figures.body
    assert figures.body["symbol"] == "AAPL"
    assert figures.orders_at_broker == 1  # adopted from the broker, never sent twice
    # The answer comes with the restart (the process settles the key before it serves),
    # not a reconciliation period later.
    assert figures.answer_seconds - figures.restart_seconds < 2, figures
    assert figures.answer_seconds < 20, figures
