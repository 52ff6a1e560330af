"""``scripts/fake-brokers``: serve the fakes on localhost until interrupted.

Prints the settings that point the gateway at them, a credential per fake account (for
Coinbase a CDP key name and a fresh EC private key, as JSON), the platform's default Alpaca key
(a second fake Alpaca account), a Robinhood crypto API key and its private key (generated per
run), a Webull App Key/Secret, the URL of a logged-in fake IBKR Client Portal Gateway, and
Schwab's OAuth app registration (its authorize page signs in a fake customer at once). A
ticker matches resting orders every ``--tick`` seconds, like a market that moves. The
SnapTrade fake sends its webhooks to ``--snaptrade-webhook-url`` (the gateway's
``/v1/webhooks/snaptrade``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable

from tests.fakes.alpaca import FakeAlpaca
from tests.fakes.coinbase import FakeCoinbase
from tests.fakes.ibkr import FakeIbkrGateway
from tests.fakes.ibkr.server import API as IBKR_API
from tests.fakes.plaid import FakePlaid
from tests.fakes.robinhood import FakeRobinhood
from tests.fakes.runner import serve_asgi
from tests.fakes.schwab import FakeSchwab
from tests.fakes.snaptrade import FakeSnapTrade
from tests.fakes.tastytrade import FakeTastytrade
from tests.fakes.tradier import FakeTradier
from tests.fakes.webull import FakeWebull

CONNECT = (
    '#   curl -X POST localhost:8000/v1/connections -H "$AUTH" '
    "-H 'Content-Type: application/json' \\"
)


async def _tick(match: Callable[[], Awaitable[int]], seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        await match()


async def main(args: argparse.Namespace) -> None:
    alpaca = FakeAlpaca()
    alpaca.add_account(key_id=args.alpaca_key_id, secret=args.alpaca_secret)
    platform = alpaca.add_account(cash="1000000")
    tradier = FakeTradier()
    tradier.add_user(token=args.tradier_token)
    tastytrade = FakeTastytrade()
    tastytrade.add_customer(
        client_secret=args.tastytrade_client_secret,
        refresh_token=args.tastytrade_refresh_token,
    )
    schwab = FakeSchwab()
    schwab.add_app(args.schwab_client_id, args.schwab_client_secret, args.schwab_redirect_uri)
    schwab.add_login()
    schwab.faults.heartbeat_seconds = 10.0
    plaid = FakePlaid(client_id=args.plaid_client_id, secret=args.plaid_secret)
    plaid_login = plaid.add_login()
    plaid.hold(plaid_login.accounts[0], "AAPL", "10", "190.25", cost_basis="1500.00")
    coinbase = FakeCoinbase()
    coinbase_user = coinbase.add_user(key_name=args.coinbase_key_name)
    robinhood = FakeRobinhood()
    robinhood_account = robinhood.add_account()
    webull = FakeWebull()
    # Without two-factor authentication the token is usable at once (nobody can enter an
    # SMS code into the real Webull app for a fake); tests cover the PENDING flow.
    webull_app = webull.add_app(two_factor=False)
    ibkr = FakeIbkrGateway()  # logged in, one paper account
    ibkr.add_account()
    snaptrade = FakeSnapTrade(
        client_id=args.snaptrade_client_id,
        consumer_key=args.snaptrade_consumer_key,
        webhook_url=args.snaptrade_webhook_url or None,
    )
    async with (
        serve_asgi(alpaca.app, port=args.port, on_shutdown=alpaca.release_hung) as alpaca_url,
        serve_asgi(plaid.app, port=args.plaid_port, on_shutdown=plaid.release_hung) as plaid_url,
        serve_asgi(
            tradier.app, port=args.tradier_port, on_shutdown=tradier.release_hung
        ) as tradier_url,
        serve_asgi(
            tastytrade.app, port=args.tastytrade_port, on_shutdown=tastytrade.release_hung
        ) as tt_url,
        serve_asgi(
            schwab.app, port=args.schwab_port, on_shutdown=schwab.release_hung
        ) as schwab_url,
        serve_asgi(
            coinbase.app, port=args.coinbase_port, on_shutdown=coinbase.release_hung
        ) as cb_url,
        serve_asgi(
            robinhood.app, port=args.robinhood_port, on_shutdown=robinhood.release_hung
        ) as robinhood_url,
        serve_asgi(
            webull.app, port=args.webull_port, on_shutdown=webull.release_hung
        ) as webull_url,
        serve_asgi(ibkr.app, port=args.ibkr_port, on_shutdown=ibkr.release_hung) as ibkr_url,
        serve_asgi(
            snaptrade.app, port=args.snaptrade_port, on_shutdown=snaptrade.release_hung
        ) as snaptrade_url,
    ):
        coinbase_credentials = json.dumps(
            {
                "api_key_name": coinbase_user.key_name,
                "private_key": coinbase_user.private_key,
            }
        )
        lines = [
            f"export BROKERAGE_ALPACA_BASE_URL={alpaca_url}",
            f"export BROKERAGE_ALPACA_DATA_URL={alpaca_url}",
            f"export BROKERAGE_ALPACA_PLATFORM_KEY_ID={platform.key_id}",
            f"export BROKERAGE_ALPACA_PLATFORM_SECRET={platform.secret}",
            f"export BROKERAGE_TRADIER_BASE_URL={tradier_url}",
            f"export BROKERAGE_TASTYTRADE_BASE_URL={tt_url}",
            f"export BROKERAGE_TASTYTRADE_STREAMER_URL={'ws' + tt_url.removeprefix('http')}",
            f"export BROKERAGE_PLAID_BASE_URL={plaid_url}",
            f"export BROKERAGE_PLAID_CLIENT_ID={plaid.client_id}",
            f"export BROKERAGE_PLAID_SECRET={plaid.secret}",
            f"export BROKERAGE_COINBASE_BASE_URL={cb_url}",
            f"export BROKERAGE_COINBASE_WS_URL={'ws' + cb_url.removeprefix('http')}",
            f"export BROKERAGE_COINBASE_MARKET_WS_URL={'ws' + cb_url.removeprefix('http')}/market",
            f"export BROKERAGE_SNAPTRADE_BASE_URL={snaptrade_url}",
            f"export BROKERAGE_SNAPTRADE_CLIENT_ID={snaptrade.client_id}",
            f"export BROKERAGE_SNAPTRADE_CONSUMER_KEY={snaptrade.consumer_key}",
            "# connect with:",
            CONNECT,
            f'#     -d \'{{"broker": "alpaca", "credentials": {{"api_key_id": '
            f'"{args.alpaca_key_id}", "api_secret_key": "{args.alpaca_secret}"}}}}\'',
            CONNECT,
            f'#     -d \'{{"broker": "tradier", "credentials": {{"access_token": '
            f'"{args.tradier_token}"}}}}\'',
            CONNECT,
            f'#     -d \'{{"broker": "tastytrade", "credentials": {{"client_secret": '
            f'"{args.tastytrade_client_secret}", "refresh_token": '
            f'"{args.tastytrade_refresh_token}"}}}}\'',
            "# Plaid (Linked, read-only): POST /v1/plaid/link-token, then exchange a sandbox",
            "# public token for the fake's First Platypus Bank login:",
            '#   curl -X POST localhost:8000/v1/plaid/exchange -H "$AUTH" '
            "-H 'Content-Type: application/json' \\",
            f'#     -d \'{{"public_token": "{plaid.public_token(plaid_login)}"}}\'',
            "#   (more public tokens: POST <plaid url>/sandbox/public_token/create)",
            CONNECT,
            f'#     -d \'{{"broker": "coinbase", "credentials": {coinbase_credentials}}}\'',
            CONNECT,
            '#     -d \'{"broker": "snaptrade", "options": {"brokerage": "SCHWAB"}}\'',
            "#   then open the answer's portal.url and press Connect",
            "# or to the platform's default Alpaca account: "
            '-d \'{"broker": "alpaca", "options": {"ownership": "platform"}}\'',
            f"export BROKERAGE_SCHWAB_BASE_URL={schwab_url}",
            # The fake advertises wss:// as Schwab does; its socket is plain ws://.
            f"export BROKERAGE_SCHWAB_STREAMER_URL={schwab_url.replace('http', 'ws', 1)}/ws",
            f"export BROKERAGE_SCHWAB_CLIENT_ID={args.schwab_client_id}",
            f"export BROKERAGE_SCHWAB_CLIENT_SECRET={args.schwab_client_secret}",
            f"export BROKERAGE_SCHWAB_REDIRECT_URI={args.schwab_redirect_uri}",
            "# Schwab connects through the OAuth flow; the fake's authorize page signs in",
            "# its customer at once and redirects to the redirect URI above.",
            f"export BROKERAGE_ROBINHOOD_BASE_URL={robinhood_url}",
            "# Robinhood crypto (a fresh key pair per run; trade BTC-USD or ETH-USD, gtc):",
            CONNECT,
            f'#     -d \'{{"broker": "robinhood", "credentials": {{"api_key": '
            f'"{robinhood_account.api_key}", "private_key": '
            f'"{robinhood_account.private_key_b64}"}}}}\'',
            f"export BROKERAGE_WEBULL_BASE_URL={webull_url}",
            "# Webull (the fake's app has no two-factor authentication: its token is active):",
            CONNECT,
            f'#     -d \'{{"broker": "webull", "credentials": {{"app_key": '
            f'"{webull_app.app_key}", "app_secret": "{webull_app.app_secret}"}}}}\'',
            "# Interactive Brokers: the fake Client Portal Gateway, already logged in:",
            CONNECT,
            f'#     -d \'{{"broker": "ibkr", "credentials": {{"base_url": '
            f'"{ibkr_url}{IBKR_API}"}}}}\'',
        ]
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        tickers = [
            asyncio.create_task(_tick(fake.match, args.tick))
            for fake in (
                alpaca,
                tradier,
                tastytrade,
                schwab,
                coinbase,
                robinhood,
                webull,
                ibkr,
                snaptrade,
            )
        ]
        # Market-data streams follow the clock (tests/fakes/{alpaca,schwab}/market_stream.py).
        tickers += [asyncio.create_task(f.market.run()) for f in (alpaca, schwab)]
        try:
            await asyncio.Event().wait()
        finally:
            for ticker in tickers:
                ticker.cancel()
            await asyncio.gather(*tickers, return_exceptions=True)


def any_ports() -> list[str]:
    """Arguments that put every fake on a port the OS picks (``--<name>-port 0`` for each):
    several copies can then run at once, as the tests' parallel processes start them. A
    port left at its default (8765...) would collide between them."""
    defaults = vars(_parser().parse_args([]))
    ports = [name for name in defaults if name == "port" or name.endswith("_port")]
    return [arg for name in ports for arg in ("--" + name.replace("_", "-"), "0")]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Serve the broker fakes on localhost.")
    parser.add_argument("--port", type=int, default=8765, help="Alpaca fake port (0: any)")
    parser.add_argument("--tradier-port", type=int, default=8766, help="Tradier fake port")
    parser.add_argument("--tastytrade-port", type=int, default=8767, help="tastytrade fake port")
    parser.add_argument("--snaptrade-port", type=int, default=8769, help="SnapTrade fake port")
    parser.add_argument("--plaid-port", type=int, default=8770, help="Plaid fake port")
    parser.add_argument("--coinbase-port", type=int, default=8771, help="Coinbase fake port")
    parser.add_argument("--tick", type=float, default=1.0, help="seconds between matchings")
    parser.add_argument("--alpaca-key-id", default="PKFAKEALPACA0000001")
    parser.add_argument("--alpaca-secret", default="fake-alpaca-secret-not-a-real-key")
    parser.add_argument("--tradier-token", default="fake-tradier-token-not-real")
    parser.add_argument("--tastytrade-client-secret", default="fake-tastytrade-client-secret")
    parser.add_argument("--tastytrade-refresh-token", default="fake-tastytrade-refresh-token")
    parser.add_argument("--schwab-port", type=int, default=8768, help="Schwab fake port")
    parser.add_argument("--schwab-client-id", default="fake-schwab-app-key")
    parser.add_argument("--schwab-client-secret", default="fake-schwab-app-secret")
    parser.add_argument(
        "--schwab-redirect-uri", default="http://localhost:8000/v1/oauth/schwab/callback"
    )
    parser.add_argument("--plaid-client-id", default="fakeplaidclientid0000001")
    parser.add_argument("--plaid-secret", default="fake-plaid-secret-not-real")
    parser.add_argument(
        "--coinbase-key-name",
        default="organizations/fake-org/apiKeys/fake-coinbase-key",
        help="the fake CDP key's name (its EC private key is made fresh each run)",
    )
    parser.add_argument("--robinhood-port", type=int, default=8772, help="Robinhood fake port")
    parser.add_argument("--webull-port", type=int, default=8773, help="Webull fake port")
    parser.add_argument("--ibkr-port", type=int, default=8774, help="IBKR gateway fake port")
    parser.add_argument("--snaptrade-client-id", default="BGWFAKE")
    parser.add_argument("--snaptrade-consumer-key", default="fake-snaptrade-consumer-key-not-real")
    parser.add_argument(
        "--snaptrade-webhook-url",
        default="http://127.0.0.1:8000/v1/webhooks/snaptrade",
        help="where the SnapTrade fake sends its webhooks ('' for nowhere)",
    )
    return parser


def run() -> None:
    args = _parser().parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args))


if __name__ == "__main__":
    run()
