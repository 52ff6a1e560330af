"""The one mapping from the broker error tree to the API's problem codes."""

from __future__ import annotations

import math

from app import errors
from app.brokers import errors as broker_errors


def to_app_error(exc: broker_errors.BrokerError) -> errors.AppError:
    """Map a broker failure to the problem+json error the client sees.

    The broker's reason is kept in ``detail`` for rejections (it is the user's business why
    their order was refused); transport details are not.
    """
    match exc:
        case broker_errors.InsufficientFunds():
            return errors.InsufficientFunds(exc.reason)
        case broker_errors.UnknownSymbol():
            return errors.UnknownSymbol(exc.reason)
        case broker_errors.MarketClosed():
            return errors.MarketClosed(exc.reason)
        case broker_errors.UnsupportedOrder():
            return errors.UnsupportedOrder(exc.reason)
        case broker_errors.UncoveredOption():
            return errors.UncoveredOption(exc.reason)
        case broker_errors.OrderNotFound():
            return errors.NotFound("the broker does not know this order")
        case broker_errors.OrderNotModifiable():
            return errors.OrderNotModifiable(exc.reason)
        case broker_errors.Rejected():
            return errors.BrokerRejected(exc.reason)
        case broker_errors.AuthenticationFailed():
            return errors.ConnectionBroken("the broker refused the connection's credentials")
        case broker_errors.NotSupported():
            return errors.UnsupportedOrder(exc.reason)
        case broker_errors.RateLimitExceeded():
            retry_after = exc.retry_after if exc.retry_after is not None else 1.0
            seconds = max(1, math.ceil(retry_after))
            return errors.RateLimited(
                "the broker is rate limiting this connection",
                headers={"Retry-After": str(seconds)},
                extra={"retry_after": seconds},
            )
        case _:
            return errors.BrokerUnavailable("the broker did not answer in time; try again later")
