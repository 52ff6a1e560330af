"""``scripts/fake-brokers``: serve the fakes on localhost until interrupted.

Prints the settings that point the gateway at them, an API key per fake account, and the
platform's default Alpaca key (a second fake account). A ticker matches resting orders
every ``--tick`` seconds, like a market that moves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from tests.fakes.alpaca import FakeAlpaca, serve_asgi


async def _tick(fake: FakeAlpaca, seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        await fake.match()


async def main(port: int, tick: float, key_id: str, secret: str) -> None:
    fake = FakeAlpaca()
    fake.add_account(key_id=key_id, secret=secret)
    platform = fake.add_account(cash="1000000")
    async with serve_asgi(fake.app, port=port, on_shutdown=fake.release_hung) as url:
        lines = [
            f"export BROKERAGE_ALPACA_BASE_URL={url}",
            f"export BROKERAGE_ALPACA_DATA_URL={url}",
            f"export BROKERAGE_ALPACA_PLATFORM_KEY_ID={platform.key_id}",
            f"export BROKERAGE_ALPACA_PLATFORM_SECRET={platform.secret}",
            "# connect with:",
            '#   curl -X POST localhost:8000/v1/connections -H "$AUTH" '
            "-H 'Content-Type: application/json' \\",
            f'#     -d \'{{"broker": "alpaca", "credentials": {{"api_key_id": "{key_id}", '
            f'"api_secret_key": "{secret}"}}}}\'',
            "# or to the platform's default account: "
            '-d \'{"broker": "alpaca", "options": {"ownership": "platform"}}\'',
        ]
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        ticker = asyncio.create_task(_tick(fake, tick))
        try:
            await asyncio.Event().wait()
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker


def run() -> None:
    parser = argparse.ArgumentParser(description="Serve the broker fakes on localhost.")
    parser.add_argument("--port", type=int, default=8765, help="Alpaca fake port (0: any)")
    parser.add_argument("--tick", type=float, default=1.0, help="seconds between matchings")
    parser.add_argument("--alpaca-key-id", default="PKFAKEALPACA0000001")
    parser.add_argument("--alpaca-secret", default="fake-alpaca-secret-not-a-real-key")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.port, args.tick, args.alpaca_key_id, args.alpaca_secret))


if __name__ == "__main__":
    run()
