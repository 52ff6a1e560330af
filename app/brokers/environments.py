"""The brokers' own paper and sandbox environments, chosen per connection (ISSUE 15 item 5).

``POST /v1/connections`` takes ``options.environment``: ``live`` (the default) or the
broker's own name for its practice environment where it has one (Alpaca ``paper``, Tradier
and tastytrade ``sandbox``, Webull ``test``). A connection keeps its environment for life;
its adapters are built with that environment's settings (``settings_for``: the same
``Settings`` with the broker's hosts swapped for the environment's), so its REST calls,
streams and published rate limits (Tradier's sandbox figures follow from its host) are the
environment's own, and the shared HTTP pool keeps its rate buckets apart
(``HttpPool.for_environment``).

Not offered: Coinbase's Advanced Trade sandbox is static (canned answers, no
authentication, no WebSocket: https://docs.cdp.coinbase.com/coinbase-app/advanced-trade-apis/
sandbox), so it holds no account to connect; Robinhood, Schwab, IBKR and the aggregators
have none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.config import Settings

LIVE = "live"
# What a practice connection's accounts show: ``mode`` and the label the frontend displays
# (never "Live": no real money is at stake there).
SANDBOX_MODE = "sandbox"
SANDBOX_LABEL = "Sandbox"

# Per broker: environment name -> the settings fields it replaces (from the deployment's
# per-environment settings).
_Overrides = Callable[[Settings], dict[str, Any]]
_ENVIRONMENTS: dict[str, dict[str, _Overrides]] = {
    "alpaca": {
        "paper": lambda s: {
            "alpaca_trading_url": s.alpaca_paper_trading_url,
            "alpaca_stream_url": s.alpaca_paper_stream_url,
        }
    },
    "tradier": {
        # The sandbox's published limits (60 a minute each) follow from its host when the
        # per-minute settings are unset: https://docs.tradier.com/docs/rate-limiting
        "sandbox": lambda s: {
            "tradier_base_url": s.tradier_sandbox_base_url,
            "tradier_stream_url": s.tradier_sandbox_stream_url,
            "tradier_standard_per_minute": None,
            "tradier_market_data_per_minute": None,
            "tradier_trading_per_minute": None,
        }
    },
    "tastytrade": {
        # The cert sandbox refuses ``Accept-Version`` (tastyware/tastytrade ``Session``).
        "sandbox": lambda s: {
            "tastytrade_base_url": s.tastytrade_sandbox_base_url,
            "tastytrade_streamer_url": s.tastytrade_sandbox_streamer_url,
            "tastytrade_api_version": None,
        }
    },
    "webull": {"test": lambda s: {"webull_base_url": s.webull_test_base_url}},
}


def environments_of(slug: str) -> list[str]:
    """The environments a broker's connections may use, ``live`` first."""
    return [LIVE, *sorted(_ENVIRONMENTS.get(slug, {}))]


def is_practice(environment: str | None) -> bool:
    """A broker's own paper/sandbox environment: never live money. None is a connection
    row not flushed yet, whose column default is ``live``."""
    return environment is not None and environment != LIVE


def settings_for(settings: Settings, slug: str, environment: str) -> Settings:
    """The settings an adapter of ``slug`` in ``environment`` is built with.

    Raises ``ValueError`` for an environment the broker does not have."""
    if environment == LIVE:
        return settings
    overrides = _ENVIRONMENTS.get(slug, {}).get(environment)
    if overrides is None:
        raise ValueError(f"{slug} has no {environment!r} environment")
    return settings.model_copy(update=overrides(settings))
