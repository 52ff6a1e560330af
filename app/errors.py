"""The service's error tree, rendered once as RFC 9457 ``application/problem+json``.

Every expected failure is an ``AppError`` subclass with a stable snake_case ``code`` that
clients branch on. Anything else is a bug and becomes a generic 500 without internals.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_BASE = "https://brokerage-gateway.dev/problems/"


class Problem(BaseModel):
    """The RFC 9457 body every error response carries."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    code: str
    retryable: bool


class AppError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal error"
    retryable: ClassVar[bool] = False

    def __init__(
        self,
        detail: str | None = None,
        *,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.detail = detail or self.title
        self.extra = extra or {}
        self.headers = headers or {}
        super().__init__(self.detail)

    def to_problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
            "retryable": self.retryable,
        }
        body.update(self.extra)
        return body


class BadRequest(AppError):
    status = 400
    code = "bad_request"
    title = "Bad request"


class MalformedJson(AppError):
    status = 400
    code = "malformed_json"
    title = "The request body is not valid JSON"


class IdempotencyKeyRequired(AppError):
    status = 400
    code = "idempotency_key_required"
    title = "An Idempotency-Key header is required"


class InvalidIdempotencyKey(AppError):
    status = 400
    code = "invalid_idempotency_key"
    title = "The Idempotency-Key must be 1..255 printable ASCII characters"


class InvalidCursor(AppError):
    status = 400
    code = "invalid_cursor"
    title = "The cursor is not valid"


class InvalidOAuthState(AppError):
    status = 400
    code = "invalid_state"
    title = "The OAuth state is unknown"


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"
    title = "Authentication required"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="brokerage"'})


class WebhookSignatureInvalid(AppError):
    """A webhook whose signature does not prove it came from the broker; nothing is done."""

    status = 401
    code = "invalid_webhook_signature"
    title = "The webhook signature does not verify"


class Forbidden(AppError):
    status = 403
    code = "forbidden"
    title = "Not allowed"


class ReadOnlyAccount(AppError):
    status = 403
    code = "read_only_account"
    title = "This account is read-only (Linked); orders are never placed on it"


class PaperFirstRequired(AppError):
    status = 403
    code = "paper_first_required"
    title = "Complete paper trading cycles before trading live"


class NotFound(AppError):
    status = 404
    code = "not_found"
    title = "Not found"


class MethodNotAllowed(AppError):
    status = 405
    code = "method_not_allowed"
    title = "Method not allowed"


class Conflict(AppError):
    status = 409
    code = "conflict"
    title = "Conflict"


class RequestInProgress(AppError):
    status = 409
    code = "request_in_progress"
    title = "A request with this Idempotency-Key is still in progress"
    retryable = True


class ConnectionBroken(AppError):
    status = 409
    code = "connection_broken"
    title = "The broker connection is not usable"


class OrderNotModifiable(AppError):
    status = 409
    code = "order_not_modifiable"
    title = "The order can no longer be changed"


class PayloadTooLarge(AppError):
    status = 413
    code = "payload_too_large"
    title = "The request body is too large"


class RequestTimeout(AppError):
    status = 408
    code = "request_timeout"
    title = "The request body did not arrive in time"


class UnsupportedMediaType(AppError):
    status = 415
    code = "unsupported_media_type"
    title = "The request body must be application/json"


class ValidationFailed(AppError):
    status = 422
    code = "validation_error"
    title = "The request is not valid"


class IdempotencyKeyReused(AppError):
    status = 422
    code = "idempotency_key_reused"
    title = "This Idempotency-Key was used with a different request"


class UnknownBroker(AppError):
    status = 422
    code = "unknown_broker"
    title = "This broker is not available on this deployment"


class UnknownAccount(AppError):
    status = 422
    code = "unknown_account"
    title = "The request names an account you do not have"


class NoEligibleAccount(AppError):
    status = 422
    code = "no_eligible_account"
    title = "None of your accounts can take this order"


class RouteFailed(AppError):
    status = 422
    code = "route_failed"
    title = "Every account the order was routed to refused it"


class UnknownSymbol(AppError):
    status = 422
    code = "unknown_symbol"
    title = "The symbol is not known to this broker"


class UnsupportedOrder(AppError):
    status = 422
    code = "unsupported_order"
    title = "The broker does not support this order"


class InsufficientFunds(AppError):
    status = 422
    code = "insufficient_funds"
    title = "Insufficient buying power or position"


class UncoveredOption(AppError):
    """A short option leg the account cannot cover (its own long legs, shares or cash)."""

    status = 422
    code = "uncovered_option"
    title = "A short option leg is not covered"


class MarketClosed(AppError):
    status = 422
    code = "market_closed"
    title = "The market is closed for this order"


class BrokerRejected(AppError):
    status = 422
    code = "broker_rejected"
    title = "The broker rejected the request"


class InvalidReturnTo(AppError):
    status = 422
    code = "invalid_return_to"
    title = "return_to is not on this deployment's allow-list"


# --- Options: refusals of an order body before anything is written ---------------------------


class OrderBodyInvalid(ValidationFailed):
    """A 422 with a code of its own for an order body (see ``ORDER_VALIDATION_CODES``)."""


class InvalidOptionSymbol(OrderBodyInvalid):
    code = "invalid_option_symbol"
    title = "Not a valid OCC option symbol"


class OptionExpired(OrderBodyInvalid):
    code = "option_expired"
    title = "The option contract has expired"


class FractionalContracts(OrderBodyInvalid):
    code = "fractional_contracts"
    title = "Option orders are in whole contracts (or whole strategy units)"


class PositionEffectRequired(OrderBodyInvalid):
    code = "position_effect_required"
    title = "An option order needs position_effect (open or close)"


class InvalidLegCount(OrderBodyInvalid):
    code = "invalid_leg_count"
    title = "A multi-leg order has 2 to 4 legs"


class MixedUnderlyings(OrderBodyInvalid):
    code = "mixed_underlyings"
    title = "Every leg of a multi-leg order must be on the same underlying"


class DuplicateLegs(OrderBodyInvalid):
    code = "duplicate_legs"
    title = "A contract appears in more than one leg"


class InvalidLegRatio(OrderBodyInvalid):
    code = "invalid_leg_ratio"
    title = "A leg ratio must be a whole number of at least 1"


class LegRatiosNotReduced(OrderBodyInvalid):
    code = "leg_ratios_not_reduced"
    title = "The leg ratios share a common factor; divide them and raise the quantity"


class PriceEffectRequired(OrderBodyInvalid):
    code = "price_effect_required"
    title = "A multi-leg limit order needs price_effect (debit, credit or even)"


class PriceEffectMismatch(OrderBodyInvalid):
    code = "price_effect_mismatch"
    title = "price_effect contradicts the direction of the legs"


ORDER_VALIDATION_CODES: dict[str, type[OrderBodyInvalid]] = {
    cls.code: cls
    for cls in (
        InvalidOptionSymbol,
        OptionExpired,
        FractionalContracts,
        PositionEffectRequired,
        InvalidLegCount,
        MixedUnderlyings,
        DuplicateLegs,
        InvalidLegRatio,
        LegRatiosNotReduced,
        PriceEffectRequired,
        PriceEffectMismatch,
    )
}
"""The stable codes an order body's own validation answers with (422), by code."""


class OptionsChainUnsupported(AppError):
    status = 422
    code = "options_chain_unsupported"
    title = "This broker offers no option chain"


class InvalidCredentials(AppError):
    status = 422
    code = "invalid_credentials"
    title = "The broker did not accept these credentials"


class RateLimited(AppError):
    status = 429
    code = "rate_limited"
    title = "Rate limited"
    retryable = True


class BrokerUnavailable(AppError):
    status = 503
    code = "broker_unavailable"
    title = "The broker is unavailable"
    retryable = True


class LiveTradingDisabled(AppError):
    status = 503
    code = "live_trading_disabled"
    title = "Live trading is switched off"


class ServiceUnavailable(AppError):
    status = 503
    code = "service_unavailable"
    title = "The service is not ready"
    retryable = True


class Overloaded(AppError):
    """Past this instance's capacity (orders in flight, or no database connection free in
    time): nothing was done; retry after ``Retry-After`` seconds."""

    status = 503
    code = "overloaded"
    title = "The service is overloaded"
    retryable = True

    def __init__(self, detail: str | None = None, *, retry_after_seconds: int = 1) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_seconds)})


class MarketDataUnsupported(AppError):
    status = 422
    code = "market_data_unsupported"
    title = "The account's broker offers no such market data"


class RangeUnavailable(AppError):
    status = 422
    code = "range_unavailable"
    title = "The broker cannot serve bars for this range"
