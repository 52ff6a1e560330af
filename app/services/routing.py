"""Multi-broker routing: choose the account for an order, and fail over without doubling it.

``POST /v1/orders`` with ``"account_id": "auto"`` lets the router choose among the caller's
accounts; an explicit account id places there exactly as ``POST /v1/accounts/{id}/orders``
does (same gates, same problem codes, no failover), with the route recorded all the same.

The decision (``POST /v1/orders/route`` returns it alone: no order row, no broker call):

1. The pool: the caller's accounts (never another user's: an id the caller does not own,
   in ``allowed_accounts`` or in a rule, is ``unknown_account``), ranked by the caller's
   routing rule for the order's asset class, then every other account oldest first;
   narrowed to ``allowed_accounts`` when given (the rest: ``not_in_allowed_accounts``).
2. The mode: ``mode`` from the request, else the mode of the most preferred account that
   can trade at all. A route never mixes paper and live (the rest: ``mode_mismatch``): a
   refused live order must never land on paper, nor a paper order on real money.
3. Each account then runs the placement gates in their order (``OrderService.check_gates``:
   connection active, tier/vault, kill-switch, paper-first, capabilities). A refused account
   is passed over with the problem code the placement would have answered; Tier C (Linked)
   and read-only accounts always are (``read_only_account``): never a candidate.

Placement tries the candidates in rank order. Before each try the gates run again (a
kill-switch may have flipped), the credential is opened and the broker's own symbol check
runs; a refusal there is a ``skipped`` attempt. Then, as on the account route, the attempt's
order row (its own id and client order id, so reconciliation at each broker stays per
order) is committed before the broker call, with the route and the Idempotency-Key claim.
The paper broker's books are in our database: a paper route (all its candidates are paper
accounts) runs every attempt inside one transaction, each in a savepoint, and commits once
at its end with the key completed; a crash leaves nothing of it.

Failover happens only when the broker DEFINITIVELY did not take the order: rejected, or
never reached (429, connection refused), and our order row agrees (``rejected``; a stream
update that says otherwise stops the route). An unknown outcome (timeout or 5xx after the
request left, an answer we cannot read) stops the route: the order waits for
reconciliation, the response (202) says so, and no other broker is tried. So at most one
broker ever holds the order: every attempt before the last one is known not to exist.

Crash safety: the claim always names the attempt's order the request is waiting on
(``point_at_order`` in the same transaction as that order row, and the previous attempt's
result), so if the process stops mid-route, reconciliation resolves that order and
completes the claim with the route's answer; a replay never starts a second route.

Idempotency-Key: as on the account route. Same key and body replays the stored answer; a
changed body is 422; a request still in flight is 409. When nothing reached any broker
(every sent attempt was refused before arrival), the key is released so a retry routes
afresh, as the account route does for a transient refusal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app import errors
from app.brokers import errors as broker_errors
from app.brokers.base import AssetClass, BrokerAdapter, OrderStatus
from app.brokers.symbols import asset_class_of
from app.db.models import Account, Connection, Order, OrderRoute, RouteAttempt
from app.db.repositories.connections import AccountRepository
from app.db.repositories.idempotency import IdempotencyRepository
from app.db.repositories.orders import OrderRepository
from app.db.repositories.routing import RouteRepository, RoutingRuleRepository
from app.ids import new_id
from app.observability import ORDERS_TOTAL
from app.paper.adapter import PaperAdapter
from app.schemas.orders import Order as OrderOut
from app.schemas.routing import (
    CandidateSource,
    DecisionReason,
    ModeSource,
    PassedOver,
    Route,
    RouteAttemptOut,
    RouteCandidate,
    RouteDecision,
    RoutedOrderCreate,
    RouteStatus,
    RoutingRuleOut,
    RoutingRules,
    RoutingRulesIn,
    TradingMode,
)
from app.services.clock import utcnow
from app.services.context import ServiceContext
from app.services.order_updates import append_order_event
from app.services.orders import (
    OrderService,
    SendOutcome,
    SendResult,
    StoredResponse,
    answer_existing,
    audit_outcome,
    check_at_broker,
    new_order_row,
    order_request_for,
    order_symbol,
    paper_broker,
    record_send_result,
    request_fingerprint,
    send_order,
)

log = logging.getLogger(__name__)

# Problem codes of refusals that say nothing about the order (a retry may succeed).
_TRANSIENT_CODES = frozenset({"broker_unavailable", "rate_limited"})
_WAITING = frozenset({OrderStatus.pending_submit.value, OrderStatus.unknown.value})


@dataclass(frozen=True, slots=True)
class _Candidate:
    account_id: str
    broker: str
    source: CandidateSource


@dataclass(frozen=True, slots=True)
class _Plan:
    decision: RouteDecision
    candidates: list[_Candidate]
    # An explicit account a gate refused: the request answers with this, like the account
    # route would.
    explicit_error: errors.AppError | None


@dataclass(frozen=True, slots=True)
class _Ready:
    """A candidate that passed every gate just now, with its credential opened."""

    index: int
    account: Account
    connection: Connection
    adapter: BrokerAdapter


@dataclass(frozen=True, slots=True)
class _Skip:
    account_id: str
    broker: str
    error: errors.AppError


@dataclass(frozen=True, slots=True)
class RouteView:
    route: Route
    # The order the route placed or waits on (None when the route failed).
    order: Order | None


class RoutingService:
    def __init__(self, ctx: ServiceContext, orders: OrderService) -> None:
        self._ctx = ctx
        self._orders = orders

    # --- rules -------------------------------------------------------------------------

    async def rules(self, *, user_id: str) -> RoutingRules:
        async with self._ctx.sessionmaker() as session:
            rows = await RoutingRuleRepository.for_user(session, user_id).all()
        return RoutingRules(
            rules=[
                RoutingRuleOut(
                    asset_class=AssetClass(row.asset_class),
                    accounts=list(row.account_ids),
                    updated_at=row.updated_at,
                )
                for row in rows
            ]
        )

    async def replace_rules(self, *, user_id: str, body: RoutingRulesIn) -> RoutingRules:
        """Replace all of the caller's rules. Every account must be the caller's (else 422
        ``unknown_account``, whether it does not exist or is another user's) and able to
        trade at all: a Linked account is refused (403 ``read_only_account``)."""
        async with self._ctx.sessionmaker() as session:
            accounts = {
                account.id: account
                for account, _ in await AccountRepository.for_user(
                    session, user_id
                ).all_with_connections()
            }
            named = [account_id for rule in body.rules for account_id in rule.accounts]
            unknown = sorted({a for a in named if a not in accounts})
            if unknown:
                raise errors.UnknownAccount(
                    f"no such account: {', '.join(unknown)}", extra={"accounts": unknown}
                )
            linked = sorted({a for a in named if accounts[a].tier == "C"})
            if linked:
                raise errors.ReadOnlyAccount(
                    f"Linked accounts never take orders: {', '.join(linked)}",
                    extra={"accounts": linked},
                )
            await RoutingRuleRepository.for_user(session, user_id).replace(
                {rule.asset_class.value: rule.accounts for rule in body.rules}, utcnow()
            )
            await session.commit()
        return await self.rules(user_id=user_id)

    # --- the decision ------------------------------------------------------------------

    async def decide(self, *, user_id: str, body: RoutedOrderCreate) -> RouteDecision:
        """The route decision alone: reads only our own tables, calls no broker."""
        async with self._ctx.sessionmaker() as session:
            plan = await self._plan(session, user_id, body)
        return plan.decision

    async def _plan(self, session: AsyncSession, user_id: str, body: RoutedOrderCreate) -> _Plan:
        asset_class = AssetClass.option if body.is_option else asset_class_of(order_symbol(body))
        rows = await AccountRepository.for_user(session, user_id).all_with_connections()
        by_id = {account.id: (account, connection) for account, connection in rows}
        passed: list[PassedOver] = []
        has_rule = False
        pool: list[tuple[Account, Connection, CandidateSource]]
        mode: TradingMode
        mode_source: ModeSource
        if not body.is_auto:
            found = by_id.get(body.account_id)
            if found is None:
                raise errors.NotFound("no such account")
            account, connection = found
            if body.mode is not None and body.mode != account.mode:
                raise errors.ValidationFailed(
                    f"account {account.id} is a {account.mode} account; mode is {body.mode}"
                )
            pool = [(account, connection, "explicit")]
            mode, mode_source = _mode(account.mode), "account"
        else:
            rule = await RoutingRuleRepository.for_user(session, user_id).get(asset_class.value)
            has_rule = rule is not None
            ranked = [a for a in (rule.account_ids if rule is not None else []) if a in by_id]
            ordered: list[tuple[Account, Connection, CandidateSource]] = [
                (*by_id[a], "rule") for a in ranked
            ]
            ordered += [(a, c, "default") for a, c in rows if a.id not in set(ranked)]
            pool = ordered
            if body.allowed_accounts is not None:
                allowed = set(body.allowed_accounts)
                passed += [
                    PassedOver(
                        account_id=a, broker=None, code="unknown_account", detail="no such account"
                    )
                    for a in body.allowed_accounts
                    if a not in by_id
                ]
                pool = []
                for account, connection, source in ordered:
                    if account.id in allowed:
                        pool.append((account, connection, source))
                    else:
                        passed.append(
                            _passed(account, "not_in_allowed_accounts", "not in allowed_accounts")
                        )
            if body.mode is not None:
                mode, mode_source = body.mode, "request"
            else:
                preferred = next((a for a, c, _ in pool if _can_ever_trade(a, c)), None)
                mode = _mode(preferred.mode) if preferred is not None else "live"
                mode_source = "preferred_account"

        candidates: list[_Candidate] = []
        explicit_error: errors.AppError | None = None
        for account, connection, source in pool:
            if account.mode != mode:
                passed.append(
                    _passed(
                        account,
                        "mode_mismatch",
                        f"a {account.mode} account; this route trades {mode}",
                    )
                )
                continue
            try:
                await self._orders.check_gates(session, user_id, account, connection, body)
            except errors.AppError as exc:
                passed.append(_passed(account, exc.code, exc.detail))
                explicit_error = exc
                continue
            candidates.append(_Candidate(account.id, account.broker_slug, source))

        reason, detail = _reason(candidates, asset_class, has_rule)
        decision = RouteDecision(
            selection="auto" if body.is_auto else "explicit",
            asset_class=asset_class,
            mode=mode,
            mode_source=mode_source,
            account_id=candidates[0].account_id if candidates else None,
            reason=reason,
            detail=detail,
            candidates=[
                RouteCandidate(account_id=c.account_id, broker=c.broker, rank=i, source=c.source)
                for i, c in enumerate(candidates, start=1)
            ],
            passed_over=passed,
        )
        return _Plan(decision, candidates, None if body.is_auto else explicit_error)

    # --- placement ---------------------------------------------------------------------

    async def place(
        self, *, user_id: str, body: RoutedOrderCreate, idempotency_key: str, path: str
    ) -> StoredResponse:
        fingerprint = request_fingerprint("POST", path, body)
        async with self._ctx.sessionmaker() as session:
            keys = IdempotencyRepository.for_user(session, user_id)
            existing = await keys.get(idempotency_key)
            if existing is not None:
                answer = answer_existing(existing, fingerprint, utcnow())
                if answer is not None:
                    return answer
                # Committed at once: holding the expired record's row lock until the claim
                # would take the key before the chain head (see ``lock_before_claim``).
                await keys.delete_expired_key(idempotency_key, utcnow())
                await session.commit()

            plan = await self._plan(session, user_id, body)
            if plan.explicit_error is not None:
                raise plan.explicit_error
            skipped: list[_Skip] = []
            ready = await self._next_ready(session, user_id, body, plan, 0, skipped)
            if ready is None:
                raise _nothing_ready(plan, skipped, explicit=not body.is_auto)

            now = utcnow()
            record_id = new_id("idem")
            order = new_order_row(user_id, ready.account, body, now)
            if paper_broker(ready.adapter) is None:
                # Any live attempt of the route (a failover too) may append to the chain.
                await self._ctx.audit.lock_before_claim(session, user_id)
            claimed = await keys.claim(
                record_id=record_id,
                key=idempotency_key,
                method="POST",
                path=path,
                fingerprint=fingerprint,
                now=now,
                expires_at=now + self._ctx.settings.idempotency_ttl,
                order_id=order.id,
            )
            if not claimed:
                await session.rollback()
                raced = await keys.get(idempotency_key)
                answer = None if raced is None else answer_existing(raced, fingerprint, now)
                if answer is not None:
                    return answer
                raise errors.RequestInProgress(headers={"Retry-After": "1"})

            route = OrderRoute(
                id=new_id("rte"),
                user_id=user_id,
                selection=plan.decision.selection,
                mode=plan.decision.mode,
                asset_class=plan.decision.asset_class.value,
                request_fingerprint=fingerprint,
                decision=plan.decision.model_dump(mode="json"),
                created_at=now,
            )
            routes = RouteRepository.for_user(session, user_id)
            routes.add(route)
            await session.flush()  # the route before the attempts that reference it
            seq = _record_skips(routes, route, skipped, 1, now)
            attempt = await _begin_attempt(session, routes, route, seq, ready, order, now)
            await self._orders.audit(
                session, ready.connection, order, "place", fingerprint, order.status, now
            )
            return await self._run(
                session, user_id, body, plan, route, ready, order, attempt, record_id, fingerprint
            )

    async def _run(
        self,
        session: AsyncSession,
        user_id: str,
        body: RoutedOrderCreate,
        plan: _Plan,
        route: OrderRoute,
        ready: _Ready,
        order: Order,
        attempt: RouteAttempt,
        record_id: str,
        fingerprint: str,
    ) -> StoredResponse:
        """Send the attempt (written, not committed yet); on a definitive refusal record its
        result with the next attempt's order row, and send that; stop at the first
        acceptance, unknown outcome or the last candidate.

        An outside broker is called only after the attempt's order row is committed (with
        the route, the key claim and the previous attempt's result). The paper broker's
        books are in our database: a paper attempt runs inside the route's transaction, and
        a paper route (routes never mix paper and live) commits once, at its end, with the
        key completed: all of it or nothing, and no ``unknown``.
        """
        keys = IdempotencyRepository.for_user(session, user_id)
        routes = RouteRepository.for_user(session, user_id)
        refusals: list[errors.AppError] = []
        while True:
            paper = paper_broker(ready.adapter)
            if paper is None:
                await session.commit()
                result = await send_order(ready.adapter, ready.account, order)
            else:
                result = await _send_in_transaction(session, paper, ready.account, order)
            skipped: list[_Skip] = []
            following: _Ready | None = None
            if body.is_auto and result.outcome in (SendOutcome.rejected, SendOutcome.not_sent):
                # Gates and symbol check of the next candidates before anything is locked:
                # they may read from brokers.
                following = await self._next_ready(
                    session,
                    user_id,
                    body,
                    plan,
                    ready.index + 1,
                    skipped,
                    in_transaction=paper is not None,
                )

            now = utcnow()
            fresh: Order | None = order
            if paper is None:
                # Re-read: a stream update or reconciliation may have moved it meanwhile.
                fresh = await OrderRepository.for_system(session).get(order.id, for_update=True)
            assert fresh is not None  # committed before the call; orders are never deleted
            problem = record_send_result(session, fresh, result, now)
            refused = (
                result.outcome in (SendOutcome.rejected, SendOutcome.not_sent)
                and fresh.status == OrderStatus.rejected.value
            )
            if refused:
                outcome = result.outcome.value
            elif result.outcome is SendOutcome.accepted:
                outcome = "accepted"
            else:
                # Unknown, or a refusal our row contradicts (a stream saw the order): the
                # order may exist, so nothing else is tried.
                outcome = "unknown"
            attempt.outcome = outcome
            attempt.code = problem.code if problem is not None else None
            attempt.detail = _clip(
                problem.detail
                if problem is not None
                else (result.failure.reason if result.failure is not None else None)
            )
            attempt.updated_at = now
            ORDERS_TOTAL.labels(broker=ready.connection.broker_slug, outcome=fresh.status).inc()
            await self._orders.audit(
                session,
                ready.connection,
                fresh,
                "place",
                fingerprint,
                audit_outcome(fresh, problem.code if problem is not None else None),
                now,
            )
            if problem is not None:
                refusals.append(problem)

            if refused and following is not None:
                seq = _record_skips(routes, route, skipped, attempt.seq + 1, now)
                order = new_order_row(user_id, following.account, body, now)
                attempt = await _begin_attempt(session, routes, route, seq, following, order, now)
                await keys.point_at_order(record_id, order.id)
                await self._orders.audit(
                    session, following.connection, order, "place", fingerprint, order.status, now
                )
                log.info(
                    "order routed on after a definitive refusal",
                    extra={"route_id": route.id, "order_id": order.id, "seq": attempt.seq},
                )
                ready = following
                continue

            if refused:
                _record_skips(routes, route, skipped, attempt.seq + 1, now)
            view = await route_view(session, routes, route)
            response, release = _final_answer(view, refusals, explicit=not body.is_auto)
            if release:
                await keys.release(record_id)
            else:
                await keys.complete(
                    record_id,
                    status=response.status,
                    body=response.body,
                    order_id=view.order.id if view.order is not None else fresh.id,
                )
            await session.commit()
            return response

    async def _next_ready(
        self,
        session: AsyncSession,
        user_id: str,
        body: RoutedOrderCreate,
        plan: _Plan,
        start: int,
        skipped: list[_Skip],
        *,
        in_transaction: bool = False,
    ) -> _Ready | None:
        """The first candidate from ``start`` that passes every gate now (re-read: a
        kill-switch or the connection may have changed since the decision), with its
        credential opened and the broker's symbol check passed. Refused candidates are
        appended to ``skipped``. Leaves no transaction open (SQLite's one writer must not
        wait on a broker), except ``in_transaction``: a paper route's one transaction stays
        open (its candidates are paper accounts, whose checks read no outside broker).
        """

        async def end_reads() -> None:
            if not in_transaction:
                await session.commit()

        for index in range(start, len(plan.candidates)):
            candidate = plan.candidates[index]
            try:
                found = await AccountRepository.for_user(session, user_id).get_with_connection(
                    candidate.account_id, fresh=True
                )
                if found is None:  # pragma: no cover - accounts are never deleted
                    raise errors.NotFound("no such account")
                account, connection = found
                await self._orders.check_gates(session, user_id, account, connection, body)
                if (
                    not in_transaction
                    and self._ctx.tokens is not None
                    and self._ctx.access_token_due(connection)
                ):
                    # An OAuth access token at or near expiry is refreshed first (outside any
                    # transaction: SQLite's one writer), then the connection is read again.
                    await session.commit()
                    await self._ctx.tokens.ensure_fresh(
                        user_id=user_id, connection_id=connection.id
                    )
                    found = await AccountRepository.for_user(session, user_id).get_with_connection(
                        candidate.account_id, fresh=True
                    )
                    if found is None:  # pragma: no cover - accounts are never deleted
                        raise errors.NotFound("no such account")
                    account, connection = found
                adapter = await self._ctx.adapter_for(session, connection, for_order=True)
                await end_reads()
                await _check_at_broker(adapter, account.broker_account_ref, body)
            except errors.AppError as exc:
                await end_reads()
                skipped.append(_Skip(candidate.account_id, candidate.broker, exc))
                continue
            return _Ready(index, account, connection, adapter)
        await end_reads()
        return None

    # --- read --------------------------------------------------------------------------

    async def get_route(self, *, user_id: str, route_id: str) -> Route:
        async with self._ctx.sessionmaker() as session:
            routes = RouteRepository.for_user(session, user_id)
            route = await routes.get(route_id)
            if route is None:
                raise errors.NotFound("no such route")
            return (await route_view(session, routes, route)).route


# --- the route as the API shows it --------------------------------------------------------


async def route_view(
    session: AsyncSession, routes: RouteRepository, route: OrderRoute
) -> RouteView:
    """The route with its attempts and the orders as they are now; the status is derived.

    Flushes first: the attempts query re-reads the orders, which must not drop changes
    this session has not written yet.
    """
    await session.flush()
    rows = await routes.attempts(route.id)
    status, holder = _status(rows)
    attempts = [
        RouteAttemptOut(
            seq=attempt.seq,
            account_id=attempt.account_id,
            broker=attempt.broker_slug,
            order_id=attempt.order_id,
            outcome=attempt.outcome,  # type: ignore[arg-type]  # CHECK-constrained
            code=attempt.code,
            detail=attempt.detail,
            order_status=OrderStatus(order.status) if order is not None else None,
            created_at=attempt.created_at,
            updated_at=attempt.updated_at,
        )
        for attempt, order in rows
    ]
    view = Route(
        id=route.id,
        status=status,
        account_id=holder.account_id if holder is not None else None,
        order_id=holder.id if holder is not None else None,
        failed_over=len(rows) > 1,
        decision=RouteDecision.model_validate(route.decision),
        attempts=attempts,
        created_at=route.created_at,
    )
    return RouteView(view, holder)


def _status(rows: list[tuple[RouteAttempt, Order | None]]) -> tuple[RouteStatus, Order | None]:
    """Placed once a broker took an attempt's order; routing / waiting while the last
    attempt's outcome is open; failed when every attempt is known not to exist."""
    for attempt, order in rows:
        if order is None:
            continue
        if attempt.outcome == "accepted":
            return "placed", order
        if attempt.outcome in ("pending", "unknown"):
            if order.status in _WAITING:
                open_status: RouteStatus = (
                    "routing" if attempt.outcome == "pending" else "waiting_for_reconciliation"
                )
                return open_status, order
            if order.status != OrderStatus.rejected.value:
                return "placed", order  # reconciliation (or a stream) found it
    return "failed", None


def _final_answer(
    view: RouteView, refusals: list[errors.AppError], *, explicit: bool
) -> tuple[StoredResponse, bool]:
    """The response for the route as it stands, and whether the key is released."""
    route = view.route
    if route.status in ("placed", "routing", "waiting_for_reconciliation"):
        assert view.order is not None
        body = {
            "route": route.model_dump(mode="json"),
            "order": OrderOut.from_row(view.order).model_dump(mode="json"),
        }
        return StoredResponse(201 if route.status == "placed" else 202, body), False
    sent = [a for a in route.attempts if a.order_id is not None]
    last_order_id = sent[-1].order_id if sent else None
    # Nothing reached any broker: a retry with the same key routes afresh.
    release = all(a.outcome == "not_sent" for a in sent)
    problem: errors.AppError
    if explicit:
        # The broker's own refusal, as the account route answers it; a rejection that came
        # by another way (a stream update before the answer) as a plain broker rejection.
        problem = (
            refusals[-1] if refusals else errors.BrokerRejected("the broker did not take the order")
        )
    elif release:
        problem = _unreachable(refusals)
    else:
        problem = errors.RouteFailed(
            "no broker took the order; see route.attempts for each broker's answer"
        )
    body = problem.to_problem() | {
        "order_id": last_order_id,
        "route": route.model_dump(mode="json"),
    }
    return StoredResponse(problem.status, body, problem.headers), release


def _unreachable(refusals: list[errors.AppError]) -> errors.AppError:
    """Every broker tried refused before the order arrived: 429 when all were rate limits
    (the longest Retry-After), else 503; both retryable."""
    waits = [int(p.headers["Retry-After"]) for p in refusals if "Retry-After" in p.headers]
    wait = str(max(waits)) if waits else "1"
    if refusals and all(p.code == "rate_limited" for p in refusals):
        return errors.RateLimited(
            "every broker tried is rate limiting this connection",
            headers={"Retry-After": wait},
            extra={"retry_after": int(wait)},
        )
    return errors.BrokerUnavailable(
        "no broker could be reached; nothing was placed", headers={"Retry-After": wait}
    )


async def routed_key_response(session: AsyncSession, order: Order) -> StoredResponse | None:
    """For reconciliation: the answer a route's still-open Idempotency-Key gets once the
    order it waited on is resolved; None when the order was not placed by a route.

    No failover resumes here: the route ends placed or failed.
    """
    routes = RouteRepository.for_system(session)
    route = await routes.route_of_order(order.id)
    if route is None:
        return None
    view = await route_view(session, routes, route)
    if view.route.status != "failed":
        return _final_answer(view, [], explicit=route.selection == "explicit")[0]
    problem: errors.AppError = (
        errors.BrokerRejected(order.reject_reason or "the order was not placed")
        if route.selection == "explicit"
        else errors.RouteFailed(
            "no broker took the order; see route.attempts for each broker's answer"
        )
    )
    body = problem.to_problem() | {
        "order_id": order.id,
        "route": view.route.model_dump(mode="json"),
    }
    return StoredResponse(problem.status, body)


# --- helpers ---------------------------------------------------------------------------------


def _mode(value: str) -> TradingMode:
    return "paper" if value == "paper" else "live"


def _can_ever_trade(account: Account, connection: Connection) -> bool:
    """Whether an account could ever take an order (what decides the default mode)."""
    return account.tier != "C" and account.can_trade and connection.status != "revoked"


def _passed(account: Account, code: str, detail: str) -> PassedOver:
    return PassedOver(account_id=account.id, broker=account.broker_slug, code=code, detail=detail)


def _reason(
    candidates: list[_Candidate], asset_class: AssetClass, has_rule: bool
) -> tuple[DecisionReason, str]:
    if not candidates:
        return "no_eligible_account", "none of your accounts can take this order: see passed_over"
    source = candidates[0].source
    if source == "explicit":
        return "explicit_account", "the account named in the request"
    if source == "rule":
        return "routing_rule", f"the first eligible account of your {asset_class} routing rule"
    if has_rule:
        return (
            "default_order",
            f"no account of your {asset_class} routing rule can take it: the oldest other "
            "eligible account",
        )
    return "default_order", f"no {asset_class} routing rule: the oldest eligible account"


async def _check_at_broker(
    adapter: BrokerAdapter, account_ref: str, body: RoutedOrderCreate
) -> None:
    """The broker's own checks (reads); any failure is a refusal of this candidate."""
    try:
        await check_at_broker(adapter, account_ref, body)
    except errors.AppError:
        raise
    except Exception as exc:
        log.exception("the broker's order check failed unexpectedly")
        raise errors.BrokerUnavailable("the broker's symbol check failed") from exc


async def _send_in_transaction(
    session: AsyncSession, paper: PaperAdapter, account: Account, order: Order
) -> SendResult:
    """Place an attempt on the paper broker inside the route's transaction, in a savepoint.

    A refusal rolls back only this attempt's paper books, and with them its paper account
    lock, before the next candidate's is taken (two routes never hold one account's lock
    while waiting for another's). Nothing outside our database is involved, so every
    refusal is definitive (the paper broker raises only ``Rejected`` kinds). Any other
    failure propagates and the whole route rolls back: nothing placed, the key free.
    """
    try:
        async with session.begin_nested():
            report = await paper.place_order_in(
                session, account.broker_account_ref, order_request_for(order)
            )
    except broker_errors.Rejected as exc:
        return SendResult(None, exc)
    return SendResult(report, None)


def _clip(text: str | None) -> str | None:
    return None if text is None else text[:500]


def _record_skips(
    routes: RouteRepository, route: OrderRoute, skipped: list[_Skip], seq: int, now: datetime
) -> int:
    """Record candidates refused before any order row; returns the next attempt number."""
    for skip in skipped:
        routes.add_attempt(
            RouteAttempt(
                id=new_id("rat"),
                route_id=route.id,
                user_id=route.user_id,
                seq=seq,
                account_id=skip.account_id,
                broker_slug=skip.broker,
                order_id=None,
                outcome="skipped",
                code=skip.error.code,
                detail=_clip(skip.error.detail),
                created_at=now,
                updated_at=now,
            )
        )
        seq += 1
    return seq


async def _begin_attempt(
    session: AsyncSession,
    routes: RouteRepository,
    route: OrderRoute,
    seq: int,
    ready: _Ready,
    order: Order,
    now: datetime,
) -> RouteAttempt:
    """Add the attempt's ``pending_submit`` order row (with its event) and the attempt."""
    OrderRepository.for_user(session, route.user_id).add(order)
    await session.flush()  # the order before the attempt that references it
    attempt = RouteAttempt(
        id=new_id("rat"),
        route_id=route.id,
        user_id=route.user_id,
        seq=seq,
        account_id=ready.account.id,
        broker_slug=ready.account.broker_slug,
        order_id=order.id,
        outcome="pending",
        code=None,
        detail=None,
        created_at=now,
        updated_at=now,
    )
    routes.add_attempt(attempt)
    append_order_event(session, order, now)
    return attempt


def _nothing_ready(plan: _Plan, skipped: list[_Skip], *, explicit: bool) -> errors.AppError:
    """Nothing could be tried (nothing was written): the explicit account's own refusal,
    or for auto a 422 ``no_eligible_account`` (503 when a broker could not be reached, a
    retry may succeed) carrying the decision with every account passed over."""
    if explicit and skipped:
        return skipped[-1].error
    passed = list(plan.decision.passed_over) + [
        PassedOver(
            account_id=s.account_id, broker=s.broker, code=s.error.code, detail=s.error.detail
        )
        for s in skipped
    ]
    decision = plan.decision.model_copy(
        update={
            "account_id": None,
            "reason": "no_eligible_account",
            "detail": "none of your accounts can take this order: see passed_over",
            "candidates": [],
            "passed_over": passed,
        }
    )
    extra = {"decision": decision.model_dump(mode="json")}
    if any(s.error.code in _TRANSIENT_CODES for s in skipped):
        return errors.BrokerUnavailable(
            "no broker could be reached to check the order; nothing was placed",
            extra=extra,
            headers={"Retry-After": "1"},
        )
    return errors.NoEligibleAccount(
        "none of your accounts can take this order: see decision.passed_over", extra=extra
    )
