"""Load shedding at the door for the order paths.

Past capacity an instance must refuse orders cleanly (503 ``overloaded`` with Retry-After,
before anything is read or written) rather than accept them into queues that end in pool
timeouts, 5xx answers and clients retrying blind. The limit counts order writes in flight
on this instance (placing, changing, cancelling, routing); reads, previews and the stream
are not counted. A refused request did nothing, so the client's retry with the same
Idempotency-Key is safe.
"""

from __future__ import annotations

import re

from prometheus_client import Counter, Gauge
from starlette.types import ASGIApp, Receive, Scope, Send

from app import errors
from app.api.problems import problem_response

SHED = Counter("brokerage_orders_shed_total", "Order requests refused 503 at the door")
INFLIGHT = Gauge("brokerage_orders_inflight", "Order writes in flight on this instance")

# POST /v1/accounts/{id}/orders, POST /v1/orders, POST /v1/orders/route are not counted
# (a decision alone), PATCH and DELETE /v1/orders/{id}.
_ORDER_WRITE = re.compile(r"^/v1/(accounts/[^/]+/orders|orders|orders/[^/]+)$")
_WRITE_METHODS = frozenset({"POST", "PATCH", "DELETE"})


def is_order_write(method: str, path: str) -> bool:
    return (
        method in _WRITE_METHODS and path != "/v1/orders/route" and bool(_ORDER_WRITE.match(path))
    )


class OrderLoadSheddingMiddleware:
    def __init__(self, app: ASGIApp, max_inflight: int) -> None:
        self.app = app
        self.max_inflight = max_inflight
        self._inflight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_order_write(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        if self._inflight >= self.max_inflight:
            SHED.inc()
            response = problem_response(
                errors.Overloaded(
                    f"more than {self.max_inflight} order requests are in flight on this "
                    "instance; nothing was done, retry shortly"
                )
            )
            await response(scope, receive, send)
            return
        self._inflight += 1
        INFLIGHT.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            self._inflight -= 1
            INFLIGHT.dec()
