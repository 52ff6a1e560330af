"""``scripts/fake-brokers``: serve the fakes on localhost until interrupted.

Prints the settings that point the gateway at them, a credential per fake account, and the
platform's default Alpaca key (a second fake Alpaca account). A ticker matches resting orders
every ``--tick`` seconds, like a market that moves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from tests.fakes.alpaca import FakeAlpaca, serve_asgi
from tests.fakes.tradier import FakeTradier


async def _tick(fakes: list[FakeAlpaca | FakeTradier], seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        for fake in fakes:
            await fake.match()


async def main(args: argparse.Namespace) -> None:
    alpaca = FakeAlpaca()
    alpaca.add_account(key_id=args.alpaca_key_id, secret=args.alpaca_secret)
    platform = alpaca.add_account(cash="1000000")
    tradier = FakeTradier()
    tradier.add_user(token=args.tradier_token)
    async with (
        serve_asgi(alpaca.app, port=args.port, on_shutdown=alpaca.release_hung) as alpaca_url,
        serve_asgi(
            tradier.app, port=args.tradier_port, on_shutdown=tradier.release_hung
        ) as tradier_url,
    ):
        lines = [
            f"export BROKERAGE_ALPACA_BASE_URL={alpaca_url}",
            f"export BROKERAGE_ALPACA_DATA_URL={alpaca_url}",
            f"export BROKERAGE_ALPACA_PLATFORM_KEY_ID={platform.key_id}",
            f"export BROKERAGE_ALPACA_PLATFORM_SECRET={platform.secret}",
            f"export BROKERAGE_TRADIER_BASE_URL={tradier_url}",
            "# connect with:",
            '#   curl -X POST localhost:8000/v1/connections -H "$AUTH" '
            "-H 'Content-Type: application/json' \\",
            f'#     -d \'{{"broker": "alpaca", "credentials": {{"api_key_id": '
            f'"{args.alpaca_key_id}", "api_secret_key": "{args.alpaca_secret}"}}}}\'',
            '#   curl -X POST localhost:8000/v1/connections -H "$AUTH" '
            "-H 'Content-Type: application/json' \\",
            f'#     -d \'{{"broker": "tradier", "credentials": {{"access_token": '
            f'"{args.tradier_token}"}}}}\'',
            "# or to the platform's default Alpaca account: "
            '-d \'{"broker": "alpaca", "options": {"ownership": "platform"}}\'',
        ]
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        ticker = asyncio.create_task(_tick([alpaca, tradier], args.tick))
        try:
            await asyncio.Event().wait()
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker


def run() -> None:
    parser = argparse.ArgumentParser(description="Serve the broker fakes on localhost.")
    parser.add_argument("--port", type=int, default=8765, help="Alpaca fake port (0: any)")
    parser.add_argument("--tradier-port", type=int, default=8766, help="Tradier fake port")
    parser.add_argument("--tick", type=float, default=1.0, help="seconds between matchings")
    parser.add_argument("--alpaca-key-id", default="PKFAKEALPACA0000001")
    parser.add_argument("--alpaca-secret", default="fake-alpaca-secret-not-a-real-key")
    parser.add_argument("--tradier-token", default="fake-tradier-token-not-real")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args))


if __name__ == "__main__":
    run()
