"""One portfolio across every account of a user (the seed's ``PortfolioAggregator``).

Every account is read at once (balances and positions), each under its broker's timeout
(``Settings.portfolio_timeout_for``). The answer waits for no account past its timeout: a
read still running at its deadline is cancelled and left to finish its cancellation on its
own, and the account is reported as ``timeout``. Accounts that cannot be read are never
dropped: they are listed with a stable reason code and their last good read (a snapshot
kept in ``portfolio_snapshots``), whose numbers are not part of any total.

Skipping: after an account timed out or its broker was unavailable, later answers do not
ask that broker again for ``portfolio_skip_seconds`` (they report the same reason with
``attempted: false``); after that, one background read per period checks whether it is back
and refreshes the snapshot. Without this, every answer would wait the full timeout for a
broker that is known to be slow. The skip state is per process (each instance learns on its
own); the snapshots are shared through the database.

What is not under a broker's timeout: the database (the account list, one query for every
credential, then one snapshot upsert) and the vault's decryption. A database failure fails
the request (500); a credential that cannot be read is that account's ``connection_broken``.

Aggregation (``aggregate``, pure): totals and per-symbol rows are keyed by currency and
mode. Different currencies are never added (no conversion rates are involved at all), and
paper money is never added to real money. Each per-symbol row is the exact sum of the
per-account breakdown beside it; positions are never netted across accounts or brokers.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow, Rounded

from app import errors
from app.brokers import errors as broker_errors
from app.brokers.base import AssetClass, Balances, Position
from app.brokers.environments import SANDBOX_LABEL, SANDBOX_MODE
from app.brokers.rows import is_partial
from app.db.models import Account, Connection, PortfolioSnapshot
from app.db.repositories.connections import AccountRepository
from app.db.repositories.portfolio import PortfolioSnapshotRepository
from app.schemas.options import ContractOut
from app.schemas.portfolio import (
    AccountHolding,
    LastGood,
    PortfolioAccount,
    PortfolioOut,
    PortfolioPosition,
    PortfolioTotal,
    SnapshotPosition,
    UnavailableAccount,
)
from app.security.credentials import Credentials
from app.services.accounts import position_contract
from app.services.clock import utcnow
from app.services.context import ServiceContext

log = logging.getLogger(__name__)

LABELS = {"A": "Live", "B": "Live", "C": "Linked", "paper": "Paper"}
# Failures worth not asking again for a while: they cost the caller time, not just an error.
SKIPPABLE = frozenset({"timeout", "broker_unavailable", "rate_limited"})
MODE_ORDER = {"live": 0, "sandbox": 1, "paper": 2}
ZERO = Decimal(0)
# Sums must be exact: a Decimal context that would rather raise than round.
_EXACT = Context(prec=400, traps=[Inexact, Rounded, InvalidOperation, Overflow])


def exact_sum(values: Iterable[Decimal]) -> Decimal:
    """The exact sum; raises ``decimal.Inexact``/``Rounded`` rather than round."""
    total = ZERO
    for value in values:
        total = _EXACT.add(total, value)
    return total


@dataclass(frozen=True, slots=True)
class AccountRef:
    """What the portfolio says about an account whether or not it could be read."""

    account_id: str
    connection_id: str
    broker: str
    tier: str
    mode: str

    @property
    def label(self) -> str:
        return SANDBOX_LABEL if self.mode == SANDBOX_MODE else LABELS[self.tier]

    @classmethod
    def of(cls, account: Account) -> AccountRef:
        return cls(
            account_id=account.id,
            connection_id=account.connection_id,
            broker=account.broker_slug,
            tier=account.tier,
            mode=account.mode,
        )


@dataclass(frozen=True, slots=True)
class AccountRead:
    ref: AccountRef
    balances: Balances
    positions: Sequence[Position]
    taken_at: datetime

    @property
    def currency(self) -> str:
        return self.balances.currency.upper()


@dataclass(frozen=True, slots=True)
class AccountFailure:
    ref: AccountRef
    reason: str
    detail: str
    attempted: bool = True


Outcome = AccountRead | AccountFailure
Job = tuple[AccountRef, Account, Connection, Credentials | None]


@dataclass(slots=True)
class _Skip:
    reason: str
    detail: str
    check_after: float  # event-loop time


def _failure_from(ref: AccountRef, exc: BaseException) -> AccountFailure:
    """Map why a read failed to a stable reason code; the detail never holds credentials."""
    if isinstance(exc, BaseExceptionGroup):  # from the TaskGroup reading balances/positions
        first = next((e for e in exc.exceptions if isinstance(e, Exception)), None)
        if first is not None:
            return _failure_from(ref, first)
    match exc:
        case broker_errors.RateLimitExceeded():
            return AccountFailure(ref, "rate_limited", exc.reason)
        case broker_errors.Transient():
            return AccountFailure(ref, "broker_unavailable", exc.reason)
        case broker_errors.AuthenticationFailed():
            return AccountFailure(
                ref, "connection_broken", f"the broker refused the credentials ({exc.reason})"
            )
        case broker_errors.UnknownBrokerValue():
            log.error(
                "portfolio read got a value the mapping does not know",
                extra={"broker": ref.broker, "account_id": ref.account_id, "reason": exc.reason},
            )
            return AccountFailure(ref, "broker_error", exc.reason)
        case broker_errors.BrokerError():
            return AccountFailure(ref, "broker_error", exc.reason)
        case errors.ConnectionBroken():  # the vault: missing, revoked or unreadable credential
            return AccountFailure(ref, "connection_broken", exc.detail)
        case _:
            log.error(
                "portfolio read failed unexpectedly",
                exc_info=exc,
                extra={"broker": ref.broker, "account_id": ref.account_id},
            )
            return AccountFailure(ref, "internal_error", "the account could not be read")


def _timeout_failure(ref: AccountRef, seconds: float) -> AccountFailure:
    return AccountFailure(ref, "timeout", f"the broker did not answer within {seconds:g} s")


def snapshot_of(read: AccountRead, user_id: str) -> PortfolioSnapshot:
    return PortfolioSnapshot(
        account_id=read.ref.account_id,
        user_id=user_id,
        currency=read.currency,
        cash=read.balances.cash,
        equity=read.balances.equity,
        buying_power=read.balances.buying_power,
        positions=[
            {
                "symbol": p.symbol,
                "asset_class": p.asset_class.value,
                "quantity": format(p.quantity, "f"),
                "avg_cost": format(p.avg_cost, "f"),
                "current_price": format(p.current_price, "f"),
                "market_value": format(p.market_value, "f"),
                "unrealized_pl": format(p.unrealized_pl, "f"),
            }
            for p in read.positions
        ],
        taken_at=read.taken_at,
    )


def _last_good(snapshot: PortfolioSnapshot | None, now: datetime) -> LastGood | None:
    if snapshot is None:
        return None
    age = max(0, math.floor((now - snapshot.taken_at).total_seconds()))
    return LastGood(
        as_of=snapshot.taken_at,
        age_seconds=age,
        currency=snapshot.currency,
        cash=snapshot.cash,
        equity=snapshot.equity,
        buying_power=snapshot.buying_power,
        positions=[
            SnapshotPosition(
                symbol=p["symbol"],
                asset_class=AssetClass(p["asset_class"]),
                quantity=Decimal(p["quantity"]),
                avg_cost=Decimal(p["avg_cost"]),
                current_price=Decimal(p["current_price"]),
                market_value=Decimal(p["market_value"]),
                unrealized_pl=Decimal(p["unrealized_pl"]),
            )
            for p in snapshot.positions
        ],
    )


def aggregate(
    reads: Sequence[AccountRead],
    failures: Sequence[AccountFailure],
    last_good: dict[str, PortfolioSnapshot],
    now: datetime,
) -> PortfolioOut:
    """Build the answer from what was read. Pure: no I/O, no clock.

    Accounts keep the order given (the caller passes them oldest first). Raises
    ``decimal.Inexact`` rather than round a sum (not reachable with broker-sized numbers).
    """
    totals: dict[tuple[str, str], list[AccountRead]] = {}
    holdings: dict[tuple[str, str, str, AssetClass, str], list[tuple[AccountRead, Position]]] = {}
    for read in reads:
        totals.setdefault((read.ref.mode, read.currency), []).append(read)
        for position in read.positions:
            # Options: long and short holdings of a contract are separate rows, never netted.
            side = ""
            if position.asset_class is AssetClass.option:
                side = "short" if position.quantity < 0 else "long"
            key = (read.ref.mode, read.currency, position.symbol, position.asset_class, side)
            holdings.setdefault(key, []).append((read, position))

    def mode_first(key: tuple[str, ...]) -> tuple[int, tuple[str, ...]]:
        return MODE_ORDER.get(key[0], 9), key[1:]

    return PortfolioOut(
        as_of=now,
        complete=not failures,
        totals=[
            PortfolioTotal(
                currency=currency,
                mode=mode,  # type: ignore[arg-type]
                equity=exact_sum(r.balances.equity for r in group),
                cash=exact_sum(r.balances.cash for r in group),
                market_value=exact_sum(p.market_value for r in group for p in r.positions),
                accounts=len(group),
            )
            for (mode, currency), group in sorted(totals.items(), key=lambda kv: mode_first(kv[0]))
        ],
        positions=[
            PortfolioPosition(
                symbol=symbol,
                asset_class=asset_class,
                currency=currency,
                mode=mode,  # type: ignore[arg-type]
                quantity=exact_sum(p.quantity for _, p in group),
                market_value=exact_sum(p.market_value for _, p in group),
                accounts=[
                    AccountHolding(
                        account_id=read.ref.account_id,
                        broker=read.ref.broker,
                        label=read.ref.label,  # type: ignore[arg-type]
                        quantity=p.quantity,
                        avg_cost=p.avg_cost,
                        current_price=p.current_price,
                        market_value=p.market_value,
                        unrealized_pl=p.unrealized_pl,
                        as_of=p.as_of,
                    )
                    for read, p in group
                ],
                position_side=side or None,  # type: ignore[arg-type]
                contract=_contract_out(group[0][1]),
            )
            for (mode, currency, symbol, asset_class, side), group in sorted(
                holdings.items(), key=lambda kv: mode_first(kv[0])
            )
        ],
        accounts=[
            PortfolioAccount(
                account_id=r.ref.account_id,
                connection_id=r.ref.connection_id,
                broker=r.ref.broker,
                tier=r.ref.tier,  # type: ignore[arg-type]
                label=r.ref.label,  # type: ignore[arg-type]
                mode=r.ref.mode,  # type: ignore[arg-type]
                currency=r.currency,
                cash=r.balances.cash,
                equity=r.balances.equity,
                buying_power=r.balances.buying_power,
                positions=len(r.positions),
                as_of=r.taken_at,
                partial=is_partial(r.positions),
            )
            for r in reads
        ],
        unavailable=[
            UnavailableAccount(
                account_id=f.ref.account_id,
                connection_id=f.ref.connection_id,
                broker=f.ref.broker,
                tier=f.ref.tier,  # type: ignore[arg-type]
                label=f.ref.label,  # type: ignore[arg-type]
                mode=f.ref.mode,  # type: ignore[arg-type]
                reason=f.reason,  # type: ignore[arg-type]
                detail=f.detail,
                attempted=f.attempted,
                last_good=_last_good(last_good.get(f.ref.account_id), now),
            )
            for f in failures
        ],
    )


class PortfolioService:
    """``GET /v1/portfolio``; owns the per-process skip state and its background reads."""

    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self._skips: dict[str, _Skip] = {}
        self._checking: set[str] = set()
        self._background: set[asyncio.Task[object]] = set()

    async def portfolio(self, *, user_id: str) -> PortfolioOut:
        """Read every account of the user at once and aggregate what answered in time.

        Fails only when the database does: broker failures become ``unavailable`` entries.
        """
        loop = asyncio.get_running_loop()
        planned: dict[str, Outcome | None] = {}
        to_read: list[Job] = []
        async with self._ctx.sessionmaker() as session:
            rows = await AccountRepository.for_user(session, user_id).all_with_connections()
            candidates: list[tuple[AccountRef, Account, Connection]] = []
            for account, connection in rows:
                ref = AccountRef.of(account)
                early = self._precheck(ref, connection)
                if early is None:
                    skip = self._skips.get(ref.account_id)
                    if skip is not None:
                        early = AccountFailure(ref, skip.reason, skip.detail, attempted=False)
                        if loop.time() >= skip.check_after:
                            self._check_in_background(user_id, ref, account, connection)
                planned[ref.account_id] = early
                if early is None:
                    candidates.append((ref, account, connection))
            # One query for every credential not in the cache (not one session per account).
            credentials = await self._ctx.vault.credentials_for_read_many(
                session,
                user_id=user_id,
                connection_ids=sorted(
                    {c.id for _, _, c in candidates if self._needs_credentials(c)}
                ),
                versions={c.id: c.credential_version for _, _, c in candidates},
            )
        for ref, account, connection in candidates:
            found = credentials.get(connection.id)
            if isinstance(found, errors.ConnectionBroken):
                planned[ref.account_id] = _failure_from(ref, found)
            else:
                to_read.append((ref, account, connection, found))
        for outcome in await self._read_all(to_read):
            planned[outcome.ref.account_id] = outcome
        outcomes = [o for o in planned.values() if o is not None]
        reads = [o for o in outcomes if isinstance(o, AccountRead)]
        failures = [o for o in outcomes if isinstance(o, AccountFailure)]
        async with self._ctx.sessionmaker() as session:
            repo = PortfolioSnapshotRepository.for_user(session, user_id)
            await repo.save([snapshot_of(r, user_id) for r in reads])
            snapshots = await repo.for_accounts([f.ref.account_id for f in failures])
            await session.commit()
        return aggregate(reads, failures, snapshots, utcnow())

    def _precheck(self, ref: AccountRef, connection: Connection) -> AccountFailure | None:
        """Accounts that are not worth asking the broker about, and why."""
        if connection.status == "revoked":
            return AccountFailure(ref, "connection_revoked", "the connection was disconnected")
        if connection.status == "broken":
            return AccountFailure(ref, "connection_broken", "the connection needs reconnecting")
        if self._ctx.registry.get(connection.broker_slug) is None:
            return AccountFailure(
                ref,
                "broker_not_available",
                f"the broker '{connection.broker_slug}' is not available on this deployment",
            )
        return None

    def _needs_credentials(self, connection: Connection) -> bool:
        return self._ctx.spec_for(connection).token_tier is not None

    async def _read_one(
        self,
        ref: AccountRef,
        account: Account,
        connection: Connection,
        credentials: Credentials | None,
    ) -> Outcome:
        """Balances and positions of one account, concurrently; failures become outcomes."""
        try:
            adapter = self._ctx.build_adapter(connection, credentials)
            try:
                async with asyncio.TaskGroup() as group:
                    balances = group.create_task(adapter.get_balances(account.broker_account_ref))
                    positions = group.create_task(adapter.get_positions(account.broker_account_ref))
            finally:
                await adapter.close()
        except Exception as exc:  # ExceptionGroup included; CancelledError is not an Exception
            return _failure_from(ref, exc)
        return AccountRead(ref, balances.result(), positions.result(), utcnow())

    async def _read_all(self, jobs: Sequence[Job]) -> list[Outcome]:
        """Run every read at once; each gets its broker's timeout, then it is cancelled.

        A cancelled read is not awaited: its task is kept only so it is not garbage
        collected mid-cancellation, and the answer goes out at once.
        """
        if not jobs:
            return []
        loop = asyncio.get_running_loop()
        started = loop.time()
        settings = self._ctx.settings
        tasks: dict[asyncio.Task[Outcome], tuple[AccountRef, float]] = {}
        for ref, account, connection, credentials in jobs:
            task = asyncio.create_task(self._read_one(ref, account, connection, credentials))
            tasks[task] = (ref, settings.portfolio_timeout_for(ref.broker))
        outcomes: list[Outcome] = []
        pending = set(tasks)
        try:
            while pending:
                now = loop.time()
                for task in [t for t in pending if started + tasks[t][1] <= now]:
                    pending.discard(task)
                    self._abandon(task)
                    ref, seconds = tasks[task]
                    outcomes.append(_timeout_failure(ref, seconds))
                if not pending:
                    break
                wait = min(started + tasks[t][1] for t in pending) - now
                done, pending = await asyncio.wait(
                    pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                outcomes.extend(task.result() for task in done)
        finally:
            for task in pending:  # the request itself was cancelled
                self._abandon(task)
        for outcome in outcomes:
            self._learn(outcome, loop.time())
        return outcomes

    def _learn(self, outcome: Outcome, now: float) -> None:
        account_id = outcome.ref.account_id
        if isinstance(outcome, AccountFailure) and outcome.reason in SKIPPABLE:
            self._skips[account_id] = _Skip(
                outcome.reason, outcome.detail, now + self._ctx.settings.portfolio_skip_seconds
            )
        else:
            self._skips.pop(account_id, None)

    def _abandon(self, task: asyncio.Task[Outcome]) -> None:
        task.cancel()
        self._keep(task)

    def _keep(self, task: asyncio.Task[object]) -> None:
        self._background.add(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[object]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("portfolio background read failed", exc_info=task.exception())

    def _check_in_background(
        self, user_id: str, ref: AccountRef, account: Account, connection: Connection
    ) -> None:
        if ref.account_id in self._checking:
            return
        self._checking.add(ref.account_id)
        self._keep(asyncio.create_task(self._check(user_id, ref, account, connection)))

    async def _check(
        self, user_id: str, ref: AccountRef, account: Account, connection: Connection
    ) -> None:
        """One read of a skipped account, off the request path.

        It may take longer than the portfolio timeout (up to the broker read timeout): a
        slow but working broker still refreshes the snapshot. The skip ends only when the
        read came back within the portfolio timeout.
        """
        loop = asyncio.get_running_loop()
        budget = self._ctx.settings.portfolio_timeout_for(ref.broker)
        started = loop.time()
        try:
            limit = max(budget, self._ctx.settings.broker_read_timeout_seconds)
            try:
                async with asyncio.timeout(limit):
                    credentials = None
                    if self._needs_credentials(connection):
                        async with self._ctx.sessionmaker() as session:
                            credentials = await self._ctx.vault.credentials_for_read(
                                session, user_id=user_id, connection_id=connection.id
                            )
                    outcome = await self._read_one(ref, account, connection, credentials)
            except errors.ConnectionBroken as exc:
                outcome = _failure_from(ref, exc)
            except TimeoutError:
                outcome = _timeout_failure(ref, limit)
            elapsed = loop.time() - started
            if isinstance(outcome, AccountRead):
                async with self._ctx.sessionmaker() as session:
                    await PortfolioSnapshotRepository.for_user(session, user_id).save(
                        [snapshot_of(outcome, user_id)]
                    )
                    await session.commit()
                if elapsed > budget:
                    outcome = _timeout_failure(ref, budget)
            self._learn(outcome, loop.time())
        finally:
            self._checking.discard(ref.account_id)

    async def settle(self) -> None:
        """Wait until the background reads and cancellations in flight have finished."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel background work (app shutdown)."""
        for task in list(self._background):
            task.cancel()
        await self.settle()


def _contract_out(position: Position) -> ContractOut | None:
    contract = position_contract(position)
    return ContractOut.of(contract) if contract is not None else None
