"""Applying what a broker says about an order to our row, and the upstream feed seam.

Every change goes through ``apply_broker_order``: the state table decides whether the
report is news, the row is updated, and an ``order.<status>`` event is appended to the
outbox in the same transaction. ``OrderUpdateIngest`` is the single entry point through
which adapters (broker streams, pollers, the paper engine) report order updates.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.brokers.base import BrokerOrder, BrokerOrderLeg, Fill, OrderStatus, OrderUpdate
from app.db.models import Order
from app.db.repositories.connections import AccountRepository
from app.db.repositories.orders import OrderEventRepository, OrderRepository
from app.db.session import SessionMaker
from app.ids import client_order_id_for, new_id
from app.schemas.orders import Order as OrderOut
from app.services.clock import utcnow
from app.services.order_state import OrderSnapshot, can_transition, is_consistent, should_apply
from app.streaming.outbox import install_outbox_hooks

log = logging.getLogger(__name__)

# Streaming: every event append takes the outbox ordering lock and announces its id
# (pg_notify / in-process), see app.streaming.outbox. Installed once per process.
install_outbox_hooks()


def order_payload(order: Order) -> dict[str, Any]:
    return OrderOut.from_row(order).model_dump(mode="json")


def append_order_event(
    session: AsyncSession,
    order: Order,
    occurred_at: datetime,
    events: list[dict[str, Any]] | None = None,
) -> None:
    """Append the order's ``order.<status>`` event: to the session (the ORM unit of work), or
    with ``events`` to that list, for the caller to write with one Core statement
    (``OrderRepository.write``) together with the order's own row."""
    if events is not None:
        events.append(order_event_values(order, occurred_at))
        return
    OrderEventRepository.for_system(session).append(
        user_id=order.user_id,
        type_=f"order.{order.status}",
        payload=order_payload(order),
        occurred_at=occurred_at,
        account_id=order.account_id,
        order_id=order.id,
    )


def order_event_values(order: Order, occurred_at: datetime) -> dict[str, Any]:
    """The column values of the order's ``order.<status>`` event (its id drawn on insert)."""
    return {
        "user_id": order.user_id,
        "account_id": order.account_id,
        "order_id": order.id,
        "connection_id": None,
        "type": f"order.{order.status}",
        "payload": order_payload(order),
        "occurred_at": occurred_at,
    }


def set_status(
    session: AsyncSession,
    order: Order,
    status: OrderStatus,
    now: datetime,
    *,
    reject_reason: str | None = None,
    events: list[dict[str, Any]] | None = None,
) -> bool:
    """A status change we decide ourselves (pending_cancel, unknown, a definitive reject).

    Refused (False, nothing written) when the state table does not allow it: a fill that
    committed meanwhile may have made the order terminal, and that always wins.
    """
    current = OrderStatus(order.status)
    if status is not current and not can_transition(current, status):
        log.warning(
            "status change refused by the state table",
            extra={"order_id": order.id, "from": current.value, "to": status.value},
        )
        return False
    order.status = status.value
    if reject_reason is not None:
        order.reject_reason = reject_reason
    order.updated_at = now
    append_order_event(session, order, now, events)
    return True


def apply_broker_order(
    session: AsyncSession,
    order: Order,
    report: BrokerOrder,
    now: datetime,
    *,
    events: list[dict[str, Any]] | None = None,
) -> bool:
    """Apply one broker report to our row; False if it was stale or a duplicate.

    ``events``: see ``append_order_event``."""
    current = OrderSnapshot(
        OrderStatus(order.status),
        order.quantity,
        order.filled_quantity,
        terms=(order.limit_price, order.stop_price, order.time_in_force),
    )
    incoming = OrderSnapshot(
        report.status,
        report.quantity,
        report.filled_quantity,
        terms=(report.limit_price, report.stop_price, report.time_in_force.value),
    )
    if order.broker_order_id is None:
        order.broker_order_id = report.broker_order_id
    if not is_consistent(incoming):
        log.error(
            "broker report contradicts itself; not applied",
            extra={"order_id": order.id, "status": report.status.value},
        )
        return False
    if not should_apply(current, incoming):
        return _apply_leg_progress(session, order, report, now, events)
    order.status = report.status.value
    order.quantity = report.quantity
    order.filled_quantity = report.filled_quantity
    order.avg_fill_price = report.avg_fill_price
    order.limit_price = report.limit_price
    order.stop_price = report.stop_price
    order.time_in_force = report.time_in_force.value
    if report.reject_reason:
        order.reject_reason = report.reject_reason
    if report.legs and order.legs:
        order.legs = merge_broker_legs(order.legs, report.legs)
    if report.position_effect is not None and order.position_effect is None:
        order.position_effect = report.position_effect.value
    order.updated_at = now
    append_order_event(session, order, now, events)
    return True


# --- legs --------------------------------------------------------------------------------
# A multi-leg order's legs live on its row as JSON (``Order.legs``): what the caller asked
# for (symbol, side, ratio, position_effect) and what the broker reported of each leg's
# fills (filled_quantity, avg_fill_price, broker_leg_id, and the ids of fills counted).


def new_leg_state(
    symbol: str, side: str, ratio: int, position_effect: str | None
) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "side": side,
        "ratio": ratio,
        "position_effect": position_effect,
        "filled_quantity": "0",
        "avg_fill_price": None,
        "broker_leg_id": None,
        "fill_ids": [],
    }


def merge_broker_legs(
    stored: list[dict[str, Any]], reported: tuple[BrokerOrderLeg, ...]
) -> list[dict[str, Any]]:
    """The stored legs with the broker's per-leg fill state, matched by contract symbol.

    The broker's report is the whole truth for the legs it names (its filled quantity and
    average price replace ours); a leg the report does not name keeps what we had. The
    caller's side, ratio and position effect stay as asked.
    """
    by_symbol = {leg.symbol: leg for leg in reported}
    merged = []
    for leg in stored:
        state = dict(leg)
        found = by_symbol.get(str(leg["symbol"]))
        if found is not None:
            state["filled_quantity"] = _text(found.filled_quantity)
            state["avg_fill_price"] = (
                _text(found.avg_fill_price) if found.avg_fill_price is not None else None
            )
            if found.broker_leg_id is not None:
                state["broker_leg_id"] = found.broker_leg_id
            if state.get("position_effect") is None and found.position_effect is not None:
                state["position_effect"] = found.position_effect.value
        merged.append(state)
    return merged


def apply_leg_fills(
    stored: list[dict[str, Any]],
    fills: tuple[Fill, ...],
    *,
    reported: frozenset[str] = frozenset(),
) -> tuple[list[dict[str, Any]], bool] | None:
    """The stored legs with ``fills`` that name a leg (``Fill.leg_symbol``) counted in, each
    fill once (its id is remembered), and whether any leg's fills changed; None when
    nothing changes at all.

    ``reported``: legs whose totals the same update's order report already gave (its
    ``legs``, applied by ``merge_broker_legs``). Their fills are remembered but not added:
    added on top of the broker's total they would count twice.
    """
    changed = False
    remembered = False
    legs = [dict(leg) for leg in stored]
    by_symbol = {str(leg["symbol"]): leg for leg in legs}
    for fill in fills:
        if fill.leg_symbol is None:
            continue
        leg = by_symbol.get(fill.leg_symbol)
        if leg is None:
            log.warning("fill for a leg the order does not have", extra={"leg": fill.leg_symbol})
            continue
        seen = list(leg.get("fill_ids") or [])
        if fill.fill_id in seen:
            continue
        leg["fill_ids"] = [*seen, fill.fill_id]
        remembered = True
        if fill.leg_symbol in reported:
            continue
        filled = Decimal(str(leg.get("filled_quantity") or "0"))
        avg = leg.get("avg_fill_price")
        total = filled + fill.quantity
        cost = filled * Decimal(str(avg)) if avg is not None else Decimal(0)
        leg["avg_fill_price"] = _text((cost + fill.quantity * fill.price) / total)
        leg["filled_quantity"] = _text(total)
        changed = True
    return (legs, changed) if remembered else None


def _apply_leg_progress(
    session: AsyncSession,
    order: Order,
    report: BrokerOrder,
    now: datetime,
    events: list[dict[str, Any]] | None,
) -> bool:
    """A report that is no news for the order as a whole may still be news for its legs (a
    combo's legs fill before a whole strategy unit has): applied, with an event, when its
    status is the order's and no leg's fills go backwards."""
    if not order.legs or not report.legs or report.status.value != order.status:
        return False
    merged = merge_broker_legs(order.legs, report.legs)
    before = [Decimal(str(leg.get("filled_quantity") or "0")) for leg in order.legs]
    after = [Decimal(str(leg.get("filled_quantity") or "0")) for leg in merged]
    if merged == order.legs or any(a < b for a, b in zip(after, before, strict=True)):
        return False
    order.legs = merged
    order.updated_at = now
    append_order_event(session, order, now, events)
    return True


def _text(value: Decimal) -> str:
    return format(value.normalize(), "f") if value else "0"


def replacement_order(old: Order, report: BrokerOrder, now: datetime) -> Order:
    """A new row for the broker order that replaced ``old`` (Alpaca, Schwab: replace makes
    a new order with its own id)."""
    order_id = new_id("ord")
    return Order(
        id=order_id,
        user_id=old.user_id,
        account_id=old.account_id,
        client_order_id=report.client_order_id or client_order_id_for(order_id),
        broker_order_id=report.broker_order_id,
        symbol=old.symbol,
        side=old.side,
        quantity=report.quantity,
        filled_quantity=report.filled_quantity,
        avg_fill_price=report.avg_fill_price,
        order_type=old.order_type,
        limit_price=report.limit_price,
        stop_price=report.stop_price,
        time_in_force=report.time_in_force.value,
        extended_hours=old.extended_hours,
        status=report.status.value,
        reject_reason=None,
        replaces_order_id=old.id,
        created_at=now,
        updated_at=now,
        position_effect=old.position_effect,
        price_effect=report.price_effect.value if report.price_effect else old.price_effect,
        legs=(
            merge_broker_legs(
                [
                    new_leg_state(
                        str(leg["symbol"]),
                        str(leg["side"]),
                        int(leg["ratio"]),
                        leg.get("position_effect"),
                    )
                    for leg in old.legs
                ],
                report.legs,
            )
            if old.legs
            else None
        ),
    )


async def adopt_replacement(
    session: AsyncSession, old: Order, report: BrokerOrder, now: datetime
) -> Order:
    """Record ``report`` as the order that replaced ``old``, once.

    ``old`` must be locked by the caller. Whoever learns of the replacement first (the
    modify answer, the broker's stream, or reconciliation after a lost answer) creates the
    row; the others find it here and get the same one back.
    """
    repo = OrderRepository.for_system(session)
    if old.replaced_by_order_id is not None:
        existing = await repo.get(old.replaced_by_order_id)
        if existing is not None:
            return existing
    replacement = replacement_order(old, report, now)
    repo.add(replacement)
    await session.flush()
    old.replaced_by_order_id = replacement.id
    if old.status != OrderStatus.replaced.value:
        set_status(session, old, OrderStatus.replaced, now)
    append_order_event(session, replacement, now)
    log.info(
        "replacement order recorded",
        extra={"order_id": old.id, "replacement_id": replacement.id},
    )
    return replacement


async def adopt_replacement_row(
    session: AsyncSession,
    old: Order,
    report: BrokerOrder,
    now: datetime,
    events: list[dict[str, Any]],
) -> tuple[Order, bool]:
    """``adopt_replacement`` for plain rows (``OrderRepository.get_row``, the order hot
    path): the replacement and whether it is new. A new one is not written here: the caller
    writes it with ``old`` and ``events`` (``OrderRepository.write(new=, changed=)``)."""
    if old.replaced_by_order_id is not None:
        existing = await OrderRepository.for_system(session).get_row(old.replaced_by_order_id)
        if existing is not None:
            return existing, False
    replacement = replacement_order(old, report, now)
    old.replaced_by_order_id = replacement.id
    if old.status != OrderStatus.replaced.value:
        set_status(session, old, OrderStatus.replaced, now, events=events)
    append_order_event(session, replacement, now, events)
    log.info(
        "replacement order recorded",
        extra={"order_id": old.id, "replacement_id": replacement.id},
    )
    return replacement, True


def lifecycle_order(account_id: str, update: OrderUpdate, now: datetime) -> Order | None:
    """Our row for an order the broker made itself (``update.lifecycle``): its client order
    id names the kind (``option_assignment:<hash of account and broker id>``) so the client
    can tell it apart, and the same event can be recorded only once."""
    report = update.order
    if report.status not in (OrderStatus.filled, OrderStatus.expired, OrderStatus.canceled):
        return None
    order_id = new_id("ord")
    # Derived from the account and the broker's id, so the same event delivered twice
    # (a stream and a sweep, two instances) collides on the unique client order id.
    digest = hashlib.sha256(f"{account_id}|{report.broker_order_id}".encode()).hexdigest()
    return Order(
        id=order_id,
        user_id="",  # the account's owner, set by the caller
        account_id=account_id,
        client_order_id=f"{update.lifecycle}:{digest[:40]}",
        broker_order_id=report.broker_order_id,
        symbol=report.symbol,
        side=report.side.value,
        quantity=report.quantity,
        filled_quantity=report.filled_quantity,
        avg_fill_price=report.avg_fill_price,
        order_type=report.order_type.value,
        limit_price=None,
        stop_price=None,
        time_in_force=report.time_in_force.value,
        extended_hours=False,
        status=report.status.value,
        reject_reason=None,
        created_at=update.occurred_at,
        updated_at=now,
        position_effect=report.position_effect.value if report.position_effect else None,
        price_effect=None,
        legs=None,
    )


class OrderUpdateIngest:
    """The upstream feed seam: one broker's order updates become our order events."""

    def __init__(self, sessionmaker: SessionMaker, broker_slug: str) -> None:
        self._sessionmaker = sessionmaker
        self._broker_slug = broker_slug

    async def __call__(self, update: OrderUpdate, *, account_id: str | None = None) -> None:
        """Apply one update. ``account_id``: our account the caller already knows the update
        is for (the lifecycle sweep reads one account at a time), so an account number shared
        by several rows (a reconnect keeps the old row; two users may link one account) does
        not leave a broker-made order unadopted; streams name only the broker's number."""
        async with self._sessionmaker() as session:
            order: Order | None = None
            if account_id is None:
                # The common case, a stream's news of an order we placed: found and locked by
                # one statement; the account rows are read only when it is not ours.
                order = await OrderRepository.for_system(session).find_on_broker_account(
                    self._broker_slug,
                    update.account_ref,
                    broker_order_id=update.order.broker_order_id,
                    client_order_id=update.order.client_order_id,
                )
            if account_id is not None:
                account_ids = [account_id]
            elif order is not None:
                account_ids = [order.account_id]
            else:
                account_ids = await AccountRepository.for_system(session).ids_by_broker_ref(
                    self._broker_slug, update.account_ref
                )
            if not account_ids:
                log.warning(
                    "order update for an unknown account",
                    extra={
                        "broker": self._broker_slug,
                        "broker_order_id": update.order.broker_order_id,
                    },
                )
                return
            if order is None and account_id is not None:
                order = await OrderRepository.for_system(session).find_by_broker_ids(
                    account_ids,
                    broker_order_id=update.order.broker_order_id,
                    client_order_id=update.order.client_order_id,
                    for_update=True,
                )
            if order is None and update.order.replaces:
                # A replacement we have not recorded yet (its modify answer is still on the
                # way, or was lost): adopt it under the order it replaces.
                old = await OrderRepository.for_system(session).find_by_broker_ids(
                    account_ids,
                    broker_order_id=update.order.replaces,
                    client_order_id=None,
                    for_update=True,
                )
                if old is not None:
                    await adopt_replacement(session, old, update.order, utcnow())
                    await session.commit()
                    return
            if order is None and update.lifecycle is not None and len(account_ids) == 1:
                # The broker acted on the account itself (expiry, exercise, assignment):
                # recorded as an order of the account, so it shows with its event.
                adopted = lifecycle_order(account_ids[0], update, utcnow())
                if adopted is not None:
                    owner = await AccountRepository.for_system(session).get(account_ids[0])
                    if owner is not None:
                        adopted.user_id = owner.user_id
                        OrderRepository.for_system(session).add(adopted)
                        append_order_event(session, adopted, adopted.updated_at)
                        try:
                            await session.commit()
                        except IntegrityError as exc:
                            await session.rollback()
                            if "client_order_id" not in str(exc.orig):
                                raise
                            # recorded meanwhile by another delivery of the same event
                        return
            if order is None:
                log.info(
                    "order update for an order placed outside the gateway; ignored",
                    extra={
                        "broker": self._broker_slug,
                        "broker_order_id": update.order.broker_order_id,
                    },
                )
                return
            changed = apply_broker_order(session, order, update.order, utcnow())
            if order.legs and update.fills:
                # Leg fills a broker reports as fills (not in the order's legs) are counted
                # here, each once; a new state of the legs is news even without a status.
                applied = apply_leg_fills(
                    order.legs,
                    update.fills,
                    reported=frozenset(leg.symbol for leg in update.order.legs),
                )
                if applied is not None:
                    order.legs, news = applied
                    if news and not changed:
                        order.updated_at = utcnow()
                        append_order_event(session, order, order.updated_at)
                    changed = True
            if changed:
                await session.commit()
