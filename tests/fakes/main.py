"""``scripts/fake-brokers``: serve the fakes on localhost until interrupted.

Prints the settings that point the gateway at them and an API key per fake account (Alpaca)
or the OAuth app registration (Schwab: its authorize page signs in a fake customer at once).
A ticker matches resting orders every ``--tick`` seconds, like a market that moves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from tests.fakes.alpaca import FakeAlpaca, serve_asgi
from tests.fakes.schwab import FakeSchwab


async def _tick(fakes: list[FakeAlpaca | FakeSchwab], seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        for fake in fakes:
            await fake.match()


async def main(
    port: int, tick: float, key_id: str, secret: str, schwab_port: int, schwab: dict[str, str]
) -> None:
    fake = FakeAlpaca()
    fake.add_account(key_id=key_id, secret=secret)
    schwab_fake = FakeSchwab()
    schwab_fake.add_app(schwab["client_id"], schwab["client_secret"], schwab["redirect_uri"])
    schwab_fake.add_login()
    schwab_fake.faults.heartbeat_seconds = 10.0
    async with (
        serve_asgi(fake.app, port=port, on_shutdown=fake.release_hung) as url,
        serve_asgi(
            schwab_fake.app, port=schwab_port, on_shutdown=schwab_fake.release_hung
        ) as schwab_url,
    ):
        lines = [
            f"export BROKERAGE_ALPACA_BASE_URL={url}",
            f"export BROKERAGE_ALPACA_DATA_URL={url}",
            "# connect with:",
            '#   curl -X POST localhost:8000/v1/connections -H "$AUTH" '
            "-H 'Content-Type: application/json' \\",
            f'#     -d \'{{"broker": "alpaca", "credentials": {{"api_key_id": "{key_id}", '
            f'"api_secret_key": "{secret}"}}}}\'',
            f"export BROKERAGE_SCHWAB_BASE_URL={schwab_url}",
            f"export BROKERAGE_SCHWAB_CLIENT_ID={schwab['client_id']}",
            f"export BROKERAGE_SCHWAB_CLIENT_SECRET={schwab['client_secret']}",
            f"export BROKERAGE_SCHWAB_REDIRECT_URI={schwab['redirect_uri']}",
            "# Schwab connects through the OAuth flow; the fake's authorize page signs in",
            "# its customer at once and redirects to the redirect URI above.",
        ]
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        ticker = asyncio.create_task(_tick([fake, schwab_fake], tick))
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
    parser.add_argument("--schwab-port", type=int, default=8766, help="Schwab fake port")
    parser.add_argument("--schwab-client-id", default="fake-schwab-app-key")
    parser.add_argument("--schwab-client-secret", default="fake-schwab-app-secret")
    parser.add_argument(
        "--schwab-redirect-uri", default="http://localhost:8000/v1/oauth/schwab/callback"
    )
    args = parser.parse_args()
    schwab = {
        "client_id": args.schwab_client_id,
        "client_secret": args.schwab_client_secret,
        "redirect_uri": args.schwab_redirect_uri,
    }
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            main(
                args.port,
                args.tick,
                args.alpaca_key_id,
                args.alpaca_secret,
                args.schwab_port,
                schwab,
            )
        )


if __name__ == "__main__":
    run()
