"""Option lifecycle events from live brokers: expiration, exercise and assignment as orders.

A broker ends an option's life on its own (it expires worthless, a long is exercised, a
short is assigned) and reports it as a transaction, not as an order of ours. This sweep
reads the recent transactions of the accounts that hold (or held) option positions and
turns each lifecycle transaction (``option_expiration``, ``option_exercise``,
``option_assignment``, ``option_cash_settlement``) into an ``OrderUpdate(lifecycle=...)``
fed to the same ``OrderUpdateIngest`` as the brokers' streams: the account gains a
``filled`` order (client order id ``<kind>:<our id>``, ``position_effect`` ``close``) and
its subscribers an ``order.filled`` event. The transaction's id is the order's
``broker_order_id``, so one transaction is adopted once, however often it is read again and
by whichever instance.

Pacing: each account is looked at no more than once per its broker's interval
(``Settings.option_lifecycle_poll_seconds`` / ``..._by_broker``); a look costs one positions
read, plus one transactions read (the last ``option_lifecycle_lookback_days`` days) when the
account holds an option now, held one within the lookback (brokers post these events late:
end of day, nightly), or has not been looked at since this process started. One instance
sweeps at a time (a lease). Which brokers report what, and when, is in the README ("Option
lifecycle events").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal

from app.brokers import errors as broker_errors
from app.brokers.base import (
    AssetClass,
    BrokerAdapter,
    BrokerOrder,
    InvalidOptionSymbol,
    OptionContract,
    OrderSide,
    OrderStatus,
    OrderType,
    OrderUpdate,
    PositionEffect,
    Support,
    Tier,
    TimeInForce,
    Transaction,
)
from app.db.leases import Leases, LocalLeases
from app.db.models import Account, Connection
from app.db.repositories.connections import AccountRepository
from app.services.clock import utcnow
from app.services.context import USABLE_CONNECTION_STATUSES, ServiceContext
from app.services.order_updates import OrderUpdateIngest

log = logging.getLogger(__name__)

LIFECYCLE_TYPES = frozenset(
    {"option_expiration", "option_exercise", "option_assignment", "option_cash_settlement"}
)
LEASE = "option-lifecycle-sweep"
_ZERO = Decimal(0)


# Brokers whose lifecycle transactions carry the position change signed (so the side of
# the closed position is known, not guessed): Alpaca's OPEXP/OPEXC/OPASN ``qty`` (docs
# "Non-trade activities for option events") and tastytrade's Receive Deliver rows (its
# mapping signs them by ``action``). Other brokers' lifecycle transactions stay readable
# through GET /v1/accounts/{id}/transactions but are not turned into orders: an unsigned
# count cannot say whether a long or a short position ended (README, "Options").
SIGNED_LIFECYCLE_BROKERS = frozenset({"alpaca", "tastytrade"})


def lifecycle_brokers(ctx: ServiceContext) -> list[str]:
    """The live brokers whose accounts can trade options and whose lifecycle transactions
    are signed (``SIGNED_LIFECYCLE_BROKERS``). The paper broker reports its own expiries
    from its engine."""
    return [
        spec.slug
        for spec in ctx.registry.all()
        if spec.tier is not Tier.paper
        and spec.slug in SIGNED_LIFECYCLE_BROKERS
        and spec.capabilities.asset_classes.get(AssetClass.option, Support.unsupported)
        is not Support.unsupported
    ]


def lifecycle_update(account_ref: str, tx: Transaction) -> OrderUpdate | None:
    """The order a lifecycle transaction stands for, or None when it names no option
    contract or its direction cannot be known (logged, never guessed).

    The closed position's side: a signed quantity is the position's change (Alpaca: ``-2``
    two longs gone, ``2`` two shorts gone); unsigned, an exercise closes a long and an
    assignment a short; an unsigned expiration is not adopted.
    """
    if tx.type not in LIFECYCLE_TYPES or not tx.symbol:
        return None
    try:
        contract = OptionContract.parse(tx.symbol)
    except InvalidOptionSymbol:
        log.warning(
            "lifecycle transaction without an option contract",
            extra={"transaction_id": tx.transaction_id, "type": tx.type},
        )
        return None
    quantity = tx.quantity
    if quantity is not None and quantity < _ZERO:
        side = OrderSide.sell
    elif quantity is not None and quantity > _ZERO and tx.type != "option_exercise":
        side = OrderSide.buy
    elif tx.type == "option_exercise":
        side = OrderSide.sell
    elif tx.type == "option_assignment":
        side = OrderSide.buy
    else:
        log.warning(
            "lifecycle transaction without a direction; not adopted",
            extra={"transaction_id": tx.transaction_id, "type": tx.type},
        )
        return None
    contracts = abs(quantity) if quantity else None
    if contracts is None:
        log.warning(
            "lifecycle transaction without a quantity; not adopted",
            extra={"transaction_id": tx.transaction_id, "type": tx.type},
        )
        return None
    price = tx.price if tx.price is not None else _ZERO
    report = BrokerOrder(
        # Its own namespace: a transaction id never matches one of our orders' broker ids
        # (at brokers where both are plain integers).
        broker_order_id=f"tx:{tx.transaction_id}",
        client_order_id=None,
        symbol=contract.symbol,
        side=side,
        quantity=contracts,
        filled_quantity=contracts,
        avg_fill_price=price,
        order_type=OrderType.market,
        time_in_force=TimeInForce.day,
        status=OrderStatus.filled,
        limit_price=None,
        stop_price=None,
        created_at=tx.occurred_at,
        updated_at=tx.occurred_at,
        position_effect=PositionEffect.close,
    )
    return OrderUpdate(
        account_ref=account_ref, order=report, occurred_at=tx.occurred_at, lifecycle=tx.type
    )


class LifecycleSweep:
    """One pass: each due account of a lifecycle broker looked at once (module docstring)."""

    def __init__(self, ctx: ServiceContext, *, leases: Leases | None = None) -> None:
        self._ctx = ctx
        self._leases = leases or LocalLeases()
        self._due: dict[str, datetime] = {}
        self._last_held: dict[str, datetime] = {}  # when the account last held an option
        self._looked: set[str] = set()  # accounts looked at since this process started
        # "<account>:<transaction>" already fed by this process, with when it happened;
        # forgotten once older than the lookback (it is no longer read).
        self._adopted: dict[str, datetime] = {}

    async def run_once(self, now: datetime | None = None) -> int:
        """Returns how many lifecycle transactions were fed to the ingest this pass."""
        now = now or utcnow()
        if not await self._leases.acquire(LEASE):
            return 0
        horizon = now - timedelta(days=self._ctx.settings.option_lifecycle_lookback_days + 1)
        self._adopted = {k: at for k, at in self._adopted.items() if at >= horizon}
        try:
            async with self._ctx.sessionmaker() as session:
                accounts = await AccountRepository.for_system(session).usable_on_brokers(
                    lifecycle_brokers(self._ctx), sorted(USABLE_CONNECTION_STATUSES)
                )
                adapters: list[tuple[Account, Connection, BrokerAdapter]] = []
                for account, connection in accounts:
                    if now < self._due.get(account.id, now):
                        continue
                    try:
                        adapter = await self._ctx.adapter_for(session, connection, for_order=False)
                    except Exception:
                        log.info(
                            "lifecycle sweep: no adapter for the account now",
                            extra={"account_id": account.id},
                        )
                        continue
                    adapters.append((account, connection, adapter))
            fed = 0
            for account, connection, adapter in adapters:
                self._due[account.id] = now + self._ctx.settings.option_lifecycle_interval(
                    connection.broker_slug
                )
                try:
                    fed += await self._look(account, connection, adapter, now)
                except broker_errors.BrokerError as exc:
                    log.info(
                        "lifecycle sweep: the broker did not answer",
                        extra={"account_id": account.id, "reason": exc.reason},
                    )
                except Exception:
                    log.exception(
                        "lifecycle sweep of an account failed", extra={"account_id": account.id}
                    )
            return fed
        finally:
            await self._leases.release(LEASE)

    async def _look(
        self, account: Account, connection: Connection, adapter: BrokerAdapter, now: datetime
    ) -> int:
        ref = account.broker_account_ref
        positions = await adapter.get_positions(ref)
        lookback = timedelta(days=self._ctx.settings.option_lifecycle_lookback_days)
        if any(p.asset_class is AssetClass.option for p in positions):
            self._last_held[account.id] = now
        first = account.id not in self._looked
        self._looked.add(account.id)
        last_held = self._last_held.get(account.id)
        # Brokers post an expiry or assignment late (end of day, nightly): the account is
        # read for the whole lookback after it last held an option, not only once.
        if not first and (last_held is None or now - last_held > lookback):
            return 0
        transactions = await adapter.get_transactions(ref, now - lookback, None, None)
        ingest = OrderUpdateIngest(self._ctx.sessionmaker, connection.broker_slug)
        return await _feed(ingest, account.id, ref, transactions, self._adopted)


async def _feed(
    ingest: OrderUpdateIngest,
    account_id: str,
    ref: str,
    transactions: Iterable[Transaction],
    adopted: dict[str, datetime],
) -> int:
    fed = 0
    for tx in sorted(transactions, key=lambda t: (t.occurred_at, t.transaction_id)):
        key = f"{account_id}:{tx.transaction_id}"
        if key in adopted:
            continue
        update = lifecycle_update(ref, tx)
        if update is None:
            continue
        await ingest(update)  # idempotent: the transaction id is the broker order id
        adopted[key] = tx.occurred_at
        fed += 1
    return fed


async def run_lifecycle(sweep: LifecycleSweep, interval: float, stop: asyncio.Event) -> None:
    """Run the sweep every ``interval`` seconds (each account paced by its own broker
    interval inside) until ``stop``."""
    while not stop.is_set():
        try:
            await sweep.run_once()
        except Exception:
            log.exception("option lifecycle sweep failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
