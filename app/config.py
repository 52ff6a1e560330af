"""Settings, read from the environment.

Every secret is a ``SecretStr`` so it never shows up in a repr or a log line. The embedded
default (no environment at all) is SQLite under ``./var/``, the paper broker, a generated
local keyring and a generated development JWT secret; ``app.devsetup`` creates those files.
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
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
    db_pool_size: int = 10
    db_max_overflow: int = 20

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

    # Request limits.
    max_body_bytes: int = 64 * 1024
    idempotency_ttl: timedelta = timedelta(days=7)
    idempotency_lock_timeout: timedelta = timedelta(seconds=90)

    # The paper broker.
    paper_seed: int = 20260522
    paper_tick_seconds: float = 1.0
    paper_default_starting_cash: str = "100000"

    # Background work: the paper ticker and reconciliation. Tests switch it off and drive
    # the clock themselves.
    background_tasks: bool = True
    reconcile_interval_seconds: float = 5.0
    reconcile_unknown_after_seconds: float = 2.0
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
    # The trade_updates WebSocket; derived from the trading URL (wss://<host>/stream) if unset.
    alpaca_stream_url: str | None = None
    # Alpaca: 200 requests per minute per API key (docs.alpaca.markets, "Rate limit").
    alpaca_requests_per_minute: int = 200
    broker_connect_timeout_seconds: float = 5.0
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

    log_level: str = "INFO"
    log_json: bool = True

    @property
    def auto_migrate(self) -> bool:
        if self.auto_migrate_setting is not None:
            return self.auto_migrate_setting
        return self.is_sqlite

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
