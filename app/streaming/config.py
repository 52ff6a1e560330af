"""Tuning for order-event streaming, read from ``BROKERAGE_STREAM_*`` environment variables.

Kept apart from ``app.config.Settings`` so the streaming layer can be tuned (and tests can
shrink its timers) without touching the application's settings model. Every value has a
production default; none is a secret.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class StreamSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="BROKERAGE_STREAM_", extra="ignore", env_ignore_empty=True, frozen=True
    )

    # The WebSocket protocol (API.md "Order events").
    auth_timeout_seconds: float = Field(default=10.0, gt=0)
    heartbeat_seconds: float = Field(default=15.0, gt=0)
    # Client frames larger than this are answered with ``message_too_large`` (the transport
    # itself refuses anything over uvicorn's ``ws_max_size`` with close code 1009).
    max_message_bytes: int = Field(default=16 * 1024, ge=256)
    # A connection that sends this many bad messages is closed with 1008.
    max_protocol_errors: int = Field(default=20, ge=1)
    max_subscribe_accounts: int = Field(default=100, ge=1)

    # Fan-out: each subscriber's bounded queue, in events. A subscriber whose queue
    # overflows is resynchronised from its cursor (``resync``); one whose socket accepts
    # nothing for ``send_timeout_seconds`` is closed with 4408.
    queue_size: int = Field(default=1024, ge=1)
    send_timeout_seconds: float = Field(default=30.0, gt=0)
    # Rows per database read, for the hub's tail and a subscriber's backlog.
    read_batch: int = Field(default=500, ge=1, le=5000)
    # Frames the hub holds per subscribed user, so a subscriber that fell behind catches up
    # from memory; and how many backlog reads (cursors older than that) may use the
    # database at once per instance: connections stay bounded however many fall behind.
    recent_events_per_user: int = Field(default=4096, ge=1)
    backlog_read_concurrency: int = Field(default=4, ge=1)

    # The Postgres LISTEN connection: health probe interval, reconnect backoff, and a
    # safety poll of the outbox (in case a notification was lost without the connection
    # noticing, e.g. a half-open TCP connection).
    listener_probe_seconds: float = Field(default=10.0, gt=0)
    listener_probe_timeout_seconds: float = Field(default=5.0, gt=0)
    reconnect_min_seconds: float = Field(default=0.1, gt=0)
    reconnect_max_seconds: float = Field(default=5.0, gt=0)
    poll_seconds: float = Field(default=5.0, gt=0)

    # Market data (app.streaming.market): per connection, the bounded queue of trades,
    # bars and greeks (quotes conflate instead) and the symbols it may subscribe at once.
    market_queue_size: int = Field(default=1024, ge=1)
    market_max_symbols: int = Field(default=1000, ge=1)
    # Final bars replayed from the broker's history to a new bars subscriber, per interval
    # and symbol, before its live bars (0: none).
    market_bar_replay: int = Field(default=10, ge=0, le=1000)
