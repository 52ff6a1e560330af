"""Settings, read from the environment.

Every secret is a ``SecretStr`` so it never shows up in a repr or a log line. The embedded
default (no environment at all) is SQLite under ``./var/``, the paper broker, a generated
local keyring and a generated development JWT secret; ``app.devsetup`` creates those files.
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

VAR_DIR = Path("var")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BROKERAGE_", extra="ignore", populate_by_name=True, env_ignore_empty=True
    )

    environment: Literal["development", "production", "test"] = "development"
    database_url: str = Field(
        default=f"sqlite+aiosqlite:///./{VAR_DIR}/brokerage.db",
        validation_alias=AliasChoices("DATABASE_URL", "BROKERAGE_DATABASE_URL"),
    )
    # Database connections per instance: at most db_pool_size + db_max_overflow for requests,
    # plus three for streaming (the hub's two and the LISTEN connection). Keep
    # instances x (pool + overflow + 3) below Postgres' max_connections (100 by default). A
    # request that waits db_pool_timeout_seconds for a connection is answered 503
    # ``overloaded`` with Retry-After, never a 5xx from an exhausted pool.
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    db_pool_timeout_seconds: float = Field(default=5.0, gt=0)
    # Of the pool's connections, at most this many (and never more than db_pool_size) take
    # broker rate-limit slots at once (every broker call takes one, app/db/rate_limits.py);
    # more broker calls wait their turn, so they never open connections past the pool.
    db_rate_limit_connections: int = Field(default=4, ge=1)
    # Load shedding at the door: order placements, changes and cancels in flight on one
    # instance beyond this are answered 503 ``overloaded`` with Retry-After before anything
    # is read or written, so past capacity orders are refused cleanly instead of queuing
    # into timeouts.
    max_inflight_orders: int = Field(default=64, ge=1)

    # Auth: HS256 secret (development) or a JWKS URL (production).
    jwt_secret: SecretStr | None = None
    jwks_url: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_algorithms: list[str] = ["RS256", "ES256"]
    dev_secrets_path: Path = VAR_DIR / "dev-secrets.json"

    # Key-encryption keys: a keyring file (development/CI) or a JSON keyring in the env.
    keyring_path: Path = VAR_DIR / "keyring.json"
    keyring_json: SecretStr | None = None

    # The audit chain of live BYOB order actions: an HMAC-SHA256 key (at least 32 bytes).
    # Production must set BROKERAGE_AUDIT_KEY; development generates one in a private file
    # next to the development JWT secret (``audit_key_path``, default ``var/audit-key.json``).
    audit_key: SecretStr | None = None
    audit_key_path: Path | None = None

    # Paper-first gate: completed round trips on OUR paper broker (never a broker's own
    # paper environment) a user needs before a live BYOB order. 0 turns the gate off.
    paper_first_cycles: int = Field(default=3, ge=0)

    # Request limits.
    max_body_bytes: int = 64 * 1024
    idempotency_ttl: timedelta = timedelta(days=7)
    idempotency_lock_timeout: timedelta = timedelta(seconds=90)

    # Options discovery: chains and expirations are kept per account this long (a quote
    # older than this is never served from the cache; 0 turns the cache off).
    option_chain_cache_seconds: float = Field(default=5.0, ge=0, le=300)

    # The paper broker.
    paper_seed: int = 20260522
    paper_tick_seconds: float = 1.0
    paper_default_starting_cash: str = "100000"
    # Benchmark only (scripts/bench/marketdata): a quote step in milliseconds instead of 1 s,
    # and N synthetic equities SYM000.. beside the listed universe. 100 symbols at 50 ms make
    # the 2,000 quote updates per second the benchmark asks for. Both off by default; they
    # change the paper market's prices (fills included), so never set them outside a bench.
    paper_market_step_ms: int | None = Field(default=None, ge=1, le=60_000)
    paper_bench_symbols: int = Field(default=0, ge=0, le=1000)

    def option_lifecycle_interval(self, broker_slug: str) -> timedelta:
        """How long an account rests between two option lifecycle looks at its broker."""
        return timedelta(
            seconds=self.option_lifecycle_poll_seconds_by_broker.get(
                broker_slug, self.option_lifecycle_poll_seconds
            )
        )

    def open_order_poll_interval(self, broker_slug: str, *, streamed: bool) -> timedelta:
        """How long an open order rests between two reconciliation lookups at its broker."""
        if streamed:
            return timedelta(seconds=self.reconcile_open_streamed_seconds)
        return timedelta(
            seconds=self.reconcile_open_polled_seconds_by_broker.get(
                broker_slug, self.reconcile_open_polled_seconds
            )
        )

    # Background work: the paper ticker and reconciliation. Tests switch it off and drive
    # the clock themselves.
    background_tasks: bool = True
    # Once started, move everything alive (modules, schemas, metadata: most of the heap) out
    # of the cyclic collector's reach (``gc.freeze``): a full collection then scans what
    # requests and streams allocate, not the whole process. Measured with the market-data
    # bench: full collections of the gateway took up to 216 ms, stalling every stream.
    # Tests turn it off (they start many apps in one process).
    gc_freeze_after_startup: bool = True
    reconcile_interval_seconds: float = 5.0
    reconcile_unknown_after_seconds: float = 2.0
    # How often one open order is looked up at its broker. Where a stream reports order
    # changes the lookup only catches an update the stream lost (it also catches up by
    # REST after every gap), so it is rare; elsewhere it is how fills are learnt. Every
    # lookup spends the credential's rate budget, which the user's own orders share.
    reconcile_open_streamed_seconds: float = Field(default=60.0, gt=0)
    reconcile_open_polled_seconds: float = Field(default=5.0, gt=0)
    # Brokers whose budget does not stretch to a 5 s poll: SnapTrade's 250 requests/min are
    # shared by every user of the deployment (snaptrade_requests_per_minute below);
    # Robinhood's 100/min per account would be spent by 8 open orders at 5 s.
    reconcile_open_polled_seconds_by_broker: dict[str, float] = Field(
        default_factory=lambda: {"snaptrade": 30.0, "robinhood": 15.0}
    )
    # Option lifecycle events (app/services/lifecycle.py): how often one account's
    # positions (and, while it holds options, its recent transactions) are read for the
    # expirations, exercises and assignments its broker reports, and how far back. Tradier
    # and Plaid update their history nightly: an hourly look is plenty there.
    option_lifecycle_poll_seconds: float = Field(default=300.0, gt=0)
    option_lifecycle_poll_seconds_by_broker: dict[str, float] = Field(
        default_factory=lambda: {"tradier": 3600.0, "plaid": 3600.0, "snaptrade": 900.0}
    )
    option_lifecycle_lookback_days: int = Field(default=7, ge=1, le=90)
    # Apply migrations at start-up; defaults on for the embedded SQLite mode only.
    auto_migrate_setting: bool | None = Field(default=None, alias="BROKERAGE_AUTO_MIGRATE")

    # Live brokers (Tier A). Base URLs point at the real hosts; tests and scripts/fake-brokers
    # point them at the fakes (API.md: BROKERAGE_<SLUG>_BASE_URL). Paper trading never uses a
    # broker's own paper host: it goes through our paper broker.
    alpaca_trading_url: str = Field(
        default="https://api.alpaca.markets",
        validation_alias=AliasChoices(
            "BROKERAGE_ALPACA_BASE_URL", "BROKERAGE_ALPACA_TRADING_URL", "alpaca_trading_url"
        ),
    )
    alpaca_data_url: str = "https://data.alpaca.markets"
    # The platform's own default Alpaca account (ownership ``platform``): its Trading API key
    # comes from the environment, never from a user. Both unset: no platform connections.
    alpaca_platform_key_id: SecretStr | None = None
    alpaca_platform_secret: SecretStr | None = None
    # The trade_updates WebSocket; derived from the trading URL (wss://<host>/stream) if unset.
    alpaca_stream_url: str | None = None
    # Alpaca: 200 requests per minute per API key (docs.alpaca.markets, "Rate limit").
    alpaca_requests_per_minute: int = 200
    # The market-data WebSocket host (https://docs.alpaca.markets/docs/streaming-market-data):
    # derived from the data URL if unset (https://data.X -> wss://stream.data.X). The stock
    # feed (``iex`` free, ``sip`` paid) and the plan's symbol cap per connection (IEX: 30
    # trade+quote channels; None: no cap, SIP). Silence past the idle timeout reconnects.
    alpaca_market_stream_url: str | None = None
    alpaca_stock_feed: str = "iex"
    alpaca_option_feed: str = "indicative"  # or "opra" (paid)
    alpaca_stream_max_symbols: int | None = 30
    alpaca_stream_idle_seconds: float = 120.0
    # Tradier (https://docs.tradier.com): REST base without the /v1 prefix (the adapter's paths
    # carry it, as the docs write them). Sandbox: https://sandbox.tradier.com.
    tradier_base_url: str = Field(
        default="https://api.tradier.com",
        validation_alias=AliasChoices("BROKERAGE_TRADIER_BASE_URL", "tradier_base_url"),
    )
    # The account-events WebSocket; derived from the base URL if unset (api. -> wss://ws.,
    # sandbox. -> wss://sandbox-ws., anything else -> ws(s)://<same host>/v1/accounts/events).
    tradier_stream_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("BROKERAGE_TRADIER_STREAM_URL", "tradier_stream_url"),
    )
    # Per access token, per minute (https://docs.tradier.com/docs/rate-limiting): standard
    # (/accounts, /user, order reads) 120, market data (/markets) 120, trading 60 in
    # production; 60 for each in the sandbox. None: the published figure for the base URL.
    tradier_standard_per_minute: int | None = None
    tradier_market_data_per_minute: int | None = None
    tradier_trading_per_minute: int | None = None
    # tastytrade (Tier A, OAuth refresh token). REST and the account streamer are separate
    # hosts (sandbox: https://api.cert.tastyworks.com, wss://streamer.cert.tastyworks.com).
    tastytrade_base_url: str = "https://api.tastyworks.com"
    tastytrade_streamer_url: str = "wss://streamer.tastyworks.com"
    # tastytrade publishes no numeric limit ("reasonable thresholds", 429 without headers:
    # https://developer.tastytrade.com/docs/guides/rate-limits-and-backoff/); this pace per
    # credential stays well below what an interactive client sends.
    tastytrade_requests_per_minute: int = 120
    tastytrade_burst: int = 20
    # ``Accept-Version`` (YYYYMMDD) pins the API version; unset sends none (the sandbox
    # refuses the header, tastyware/tastytrade ``Session``).
    tastytrade_api_version: str | None = None
    # The account streamer: heartbeat period, and how long a connection may stay silent
    # (no notification and no heartbeat answer) before it is restarted.
    tastytrade_heartbeat_seconds: float = 20.0
    tastytrade_stream_idle_seconds: float = 65.0
    # Charles Schwab Trader API (Tier A, OAuth2). One host serves the OAuth endpoints, the
    # trader API and market data (https://developer.schwab.com/products/trader-api--individual).
    # Offered only when the app's client id and secret are set (``schwab_configured``).
    schwab_base_url: str = "https://api.schwabapi.com"
    # The account-activity socket; None: the ``streamerSocketUrl`` Schwab advertises in
    # ``GET /trader/v1/userPreference`` (a test or dev setup points this at a fake's socket).
    schwab_streamer_url: str | None = None
    schwab_client_id: str | None = None
    schwab_client_secret: SecretStr | None = None
    # The exact callback registered with the Schwab app (Schwab compares it verbatim).
    schwab_redirect_uri: str | None = None
    # Non-order requests: 120 per minute; order placement/replace/cancel: 0-120 per minute
    # per account, chosen at app registration (Schwab/TDA migration guide; schwab-py
    # docs/getting-started.rst recommends 120).
    schwab_requests_per_minute: int = 120
    schwab_order_requests_per_minute: int = 120
    # Plaid Investments (Tier C, read-only import): https://plaid.com/docs/api/ . The client
    # id and secret go in every request's JSON body; both unset: Plaid is not offered.
    # BROKERAGE_PLAID_ENV picks the host (sandbox / production); BROKERAGE_PLAID_BASE_URL
    # overrides it (tests and scripts/fake-brokers point it at the fake).
    plaid_client_id: SecretStr | None = None
    plaid_secret: SecretStr | None = None
    plaid_env: Literal["sandbox", "production"] = "production"
    plaid_base_url: str | None = None
    # Where Plaid posts webhooks: this deployment's public URL of POST /v1/webhooks/plaid.
    # Unset: link tokens carry no webhook and Linked data refreshes on read only.
    plaid_webhook_url: str | None = None
    # Shown by Plaid Link to the user ("<client_name> uses Plaid to connect...").
    plaid_client_name: str = "Brokerage Gateway"
    plaid_country_codes: list[str] = ["US"]
    plaid_language: str = "en"
    # Per Item (one access token): Plaid allows 15 /accounts/get and 15
    # /investments/holdings/get a minute per Item in production
    # (https://plaid.com/docs/errors/rate-limit-exceeded/); one pace for all calls of an Item.
    plaid_requests_per_minute: int = 30
    plaid_burst: int = 10
    # A webhook whose JWT was issued longer ago than this is refused (Plaid's docs: 5 min).
    plaid_webhook_max_age_seconds: int = 300
    # Coinbase Advanced Trade (Tier A, CDP API key). REST base without the /api/v3/brokerage
    # prefix (the adapter's paths carry it, as the docs write them); the user-order
    # WebSocket is its own host (https://docs.cdp.coinbase.com/coinbase-app/
    # advanced-trade-apis/websocket/websocket-endpoints).
    coinbase_base_url: str = Field(
        default="https://api.coinbase.com",
        validation_alias=AliasChoices("BROKERAGE_COINBASE_BASE_URL", "coinbase_base_url"),
    )
    coinbase_ws_url: str = Field(
        default="wss://advanced-trade-ws-user.coinbase.com",
        validation_alias=AliasChoices("BROKERAGE_COINBASE_WS_URL", "coinbase_ws_url"),
    )
    # The market-data WebSocket (ticker, market_trades, candles) is another host again.
    coinbase_market_ws_url: str = Field(
        default="wss://advanced-trade-ws.coinbase.com",
        validation_alias=AliasChoices("BROKERAGE_COINBASE_MARKET_WS_URL", "coinbase_market_ws_url"),
    )
    # Private REST endpoints: 30 requests per second per user (Advanced Trade rate-limit
    # page as cited by api-evangelist/coinbase rate-limits; the same figure in the SDKs of
    # hummingbot and JKorf/Coinbase.Net).
    coinbase_requests_per_second: float = 30.0
    # The user channel: heartbeats arrive every second once subscribed; a connection that
    # says nothing for this long is restarted (and caught up over REST).
    coinbase_stream_idle_seconds: float = 15.0
    # Robinhood Crypto Trading API (Tier A, API key + Ed25519 signature; users bring their own
    # key, so nothing else is configured). Production only: Robinhood has no sandbox.
    robinhood_base_url: str = Field(
        default="https://trading.robinhood.com",
        validation_alias=AliasChoices("BROKERAGE_ROBINHOOD_BASE_URL", "robinhood_base_url"),
    )
    # "Requests per minute per user account: 100; in bursts: 300" (token bucket,
    # https://docs.robinhood.com/crypto/trading/#section/Rate-Limiting).
    robinhood_requests_per_minute: int = 100
    robinhood_burst: int = 300
    # Webull OpenAPI (Tier A, HMAC-signed; each user registers their own app and brings its
    # App Key/Secret). Test environment: http://us-openapi-alb.uat.webullbroker.com
    # (https://developer.webull.com/apis/docs/trade-api/trade).
    webull_base_url: str = Field(
        default="https://api.webull.com",
        validation_alias=AliasChoices("BROKERAGE_WEBULL_BASE_URL", "webull_base_url"),
    )
    # The brokers' own paper/sandbox environments, per connection (``options.environment``
    # of POST /v1/connections; app/brokers/environments.py). Each has its own hosts; a
    # stream URL left unset is derived from its REST host as for live.
    # Alpaca paper: https://docs.alpaca.markets/docs/paper-trading (paper-api host, its
    # trade_updates stream at wss://paper-api.alpaca.markets/stream).
    alpaca_paper_trading_url: str = Field(
        default="https://paper-api.alpaca.markets",
        validation_alias=AliasChoices(
            "BROKERAGE_ALPACA_PAPER_BASE_URL", "alpaca_paper_trading_url"
        ),
    )
    alpaca_paper_stream_url: str | None = None
    # Tradier sandbox: https://docs.tradier.com/docs/getting-started ("sandbox.tradier.com";
    # its account stream is wss://sandbox-ws.tradier.com, derived when unset).
    tradier_sandbox_base_url: str = Field(
        default="https://sandbox.tradier.com",
        validation_alias=AliasChoices(
            "BROKERAGE_TRADIER_SANDBOX_BASE_URL", "tradier_sandbox_base_url"
        ),
    )
    tradier_sandbox_stream_url: str | None = None
    # tastytrade sandbox ("cert"): https://developer.tastytrade.com/sandbox/
    tastytrade_sandbox_base_url: str = Field(
        default="https://api.cert.tastyworks.com",
        validation_alias=AliasChoices(
            "BROKERAGE_TASTYTRADE_SANDBOX_BASE_URL", "tastytrade_sandbox_base_url"
        ),
    )
    tastytrade_sandbox_streamer_url: str = "wss://streamer.cert.tastyworks.com"
    # Webull's test environment (UAT): https://developer.webull.com/apis/docs/trade-api/trade
    # ("Test Environment: http://us-openapi-alb.uat.webullbroker.com/"; every call is over
    # HTTPS, https://developer.webull.com/apis/docs/about-open-api/).
    webull_test_base_url: str = Field(
        default="https://us-openapi-alb.uat.webullbroker.com",
        validation_alias=AliasChoices("BROKERAGE_WEBULL_TEST_BASE_URL", "webull_test_base_url"),
    )
    # Webull "Rate Limits" (https://developer.webull.com/apis/llms.txt): order queries 2 per
    # 2 seconds per App Key; every read but the token calls is paced by it (a bucket of two).
    # Tests against the fake raise it: the fake does not enforce it and a contract run would
    # otherwise wait on it for seconds.
    webull_queries_per_second: float = Field(default=1.0, gt=0)
    # How often connections waiting for the user (Webull's access token, confirmed in the
    # Webull app) are checked; a GET of such a connection checks it too, at most this often.
    credential_confirm_interval_seconds: float = 10.0
    # Activated credentials that expire (Webull's 15-day access token) are renewed at the
    # broker by the same background task once their expiry is this close (default 2 days).
    credential_renew_ahead_seconds: float = Field(default=2 * 24 * 3600, gt=0)
    # Interactive Brokers through the user's Client Portal Gateway (Tier A, ``gateway``): the
    # connection stores the gateway's URL, which this service then calls, so it must be on
    # this allow-list of hosts (server-side request forgery). The gateway's self-signed
    # certificate: give its CA bundle, or (local development only) turn verification off.
    ibkr_gateway_hosts: list[str] = ["localhost", "127.0.0.1", "::1"]
    ibkr_gateway_verify_tls: bool = True
    ibkr_gateway_ca_bundle: str | None = None
    # Order questions (``messageIds`` such as "o163", the price-constraint warning) this
    # deployment confirms on the user's behalf; any other question rejects the order.
    ibkr_auto_confirm: list[str] = []
    # IBKR Campus "Pacing Limitations": 10 requests per second per session; one per
    # 5 seconds on /iserver/account/orders, /iserver/account/trades, /portfolio/accounts;
    # a breach is a 429 and a penalty box. Paced below them, with room for network jitter:
    # a bucket of one at 8 per second never puts 10 in any second.
    ibkr_requests_per_second: float = 8.0
    ibkr_slow_endpoint_seconds: float = 5.5
    # SnapTrade (Tier B aggregator, https://docs.snaptrade.com): the partner API key from the
    # SnapTrade dashboard (clientId + consumerKey). Unset: SnapTrade is not offered. The
    # base URL is the spec's server (root paths); the legacy https://api.snaptrade.com/api/v1
    # works too (requests are signed over whatever path is sent).
    snaptrade_base_url: str = "https://api.snaptrade.com"
    snaptrade_client_id: str | None = None
    snaptrade_consumer_key: SecretStr | None = None
    # 250 requests per minute per clientId, across every user and endpoint
    # (https://docs.snaptrade.com/docs/rate-limiting); one shared bucket paces them all.
    snaptrade_requests_per_minute: int = 250
    # ``customRedirect`` of every Connection Portal login: where SnapTrade sends the browser
    # back (with ?status=SUCCESS&connection_id=...). Unset: the dashboard's redirect URI.
    snaptrade_redirect_url: str | None = None
    # Webhooks older than this (their eventTimestamp) are refused as replays
    # (https://docs.snaptrade.com/docs/webhooks, "Verifying Webhook Authenticity").
    snaptrade_webhook_max_age_seconds: float = 300.0
    broker_connect_timeout_seconds: float = 5.0
    # Connections one instance may hold open to one broker host, every one of them kept
    # alive between calls (app/brokers/http.py HttpPool).
    broker_http_max_connections: int = Field(default=100, ge=1)
    # How often the upstream stream supervisor looks for connections to stream.
    upstream_sync_seconds: float = 30.0
    broker_read_timeout_seconds: float = 10.0

    # Key rotation: how often each instance looks for tokens under an old key version (the
    # re-wrap then runs on one instance at a time), the batch size, and a pause between
    # batches to cap the load on the database and the KMS.
    rewrap_interval_seconds: float = 60.0
    rewrap_batch_size: int = 500
    rewrap_pause_seconds: float = 0.0
    # How often the Tier A rotation sweep looks for credentials past ``rotate_after``.
    rotation_sweep_seconds: float = 3600.0
    # GET /v1/portfolio reads every account at once; one account's read may take this long
    # before the answer goes without it (the read is cancelled, the account is reported as
    # timed out with its last good data). Per broker slug overrides, e.g.
    # BROKERAGE_PORTFOLIO_BROKER_TIMEOUTS='{"schwab": 2.5}'.
    portfolio_broker_timeout_seconds: float = Field(default=1.0, gt=0)
    portfolio_broker_timeouts: dict[str, Annotated[float, Field(gt=0)]] = {}
    # After an account's read timed out or its broker was unavailable, later portfolio
    # answers skip it for at least this long (reporting its last good data) while one
    # background read per period checks whether the broker is back.
    portfolio_skip_seconds: float = Field(default=30.0, ge=0)
    # OAuth brokers (the connect flow and the token lifecycle). Each OAuth broker adds its
    # own client id / secret / redirect URI settings, named in its ``OAuthSpec``.
    # Frontend URLs ``return_to`` may point at: absolute URLs, matched by scheme, host and
    # port exactly and by path prefix at a segment boundary. Empty: no flow can start.
    oauth_return_to_allowlist: list[str] = []
    # Where a callback whose state is unknown sends the browser (``?error=invalid_state``);
    # unset, such a callback answers 400 problem+json instead.
    oauth_failure_url: str | None = None
    oauth_state_ttl_seconds: int = 600
    # Pending (unused, unexpired) authorizations one user may hold at once.
    oauth_max_pending_states: int = 20
    # The refresher: how often it looks, how far ahead of expiry it refreshes, and when a
    # refresh token counts as expiring (``connection.expiring``).
    token_refresh_interval_seconds: float = 60.0
    token_refresh_ahead_seconds: float = 300.0
    # An adapter built with an access token this close to expiry refreshes it first.
    token_refresh_leeway_seconds: float = 60.0
    # Refreshes one instance runs at once in a background pass (Postgres; SQLite: one).
    token_refresh_concurrency: int = 4
    # Opened credentials kept in memory per connection (app/security/credential_cache.py):
    # how long one is kept (0: not at all) and for how many connections at most.
    credential_cache_seconds: float = Field(default=60.0, ge=0)
    credential_cache_size: int = Field(default=10_000, ge=0)
    connection_expiring_window: timedelta = timedelta(days=1)

    # Browsers on these origins (exact ``scheme://host[:port]``, JSON list) may call the API
    # with credentials (CORS) and open ``/v1/stream``. Empty: no CORS headers at all (a
    # same-origin deployment) and WebSocket upgrades are not checked.
    cors_origins: list[str] = []
    cors_max_age_seconds: int = Field(default=600, ge=0)

    # Who may read ``/metrics``: ``public`` (anyone who reaches the API port; the default,
    # for a deployment whose proxy does not route /metrics), ``token`` (only with
    # ``Authorization: Bearer <metrics_token>``, else 401), or ``port`` (not on the API port:
    # a second listener on ``metrics_host``:``metrics_port`` of each process serves it).
    metrics_exposure: Literal["public", "token", "port"] = "public"
    metrics_token: SecretStr | None = None
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9100, ge=0, le=65535)

    # The HTTP server (uvicorn with httptools, app/server.py): an idle keep-alive connection is
    # closed after ``http_keep_alive_timeout_seconds``; a connection must deliver a whole
    # request head (line and headers, at most ``http_max_header_bytes``) within
    # ``http_header_timeout_seconds`` of connecting or of its first byte, and a body
    # must keep arriving: each read waits at most ``http_body_timeout_seconds`` (then 408).
    # These bound what one slow client holds; production still needs the reverse proxy of
    # README "Operations" in front (buffering, connection limits, TLS).
    http_keep_alive_timeout_seconds: int = Field(default=5, ge=1)
    http_header_timeout_seconds: float = Field(default=10.0, gt=0)
    http_body_timeout_seconds: float = Field(default=30.0, gt=0)
    http_max_header_bytes: int = Field(default=16 * 1024, ge=1024)

    # This process's claims on Idempotency-Keys carry its owner id; when the owner is gone
    # (its process died), the keys it held in flight are settled by the next instance that
    # starts (or the reconciler of a running one) instead of waiting for the 2-minute
    # give-up. Such an order the broker does not know is declared not placed once it is this
    # old; unset, the longest one broker call can last (pool + connect + write + read
    # timeouts, app/brokers/http.py ``timeouts_from``, plus 1 s: 31 s by default), so even a
    # sender still alive could no longer be mid-call.
    orphan_give_up_seconds: float | None = Field(default=None, ge=0)

    log_level: str = "INFO"
    log_json: bool = True

    @model_validator(mode="after")
    def _metrics_token_given(self) -> Settings:
        if self.metrics_exposure == "token" and (
            self.metrics_token is None or len(self.metrics_token.get_secret_value()) < 16
        ):
            raise ValueError("BROKERAGE_METRICS_EXPOSURE=token needs a BROKERAGE_METRICS_TOKEN")
        return self

    @field_validator("cors_origins")
    @classmethod
    def _exact_origins(cls, origins: list[str]) -> list[str]:
        """Each entry is one exact origin: a browser's ``Origin`` header is compared verbatim,
        and a wildcard with credentials would let any site act as the signed-in user."""
        cleaned = []
        for origin in origins:
            parts = urlsplit(origin)
            if (
                parts.scheme not in ("http", "https")
                or not parts.hostname
                or "*" in origin
                or parts.path not in ("", "/")
                or parts.query
                or parts.fragment
                or parts.username is not None
            ):
                raise ValueError(f"not an origin (scheme://host[:port]): {origin!r}")
            cleaned.append(origin.rstrip("/"))
        return cleaned

    @property
    def auto_migrate(self) -> bool:
        if self.auto_migrate_setting is not None:
            return self.auto_migrate_setting
        return self.is_sqlite

    def portfolio_timeout_for(self, broker_slug: str) -> float:
        """Seconds one account of this broker may take in GET /v1/portfolio."""
        return self.portfolio_broker_timeouts.get(
            broker_slug, self.portfolio_broker_timeout_seconds
        )

    @property
    def orphan_give_up(self) -> timedelta:
        """How old an orphaned order the broker does not know must be to count as not placed."""
        if self.orphan_give_up_seconds is not None:
            return timedelta(seconds=self.orphan_give_up_seconds)
        return timedelta(
            seconds=2 * self.broker_connect_timeout_seconds
            + 2 * self.broker_read_timeout_seconds
            + 1
        )

    @property
    def schwab_configured(self) -> bool:
        """Schwab is offered only with the app's client id and secret."""
        secret = self.schwab_client_secret
        return bool(self.schwab_client_id and secret is not None and secret.get_secret_value())

    @property
    def plaid_url(self) -> str:
        """The Plaid API host: the override, else the environment's documented host."""
        if self.plaid_base_url:
            return self.plaid_base_url
        return f"https://{self.plaid_env}.plaid.com"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
