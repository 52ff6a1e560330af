"""The broker error tree (ccxt's split plus NautilusTrader's third outcome).

``Rejected``: the broker definitively did not act (safe to report, safe to fail over).
``Transient``: nothing happened and a retry is safe (reads, or a write refused before it
reached the broker). ``OutcomeUnknown``: a write may have reached the broker; the order
waits for reconciliation and is never resent. The service layer maps these to problem+json
once, in ``app.services.broker_errors``.
"""

from __future__ import annotations


class BrokerError(Exception):
    """Base class. ``reason`` is the broker's own words, safe to show to the user."""

    def __init__(self, reason: str, *, broker: str = "") -> None:
        self.reason = reason
        self.broker = broker
        super().__init__(reason)


class Rejected(BrokerError):
    """The broker refused the request; nothing was created or changed."""


class InsufficientFunds(Rejected):
    pass


class UnknownSymbol(Rejected):
    pass


class MarketClosed(Rejected):
    pass


class UnsupportedOrder(Rejected):
    pass


class MarketDataLimit(Rejected):
    """A market-data subscription beyond the broker's caps (symbols per session, sessions
    per credential); nothing was changed upstream."""


class UncoveredOption(Rejected):
    """A short option leg without cover (the order's own long legs, shares or cash)."""


class OrderNotFound(Rejected):
    pass


class OrderNotModifiable(Rejected):
    """The order is in a state the broker will not change (filled, canceled, ...)."""


class AuthenticationFailed(BrokerError):
    """401/403: the credential is wrong, expired or revoked."""


class ReauthorizationRequired(AuthenticationFailed):
    """The credential still exists but the user must sign in at the institution again
    (Plaid ``ITEM_LOGIN_REQUIRED``): the connection is broken until it is re-linked."""


class NotSupported(BrokerError):
    """This broker path does not offer the operation."""


class Transient(BrokerError):
    """Nothing happened; retrying later is safe."""


class RateLimitExceeded(Transient):
    def __init__(self, reason: str, *, retry_after: float | None = None, broker: str = "") -> None:
        super().__init__(reason, broker=broker)
        self.retry_after = retry_after


class OutcomeUnknown(BrokerError):
    """A write may or may not have taken effect at the broker."""


class UnknownBrokerValue(BrokerError):
    """The broker sent a status or field value the mapping does not know.

    Raised instead of guessing; logged loudly by the caller.
    """


class WebhookRejected(BrokerError):
    """A webhook that does not prove it comes from the broker (signature, age, shape).

    Nothing in it may be acted on; the caller answers 401 and logs the refusal.
    """
