"""Metrics (Prometheus) and structured JSON logs carrying the request id."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)

HTTP_REQUESTS = Counter(
    "brokerage_http_requests_total", "HTTP requests", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "brokerage_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ORDERS_TOTAL = Counter(
    "brokerage_orders_total", "Orders placed, by broker and first outcome", ["broker", "outcome"]
)
BROKER_LATENCY = Histogram(
    "brokerage_broker_call_duration_seconds",
    "Broker call latency",
    ["broker", "operation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# Every answer of a broker's HTTP API, by outcome: ``ok`` (2xx), ``rate_limited`` (429),
# ``client_error`` (other 4xx), ``server_error`` (5xx), ``transport_error`` (no answer).
BROKER_REQUESTS = Counter(
    "brokerage_broker_requests_total", "Broker HTTP requests by outcome", ["broker", "outcome"]
)
# A request held back by its credential's pacer (in-process or shared), and for how long.
RATE_LIMIT_WAITS = Counter(
    "brokerage_rate_limit_waits_total", "Broker requests that waited for their pacer", ["broker"]
)
RATE_LIMIT_WAIT_SECONDS = Counter(
    "brokerage_rate_limit_wait_seconds_total", "Seconds broker requests waited", ["broker"]
)
RATE_LIMIT_REFUSED = Counter(
    "brokerage_rate_limit_refused_total",
    "Broker requests refused because their pacer's wait was too long",
    ["broker"],
)
# The upstream order streams' shared reconnect loop (app/brokers/upstream_stream.py).
UPSTREAM_CONNECTS = Counter(
    "brokerage_upstream_stream_connects_total",
    "Upstream order stream connections established (handshake done)",
    ["broker"],
)
UPSTREAM_INTERRUPTIONS = Counter(
    "brokerage_upstream_stream_interruptions_total",
    "Upstream order stream connections lost or refused (each is followed by a reconnect)",
    ["broker"],
)
RECONCILE_PASSES = Counter("brokerage_reconcile_passes_total", "Reconciliation passes finished")
RECONCILE_LAST_PASS = Gauge(
    "brokerage_reconcile_last_pass_timestamp_seconds",
    "When this instance last finished a reconciliation pass (Unix time)",
)
AUDIT_VERIFICATIONS = Counter(
    "brokerage_audit_verifications_total", "Audit chain verifications by outcome", ["outcome"]
)
# Sampled from the database (and the environment) on every scrape of /metrics: the same
# values on every instance, so dashboards take max() over instances.
ORDERS_UNRESOLVED = Gauge(
    "brokerage_orders_unresolved",
    "Orders whose outcome at the broker is not known yet (unknown, pending_submit)",
    ["broker", "status"],
)
ORDERS_UNRESOLVED_AGE = Gauge(
    "brokerage_orders_unresolved_oldest_age_seconds",
    "Age of the oldest unresolved order (since its last change)",
    ["broker", "status"],
)
CONNECTIONS = Gauge("brokerage_connections", "Connections by status", ["broker", "status"])
SAMPLE_FAILURES = Counter(
    "brokerage_ops_sample_failures_total",
    "Scrapes whose database-sampled gauges were not refreshed (they keep their last values)",
)
KILL_SWITCH = Gauge(
    "brokerage_kill_switch_in_force", "1 for each kill-switch in force", ["variable", "broker"]
)
KILL_SWITCH_SECONDS = Gauge(
    "brokerage_kill_switch_in_force_seconds",
    "How long this instance has seen the kill-switch in force",
    ["variable", "broker"],
)

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        # RedactingFilter leaves the redacted traceback in exc_text; never re-format the raw one.
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        elif record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, *, json_logs: bool) -> None:
    from app.security.redaction import RedactingFilter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if json_logs else logging.Formatter("%(levelname)s %(name)s: %(message)s")
    )
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_brokerage", False):
            root.removeHandler(existing)
    handler._brokerage = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request line at INFO with its full URL (query strings included);
    # broker calls are logged by app.brokers.http, redacted, so httpx stays at WARNING.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
