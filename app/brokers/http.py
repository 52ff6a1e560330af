"""The one HTTP layer every broker package uses (httpx.AsyncClient underneath).

Why one layer: the difference between "nothing happened" and "it may have happened" is a
property of the transport, not of a broker, and getting it wrong once either loses an order
(a retry that should have happened did not) or duplicates one (a write was resent). So the
mapping from transport outcomes to ``app.brokers.errors`` lives here, once:

* The request never left (connect error, DNS failure, connect or pool timeout):
  ``Transient``. Safe to retry, for reads and writes alike.
* The request left and the answer was lost (read timeout, connection dropped, protocol
  error): ``Transient`` for a read, ``OutcomeUnknown`` for a write (POST/PATCH/DELETE/PUT).
  A write is never retried here; reconciliation finds out what happened.
* 429: ``RateLimitExceeded`` with ``Retry-After`` parsed (seconds or an HTTP date). The
  broker refused the request, so even a write definitively did not happen.
* 5xx: ``OutcomeUnknown`` for a write (the broker may have acted before failing),
  ``Transient`` for a read.
* 401 (and 403 unless the broker's classifier says otherwise): ``AuthenticationFailed``.
* Other 4xx: ``Rejected`` with the broker's reason, after the broker's own classifier had
  the first look (Alpaca answers 403 for insufficient buying power, for example).

Only safe reads (GET) are retried, with capped exponential backoff and full jitter, and only
for ``Transient`` outcomes. Requests are paced per credential by a token bucket so one user's
burst cannot get the platform's key (or theirs) blocked by the broker; on Postgres the
bucket's state is shared by every instance (``SharedRateLimiter``).

Logging is redacted by construction: one line per request with the broker, method, path,
status and duration. Headers, query strings and bodies are never logged; they carry keys,
tokens and account numbers.
"""

from __future__ import annotations

import asyncio
import copy
import email.utils
import functools
import hashlib
import logging
import os
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx

from app.brokers import errors
from app.config import Settings
from app.observability import (
    BROKER_LATENCY,
    BROKER_REQUESTS,
    RATE_LIMIT_REFUSED,
    RATE_LIMIT_WAIT_SECONDS,
    RATE_LIMIT_WAITS,
)

log = logging.getLogger(__name__)

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# The broker's own reading of a 4xx answer (never 429 or 5xx, whose meaning is fixed here):
# given the response and the method, an error to raise, or None for the generic mapping.
Classifier = Callable[[httpx.Response, str], errors.BrokerError | None]
# Per-request authentication (Robinhood's Ed25519 signature, Webull's HMAC): given the fully
# built request (method, URL with its query, exact body bytes), the headers that sign it. It
# runs for every attempt, so each carries a fresh timestamp and nonce.
Signer = Callable[[httpx.Request], Mapping[str, str]]
# Query parameters: a mapping, or pairs where a key repeats (``?symbol=A&symbol=B``).
Params = Mapping[str, Any] | Sequence[tuple[str, str]]


def _query(params: Params | None) -> Mapping[str, Any] | httpx.QueryParams | None:
    if params is None or isinstance(params, Mapping):
        return params
    pairs: list[tuple[str, str | int | float | bool | None]] = [(k, v) for k, v in params]
    return httpx.QueryParams(pairs)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Connect is short (nothing happened yet); read bounds how long a user waits."""

    connect: float = 5.0
    read: float = 10.0
    write: float = 10.0
    pool: float = 5.0

    def as_httpx(self) -> httpx.Timeout:
        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)


def timeouts_from(settings: Settings) -> Timeouts:
    return Timeouts(
        connect=settings.broker_connect_timeout_seconds,
        read=settings.broker_read_timeout_seconds,
        write=settings.broker_read_timeout_seconds,
        pool=settings.broker_connect_timeout_seconds,
    )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries for safe reads only. ``max_retry_after`` caps how long a 429 is waited out."""

    attempts: int = 3
    base_delay: float = 0.2
    max_delay: float = 2.0
    max_retry_after: float = 2.0

    def delay(self, attempt: int) -> float:
        """Full jitter (AWS architecture blog): spreads retries of many clients apart."""
        cap = min(self.max_delay, self.base_delay * (2**attempt))
        return random.uniform(0, cap)  # noqa: S311 - jitter, not cryptography


class TokenBucket:
    """A per-credential request pacer: ``rate`` tokens per second, at most ``capacity``.

    ``acquire`` waits for a token; if the wait would exceed ``max_wait`` it raises
    ``RateLimitExceeded`` without sending anything (so the caller may retry later).
    In-process: used where one instance owns the credential (SQLite, tests, adapters built
    without the app's pool); ``SharedBucket`` paces across instances.
    """

    def __init__(self, rate: float, capacity: float, *, max_wait: float = 5.0) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError("rate and capacity must be positive")
        self.rate = rate
        self.capacity = capacity
        self.max_wait = max_wait
        self._tokens = capacity
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self, now: float) -> None:
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self, broker: str = "") -> None:
        async with self._lock:
            now = time.monotonic()
            self._refill(now)
            if self._tokens >= 1:
                self._tokens -= 1
                return
            wait = (1 - self._tokens) / self.rate
            if wait > self.max_wait:
                RATE_LIMIT_REFUSED.labels(broker=broker).inc()
                raise errors.RateLimitExceeded(
                    "the request rate for this credential is exhausted",
                    retry_after=wait,
                    broker=broker,
                )
            _note_wait(broker, wait)
            await asyncio.sleep(wait)
            self._refill(time.monotonic())
            self._tokens -= 1


class SharedRateLimiter(Protocol):
    """Rate state shared by every instance (``app.db.rate_limits`` on Postgres).

    ``reserve`` takes one request slot for ``key`` now and answers 0, or answers how many
    seconds until a slot frees (nothing taken). It must be atomic across instances.
    """

    async def reserve(self, key: str, *, rate: float, capacity: float) -> float: ...


class SharedBucket:
    """A per-credential pacer whose state lives in the shared limiter, so N instances
    together stay within the broker's published limit for one credential."""

    def __init__(
        self,
        limiter: SharedRateLimiter,
        key: str,
        rate: float,
        capacity: float,
        *,
        max_wait: float = 5.0,
    ) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError("rate and capacity must be positive")
        self._limiter = limiter
        self._key = key
        self.rate = rate
        self.capacity = capacity
        self.max_wait = max_wait

    async def acquire(self, broker: str = "") -> None:
        waited = 0.0
        while True:
            wait = await self._limiter.reserve(self._key, rate=self.rate, capacity=self.capacity)
            if wait <= 0:
                return
            if waited + wait > self.max_wait:
                RATE_LIMIT_REFUSED.labels(broker=broker).inc()
                raise errors.RateLimitExceeded(
                    "the request rate for this credential is exhausted",
                    retry_after=wait,
                    broker=broker,
                )
            _note_wait(broker, wait)
            await asyncio.sleep(wait)
            waited += wait


def _note_wait(broker: str, seconds: float) -> None:
    RATE_LIMIT_WAITS.labels(broker=broker).inc()
    RATE_LIMIT_WAIT_SECONDS.labels(broker=broker).inc(seconds)


def _outcome(status: int) -> str:
    if status < 400:
        return "ok"
    if status == 429:
        return "rate_limited"
    return "client_error" if status < 500 else "server_error"


class Pacer(Protocol):
    async def acquire(self, broker: str = "") -> None: ...


def credential_key(*parts: str) -> str:
    """A stable bucket key for a credential that does not keep the credential itself."""
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]


@functools.cache
def _default_tls() -> ssl.SSLContext:
    """httpx's default verifying context (certifi's CA bundle, or ``SSL_CERT_FILE`` /
    ``SSL_CERT_DIR``), built once: loading the bundle takes ~20 ms of CPU, and a client is
    made per broker base URL, i.e. per user's gateway or fake in tests."""
    return httpx.create_ssl_context()


@functools.cache
def tls_context(verify: bool | str = True) -> ssl.SSLContext:
    """The TLS context for ``verify`` as httpx takes it, shared by a broker's REST clients
    and its WebSockets (one context per value, built once): True verifies against the
    default CA bundle, a path verifies against that CA bundle (a file) or directory only
    (a gateway with its own certificate), False does not verify (only where a deployment
    explicitly allows an unverified local gateway)."""
    if verify is True:
        return _default_tls()
    if verify is False:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if os.path.isdir(verify):
        return ssl.create_default_context(capath=verify)
    return ssl.create_default_context(cafile=verify)


class HttpPool:
    """Shared httpx clients (one per base URL) and rate buckets, owned by the app lifespan.

    ``transport`` lets tests or benchmarks inject an httpx transport; the default is the real
    network. Redirects are never followed: a broker redirect would resend credentials to
    wherever it points.
    """

    def __init__(
        self,
        *,
        timeouts: Timeouts | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        limiter: SharedRateLimiter | None = None,
        max_connections: int = 100,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.timeouts = timeouts or Timeouts()
        self._transport = transport
        self._limiter = limiter
        # As many idle connections kept per broker host as may be open at once: with
        # httpx's default (20 kept of 100), every call beyond 20 at once to one broker
        # opened a connection of its own and closed it after, a TLS handshake per call.
        # https://www.python-httpx.org/advanced/resource-limits/
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._buckets: dict[tuple[str, str], Pacer] = {}
        self._memo: dict[tuple[str, ...], tuple[float, object]] = {}
        self._environment = ""

    def __repr__(self) -> str:
        return f"HttpPool(clients={len(self._clients)}, buckets={len(self._buckets)})"

    def for_environment(self, environment: str) -> HttpPool:
        """This pool as a broker's paper/sandbox environment sees it: the same clients (one
        per base URL, and the environment's hosts are its own) and shared limiter, with rate
        buckets of its own (``<broker>@<environment>``): practice traffic never spends, or
        waits on, the live credential's budget."""
        view = copy.copy(self)
        view._environment = environment
        return view

    def client(self, base_url: str, *, verify: bool | str = True) -> httpx.AsyncClient:
        """The shared client for ``base_url``. ``verify``: TLS verification as httpx takes it
        (a CA bundle path for a gateway with its own certificate, False only where a
        deployment explicitly allows an unverified local gateway)."""
        key = base_url if verify is True else f"{base_url}\x00{verify}"
        found = self._clients.get(key)
        if found is None:
            found = httpx.AsyncClient(
                base_url=base_url,
                timeout=self.timeouts.as_httpx(),
                follow_redirects=False,
                transport=self._transport,
                verify=tls_context(verify),
                limits=self._limits,
            )
            self._clients[key] = found
        return found

    def bucket(
        self, broker: str, key: str, *, rate: float, capacity: float, max_wait: float = 5.0
    ) -> Pacer:
        """The pacer for one credential at one broker: shared across instances when the
        pool has a shared limiter, else in-process. ``max_wait``: how long a request may
        wait for its turn before it is refused (an endpoint paced at one request per
        5 seconds needs more than the default)."""
        if self._environment:
            broker = f"{broker}@{self._environment}"
        found = self._buckets.get((broker, key))
        if found is None:
            if self._limiter is not None:
                found = SharedBucket(
                    self._limiter, f"{broker}:{key}", rate, capacity, max_wait=max_wait
                )
            else:
                found = TokenBucket(rate, capacity, max_wait=max_wait)
            self._buckets[(broker, key)] = found
        return found

    def recall(self, key: tuple[str, ...]) -> object | None:
        """A value ``remember``ed under ``key`` and not yet expired, else None.

        For slow-changing broker reference data (is this symbol tradable?) that would
        otherwise cost a broker round trip on every order. Never for credentials.
        """
        found = self._memo.get(key)
        if found is None:
            return None
        expires, value = found
        if expires < time.monotonic():
            del self._memo[key]
            return None
        return value

    def remember(self, key: tuple[str, ...], value: object, ttl: float) -> None:
        if len(self._memo) >= 10_000:
            self._memo.clear()  # bounded: a cache, not a store
        self._memo[key] = (time.monotonic() + ttl, value)

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Retry-After as seconds (RFC 9110 §10.2.3: delay-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def error_reason(response: httpx.Response) -> str:
    """The broker's own message from a JSON error body, else the HTTP reason phrase."""
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or f"HTTP {response.status_code}"
    if isinstance(body, dict):
        for key in ("message", "error_message", "error_description", "error", "detail"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value
    return response.reason_phrase or f"HTTP {response.status_code}"


def map_status(response: httpx.Response, method: str, broker: str) -> errors.BrokerError:
    """The generic mapping of a non-2xx answer (after the broker's classifier passed)."""
    status = response.status_code
    write = method.upper() in WRITE_METHODS
    reason = error_reason(response)
    if status == 429:
        return errors.RateLimitExceeded(
            reason,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            broker=broker,
        )
    if status >= 500:
        if write:
            return errors.OutcomeUnknown(f"the broker answered {status}", broker=broker)
        return errors.Transient(f"the broker answered {status}", broker=broker)
    if status in (401, 403):
        return errors.AuthenticationFailed(reason, broker=broker)
    if status == 404:
        return errors.OrderNotFound(reason, broker=broker)
    return errors.Rejected(reason, broker=broker)


def map_transport(exc: httpx.TransportError, method: str, broker: str) -> errors.BrokerError:
    """Transport failures: did the request leave before it failed?"""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return errors.Transient("the broker could not be reached", broker=broker)
    if method.upper() in WRITE_METHODS:
        return errors.OutcomeUnknown(
            f"no answer from the broker after the request was sent ({type(exc).__name__})",
            broker=broker,
        )
    return errors.Transient(f"no answer from the broker ({type(exc).__name__})", broker=broker)


class BrokerClient:
    """One broker host, one credential: paced, timed, mapped and redacted requests."""

    def __init__(
        self,
        pool: HttpPool,
        *,
        broker: str,
        base_url: str,
        headers: Mapping[str, str],
        bucket: Pacer,
        classifier: Classifier | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        retry_after_from: Callable[[httpx.Response], float | None] | None = None,
        signer: Signer | None = None,
        verify: bool | str = True,
        auth: httpx.Auth | None = None,
    ) -> None:
        self._client = pool.client(base_url, verify=verify)
        self._signer = signer
        # Per-request signing as an httpx auth flow (SnapTrade signs the exact query and body
        # of each request): the flow sees the final request, after params and JSON are encoded.
        self._auth = auth
        self._broker = broker
        self._headers = dict(headers)
        self._bucket = bucket
        self._classifier = classifier
        # A broker's own "when may I retry" on a 429 without Retry-After (Tradier documents
        # X-Ratelimit-Expiry, the window's end as epoch milliseconds).
        self._retry_after_from = retry_after_from
        self._retry = retry or RetryPolicy()
        self._sleep = sleep

    def __repr__(self) -> str:
        # Never the headers: they hold the credential.
        return f"BrokerClient(broker={self._broker!r}, base_url={str(self._client.base_url)!r})"

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        safe: bool = False,
    ) -> httpx.Response:
        """Send one request; a 2xx response is returned, anything else raised as a BrokerError.

        GETs, and requests the caller marks ``safe`` (a POST that only reads, as every Plaid
        read is), are retried for ``Transient`` outcomes (a 429 only when its Retry-After is
        short) and their lost answers are ``Transient``; writes are sent exactly once.
        """
        method = method.upper()
        reads = method == "GET" or safe
        attempts = self._retry.attempts if reads else 1
        for attempt in range(attempts):
            try:
                return await self._once(
                    method, path, params=params, json=json, data=data, reads=reads
                )
            except errors.Transient as exc:
                last = attempt == attempts - 1
                if last:
                    raise
                if isinstance(exc, errors.RateLimitExceeded):
                    wait = exc.retry_after if exc.retry_after is not None else 1.0
                    if wait > self._retry.max_retry_after:
                        raise
                else:
                    wait = self._retry.delay(attempt)
                await self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(
        self,
        method: str,
        path: str,
        *,
        params: Params | None,
        json: Any,
        data: Mapping[str, Any] | None,
        reads: bool,
    ) -> httpx.Response:
        # How outcomes are mapped: as a read (nothing can have changed) or as the method says.
        kind = "GET" if reads else method
        await self._bucket.acquire(self._broker)
        started = time.perf_counter()
        try:
            auth = self._auth if self._auth is not None else httpx.USE_CLIENT_DEFAULT
            if self._signer is None:
                response = await self._client.request(
                    method,
                    path,
                    params=_query(params),
                    json=json,
                    data=data,
                    headers=self._headers,
                    auth=auth,
                )
            else:
                # Built first so the signature covers exactly the bytes that are sent.
                request = self._client.build_request(
                    method, path, params=_query(params), json=json, data=data, headers=self._headers
                )
                request.headers.update(self._signer(request))
                response = await self._client.send(request, auth=auth)
        except httpx.TransportError as exc:
            BROKER_REQUESTS.labels(broker=self._broker, outcome="transport_error").inc()
            mapped = map_transport(exc, kind, self._broker)
            log.warning(
                "broker request failed",
                extra={
                    "broker": self._broker,
                    "method": method,
                    "path": path,
                    "error": type(exc).__name__,
                    "outcome": type(mapped).__name__,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )
            raise mapped from None
        elapsed = time.perf_counter() - started
        BROKER_REQUESTS.labels(broker=self._broker, outcome=_outcome(response.status_code)).inc()
        BROKER_LATENCY.labels(broker=self._broker, operation=method).observe(elapsed)
        duration_ms = round(elapsed * 1000, 1)
        log.debug(
            "broker request",
            extra={
                "broker": self._broker,
                "method": method,
                "path": path,
                "status": response.status_code,
                "duration_ms": duration_ms,
            },
        )
        if response.is_success:
            return response
        mapped_error = None
        if self._classifier is not None and 400 <= response.status_code < 500:
            if response.status_code != 429:
                mapped_error = self._classifier(response, kind)
        if mapped_error is None:
            mapped_error = map_status(response, kind, self._broker)
        if (
            isinstance(mapped_error, errors.RateLimitExceeded)
            and mapped_error.retry_after is None
            and self._retry_after_from is not None
        ):
            mapped_error.retry_after = self._retry_after_from(response)
        if response.status_code >= 500 or response.status_code == 429:
            log.warning(
                "broker answered an error",
                extra={
                    "broker": self._broker,
                    "method": method,
                    "path": path,
                    "status": response.status_code,
                    "outcome": type(mapped_error).__name__,
                },
            )
        raise mapped_error
