"""The application factory and its lifespan (typed state built once, closed in reverse)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from prometheus_client import start_wsgi_server

from app.api import (
    accounts,
    admin,
    admin_keys,
    brokers,
    connections,
    events,
    health,
    market_data,
    oauth,
    options,
    orders,
    plaid,
    portfolio,
    routing,
    webhooks,
)
from app.api.load_shedding import OrderLoadSheddingMiddleware
from app.api.middleware import (
    BodySizeLimitMiddleware,
    NulByteMiddleware,
    RequestContextMiddleware,
    WebSocketOriginMiddleware,
)
from app.api.openapi import install_openapi
from app.api.problems import install_error_handlers
from app.api.state import AppState
from app.brokers.http import HttpPool, timeouts_from
from app.brokers.registry import BrokerRegistry, default_registry
from app.config import Settings, get_settings
from app.db.leases import leases_for, owner_lease
from app.db.migrate import upgrade
from app.db.rate_limits import PostgresRateLimiter
from app.db.session import create_engine, create_sessionmaker, database_key
from app.ids import new_id
from app.observability import configure_logging
from app.paper.clock import Clock, SystemClock
from app.paper.engine import PaperEngine, run_ticker
from app.paper.quotes import SeededQuoteSource
from app.security.audit import AuditChain
from app.security.credential_cache import CredentialCache, LocalCaches
from app.security.envelope import EnvelopeCipher
from app.security.jwt import build_verifier
from app.security.vault import TokenVault
from app.services.accounts import AccountService
from app.services.admin import AdminService
from app.services.bar_history import BarHistoryService
from app.services.clock import utcnow
from app.services.connections import ConnectionService, run_confirmations
from app.services.context import ServiceContext
from app.services.events import EventService  # streaming
from app.services.key_rewrap import KeyRewrap
from app.services.lifecycle import LifecycleSweep, run_lifecycle
from app.services.market_data import MarketDataService, StopStreams
from app.services.oauth import OAuthFlowService
from app.services.ops_metrics import SAMPLE_INTERVAL_SECONDS, OpsGauges
from app.services.options import OptionsService
from app.services.order_updates import OrderUpdateIngest
from app.services.orders import OrderService
from app.services.plaid import PlaidService
from app.services.portfolio import PortfolioService
from app.services.reconciliation import Reconciler, run_reconciler
from app.services.routing import RoutingService
from app.services.token_lifecycle import TokenLifecycle
from app.services.token_rotation import TokenRotationSweep
from app.services.upstream import UpstreamStreams
from app.startup import prepare_local_secrets
from app.streaming.config import StreamSettings  # streaming
from app.streaming.runtime import StreamRuntime  # streaming

log = logging.getLogger(__name__)


def _operation_id(route: APIRoute) -> str:
    return route.name


def _audit_chain(settings: Settings) -> AuditChain:
    # prepare_local_secrets put a key in place (or refused to start in production).
    assert settings.audit_key is not None
    return AuditChain(settings.audit_key)


def create_app(
    settings: Settings | None = None,
    *,
    paper_clock: Clock | None = None,
    registry: BrokerRegistry | None = None,
    stream_settings: StreamSettings | None = None,
    clock: Callable[[], datetime] | None = None,
) -> FastAPI:
    """The app. ``clock`` is "now" for the OAuth flow and token lifecycle (tests inject one)."""
    settings = settings or get_settings()
    stream_settings = stream_settings or StreamSettings()  # streaming

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level, json_logs=settings.log_json)
        key_provider, verifier_settings = prepare_local_secrets(settings)
        if settings.auto_migrate:
            await asyncio.to_thread(upgrade, settings.database_url)
        engine = create_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_timeout=settings.db_pool_timeout_seconds,
        )
        # This process's id, stamped on the Idempotency-Keys it claims. It holds the
        # owner's lease for its whole life: when the process dies, the lease is free and the
        # keys it held in flight are settled by whoever looks next (below, at start-up, and
        # every reconciler pass). Without the lease its claims carry no owner (old timing).
        owner: str | None = new_id("own")
        owner_leases = leases_for(engine)
        assert owner is not None
        if not await owner_leases.acquire(owner_lease(owner)):
            log.warning("no liveness lease: in-flight keys of this process are not marked")
            owner = None
        sessionmaker = create_sessionmaker(engine, owner=owner)
        http = httpx.AsyncClient(timeout=httpx.Timeout(10.0), follow_redirects=False)
        paper_engine = PaperEngine(
            sessionmaker,
            SeededQuoteSource.from_settings(settings),
            paper_clock or SystemClock(),
            OrderUpdateIngest(sessionmaker, "paper"),
        )
        broker_registry = registry or default_registry()
        credential_cache = CredentialCache(
            ttl_seconds=settings.credential_cache_seconds,
            max_entries=settings.credential_cache_size,
        )
        vault = TokenVault(EnvelopeCipher(key_provider), cache=credential_cache)
        broker_http = HttpPool(
            timeouts=timeouts_from(settings),
            max_connections=settings.broker_http_max_connections,
            # Several instances share one database: per-credential broker limits are kept
            # there so together they stay within each broker's published limits.
            limiter=PostgresRateLimiter(
                engine,
                max_connections=min(settings.db_rate_limit_connections, settings.db_pool_size),
            )
            if engine.dialect.name == "postgresql"
            else None,
        )
        now = clock or utcnow
        tokens = TokenLifecycle(
            settings=settings,
            sessionmaker=sessionmaker,
            registry=broker_registry,
            vault=vault,
            http=broker_http,
            clock=now,
        )
        ctx = ServiceContext(
            settings=settings,
            sessionmaker=sessionmaker,
            registry=broker_registry,
            paper_engine=paper_engine,
            vault=vault,
            audit=_audit_chain(verifier_settings),
            broker_http=broker_http,
            clock=now,
            tokens=tokens,
        )
        # --- streaming: the hub and its LISTEN connection (or in-process notifier) ---
        # The LISTEN connection also drops credentials changed on any instance from this
        # instance's cache; on SQLite the commit drops them in this process.
        stream = StreamRuntime(settings.database_url, stream_settings, [credential_cache])
        await stream.start()
        database = database_key(engine.url)
        if engine.dialect.name != "postgresql":
            LocalCaches.register(database, credential_cache)
        # --- end streaming ---
        orders_service = OrderService(ctx)
        upstream = UpstreamStreams(ctx)
        market = MarketDataService(
            ctx,
            max_symbols_per_connection=stream_settings.market_max_symbols,
            queue_size=stream_settings.market_queue_size,
            bar_replay=stream_settings.market_bar_replay,
        )
        # Connections revoked or broken on any instance end their market data here too.
        stream.hub.watch_connections(market)
        keys = KeyRewrap(
            sessionmaker,
            ctx.vault,
            leases=leases_for(engine),
            batch_size=settings.rewrap_batch_size,
            pause_seconds=settings.rewrap_pause_seconds,
        )
        rotation = TokenRotationSweep(ctx, leases=leases_for(engine))
        app.state.brokerage = AppState(
            settings=settings,
            engine=engine,
            ctx=ctx,
            verifier=build_verifier(verifier_settings, http),
            orders=orders_service,
            accounts=AccountService(ctx),
            connections=ConnectionService(ctx, streams=StopStreams(upstream, market)),
            admin=AdminService(ctx),
            events=EventService(sessionmaker),  # streaming
            stream=stream,  # streaming
            portfolio=PortfolioService(ctx),
            oauth=OAuthFlowService(ctx, tokens),
            tokens=tokens,
            routing=RoutingService(ctx, orders_service),
            upstream=upstream,
            keys=keys,
            rotation=rotation,
            plaid=PlaidService(ctx),
            market=market,
            bars=BarHistoryService(ctx),
            options=OptionsService(ctx),
            ops_gauges=OpsGauges(sessionmaker),
        )
        stop = asyncio.Event()
        tasks: list[asyncio.Task[Any]] = []
        reconciler = Reconciler(ctx, owner=owner, leases=leases_for(engine))
        # First the keys a dead process left in flight (their clients are retrying now),
        # then the ordinary pass.
        await reconciler.settle_orphaned_keys()
        await reconciler.run_once()
        if settings.background_tasks:
            tasks.append(
                asyncio.create_task(
                    run_ticker(paper_engine, settings.paper_tick_seconds, stop), name="paper-ticker"
                )
            )
            tasks.append(
                asyncio.create_task(
                    run_reconciler(reconciler, settings.reconcile_interval_seconds, stop),
                    name="reconciler",
                )
            )
            tasks.append(
                asyncio.create_task(
                    upstream.run(settings.upstream_sync_seconds, stop), name="upstream-streams"
                )
            )
            tasks.append(
                asyncio.create_task(
                    keys.run(settings.rewrap_interval_seconds, stop), name="key-rewrap"
                )
            )
            tasks.append(
                asyncio.create_task(
                    run_lifecycle(
                        LifecycleSweep(ctx, leases=owner_leases),
                        settings.reconcile_interval_seconds,
                        stop,
                    ),
                    name="option-lifecycle",
                )
            )
            tasks.append(
                asyncio.create_task(
                    rotation.run(settings.rotation_sweep_seconds, stop), name="rotation-sweep"
                )
            )
            tasks.append(
                asyncio.create_task(
                    tokens.run(settings.token_refresh_interval_seconds, stop),
                    name="token-refresh",
                )
            )
            tasks.append(
                asyncio.create_task(
                    run_confirmations(
                        app.state.brokerage.connections,
                        settings.credential_confirm_interval_seconds,
                        stop,
                    ),
                    name="credential-confirmations",
                )
            )
        metrics_server = None
        if settings.metrics_exposure == "port":
            # Its own listener (a daemon thread): /metrics stays off the API port, so the
            # public proxy never reaches it; bind it to an address only Prometheus can reach.
            metrics_server, _thread = start_wsgi_server(
                settings.metrics_port, addr=settings.metrics_host
            )
            log.info(
                "metrics served on their own port",
                extra={"host": settings.metrics_host, "port": metrics_server.server_port},
            )
            tasks.append(
                asyncio.create_task(
                    app.state.brokerage.ops_gauges.run(SAMPLE_INTERVAL_SECONDS, stop, ctx.clock),
                    name="ops-gauges",
                )
            )
        app.state.metrics_server = metrics_server
        if settings.gc_freeze_after_startup:
            gc.collect()
            gc.freeze()
        log.info("brokerage gateway ready", extra={"database": engine.dialect.name})
        try:
            yield
        finally:
            stop.set()
            if metrics_server is not None:
                await asyncio.to_thread(metrics_server.shutdown)
                metrics_server.server_close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await upstream.close()
            await app.state.brokerage.market.close()
            await keys.close()
            await reconciler.close()
            await owner_leases.close()
            await stream.stop()  # streaming
            LocalCaches.unregister(database, credential_cache)
            await app.state.brokerage.portfolio.aclose()
            await http.aclose()
            if ctx.broker_http is not None:
                await ctx.broker_http.aclose()
            await engine.dispose()

    app = FastAPI(
        title="Brokerage Gateway",
        version="0.1.0",
        summary="One REST/WebSocket API over your own brokerage accounts.",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        read_timeout=settings.http_body_timeout_seconds,
    )
    app.add_middleware(OrderLoadSheddingMiddleware, max_inflight=settings.max_inflight_orders)
    app.add_middleware(NulByteMiddleware)
    app.add_middleware(RequestContextMiddleware)
    if settings.cors_origins:
        # Outermost: a preflight is answered before anything else looks at the request,
        # and every answer (errors included) carries the CORS headers.
        app.add_middleware(WebSocketOriginMiddleware, origins=settings.cors_origins)
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_credentials=True,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Idempotency-Key", "Content-Type", "X-Request-ID"],
            expose_headers=["Retry-After", "X-Request-ID", "Location"],
            max_age=settings.cors_max_age_seconds,
        )
    app.include_router(health.router)
    for module in (
        brokers,
        connections,
        oauth,
        accounts,
        portfolio,
        orders,
        options,
        routing,
        events,
        market_data,
        admin,
        admin_keys,
        plaid,
        webhooks,
    ):
        app.include_router(module.router)
    return app
