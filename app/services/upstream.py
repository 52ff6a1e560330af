"""Upstream order streams: each live connection's broker stream feeds ``OrderUpdateIngest``.

One task per account of every usable connection whose broker pushes order updates (the
registry's ``capabilities.order_stream``; the paper broker reports through its engine, not
here), or one per connection where the broker's one stream serves every account of the
credential and allows only one at a time (``BrokerSpec.shared_order_stream``: Tradier).
The adapter's stream reconnects and catches up by itself; this supervisor restarts a
stream that fails outright, stops it when its connection is no longer usable, and marks
the connection ``broken`` (with a ``connection.broken`` event) when the broker refuses the
credential.

With several instances, each account's stream runs on exactly one of them: a stream starts
only under a cluster-wide lease (``app.db.leases``: a Postgres advisory lock held on a
dedicated connection). If that connection dies, every lease is lost at once, this instance
stops its streams, and whichever instance takes a lease next resumes the stream (the
adapter's REST catch-up fills any gap).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from app import errors
from app.brokers import errors as broker_errors
from app.brokers.base import OrderUpdate, Support, SupportsSharedOrderStream, Tier
from app.db.leases import Leases, leases_for
from app.db.models import Account, Connection
from app.db.repositories.connections import ConnectionRepository
from app.services.clock import utcnow
from app.services.connections import append_connection_event
from app.services.context import ServiceContext
from app.services.order_updates import OrderUpdateIngest

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Stream:
    connection_id: str
    user_id: str
    account_ids: tuple[str, ...]  # one, or every account of a shared stream
    account_refs: tuple[str, ...]
    broker_slug: str
    shared: bool


class UpstreamStreams:
    def __init__(
        self, ctx: ServiceContext, *, restart_delay: float = 5.0, leases: Leases | None = None
    ) -> None:
        self._ctx = ctx
        self._restart_delay = restart_delay
        # One stream per stream key (``_stream_key``): platform connections of many users all
        # point at the platform's one broker account and share one stream; the ingest matches
        # updates across every account row of that broker account.
        self._tasks: dict[str, asyncio.Task[None]] = {}  # stream key -> its task
        self._streams: dict[str, _Stream] = {}
        self._leases = leases if leases is not None else leases_for(ctx.sessionmaker.kw["bind"])

    @property
    def running(self) -> frozenset[str]:
        """Account ids whose stream task is alive."""
        return frozenset(
            account_id
            for key, t in self._tasks.items()
            if not t.done()
            for account_id in self._streams[key].account_ids
        )

    def _streaming_slugs(self) -> list[str]:
        return [
            spec.slug
            for spec in self._ctx.registry.all()
            if spec.tier is not Tier.paper
            and spec.capabilities.order_stream is not Support.unsupported
            and spec.configured(self._ctx.settings)
        ]

    async def sync(self) -> None:
        """Start streams for new usable accounts we can lease; stop those no longer usable.

        An account whose lease another instance holds is skipped; it is tried again at the
        next sync, so a stream moves here when its holder stops or dies.
        """
        if not await self._leases.check():
            await self._stop_all()
        async with self._ctx.sessionmaker() as session:
            rows = await ConnectionRepository.for_system(session).usable_accounts(
                self._streaming_slugs()
            )
        shared_slugs = {s.slug for s in self._ctx.registry.all() if s.shared_order_stream}
        by_connection: dict[str, list[Account]] = {}
        wanted: dict[str, _Stream] = {}
        for connection, account in sorted(rows, key=lambda row: row[1].id):
            if connection.broker_slug in shared_slugs:
                by_connection.setdefault(connection.id, []).append(account)
                continue
            wanted.setdefault(
                _stream_key(connection, account),
                _Stream(
                    connection_id=connection.id,
                    user_id=connection.user_id,
                    account_ids=(account.id,),
                    account_refs=(account.broker_account_ref,),
                    broker_slug=account.broker_slug,
                    shared=False,
                ),
            )
        connections = {connection.id: connection for connection, _ in rows}
        for connection_id, accounts in by_connection.items():
            connection = connections[connection_id]
            stream = _Stream(
                connection_id=connection.id,
                user_id=connection.user_id,
                account_ids=tuple(a.id for a in accounts),
                account_refs=tuple(a.broker_account_ref for a in accounts),
                broker_slug=connection.broker_slug,
                shared=True,
            )
            # The accounts are part of the key: when they change, the stream restarts.
            wanted[_shared_stream_key(connection, stream.account_refs)] = stream
        for key in list(self._tasks):
            task = self._tasks.get(key)
            if task is None:
                continue  # stopped meanwhile (stop_connection)
            if key not in wanted or task.done():
                await self._stop(key)
        for key, stream in wanted.items():
            if key not in self._tasks and await self._leases.acquire(_lease(key)):
                self._streams[key] = stream
                self._tasks[key] = asyncio.create_task(
                    self._supervise(stream),
                    name=f"upstream-{stream.broker_slug}-{stream.account_ids[0]}",
                )

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    await self.sync()
                except Exception:
                    log.exception("upstream stream sync failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=interval)
        finally:
            await self.close()

    async def stop_connection(self, connection_id: str) -> int:
        """Stop this instance's streams of one connection now (it was revoked).

        Returns how many stopped. Another instance's streams of it stop at that instance's
        next ``sync``; meanwhile a restart there is refused by the vault.
        """
        keys = [k for k, s in self._streams.items() if s.connection_id == connection_id]
        for key in keys:
            await self._stop(key)
        return len(keys)

    async def _stop(self, key: str) -> None:
        task = self._tasks.pop(key, None)
        self._streams.pop(key, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._leases.release(_lease(key))

    async def _stop_all(self) -> None:
        tasks, self._tasks = list(self._tasks.values()), {}
        self._streams = {}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        await self._stop_all()
        await self._leases.close()

    async def _supervise(self, stream: _Stream) -> None:
        renewed = False  # the access token was force-refreshed after the last refusal
        while True:
            try:
                await self._consume(stream)
                return  # the adapter has no stream
            except broker_errors.AuthenticationFailed:
                outcome = "give_up" if renewed else await self._renew_token(stream)
                if outcome == "renewed":
                    renewed = True
                    continue
                if outcome == "give_up":
                    await self._mark_broken(stream.connection_id, stream.user_id)
                    return
                # "later": the refresh itself failed for now; retry after the delay.
            except errors.ConnectionBroken:
                return  # revoked or missing credential: nothing to stream
            except asyncio.CancelledError:
                raise
            except Exception:
                renewed = False
                log.exception(
                    "upstream order stream failed; restarting",
                    extra={"account_ids": stream.account_ids, "broker": stream.broker_slug},
                )
            await asyncio.sleep(self._restart_delay)

    async def _renew_token(self, stream: _Stream) -> Literal["renewed", "later", "give_up"]:
        """An OAuth stream was refused: its access token may have been dropped early.

        Forces one refresh: "renewed" (restart the stream now), "later" (the refresh failed
        for now, e.g. the broker is down: retry after the delay, do not give up) or
        "give_up" (not an OAuth broker, or the grant is gone; the refresher has already
        marked the connection broken then).
        """
        spec = self._ctx.registry.get(stream.broker_slug)
        if spec is None or spec.oauth is None or self._ctx.tokens is None:
            return "give_up"
        try:
            await self._ctx.tokens.ensure_fresh(
                user_id=stream.user_id, connection_id=stream.connection_id, force=True
            )
        except errors.ConnectionBroken:
            return "give_up"
        except errors.AppError:
            return "later"
        return "renewed"

    async def _consume(self, stream: _Stream) -> None:
        await self._ctx.with_fresh_tokens(lambda: self._consume_once(stream))

    async def _consume_once(self, stream: _Stream) -> None:
        async with self._ctx.sessionmaker() as session:
            connection = await ConnectionRepository.for_user(session, stream.user_id).get(
                stream.connection_id
            )
            if connection is None:
                return
            adapter = await self._ctx.adapter_for(session, connection, for_order=False)
        try:
            updates: AsyncIterator[OrderUpdate] | None
            if stream.shared and isinstance(adapter, SupportsSharedOrderStream):
                updates = adapter.stream_accounts_order_updates(stream.account_refs)
            else:
                updates = adapter.stream_order_updates(stream.account_refs[0])
            if updates is None:
                return
            ingest = OrderUpdateIngest(self._ctx.sessionmaker, stream.broker_slug)
            async for update in updates:
                await ingest(update)
        finally:
            await adapter.close()

    async def _mark_broken(self, connection_id: str, user_id: str) -> None:
        async with self._ctx.sessionmaker() as session:
            connection: Connection | None = await ConnectionRepository.for_user(
                session, user_id
            ).get(connection_id, for_update=True)
            if connection is None or connection.status not in ("active", "expiring"):
                return
            now = utcnow()
            connection.status = "broken"
            connection.updated_at = now
            connection.last_refresh_outcome = "the broker refused the credential"
            append_connection_event(session, connection)
            await session.commit()
        log.warning(
            "the broker refused a connection's credential; marked broken",
            extra={"connection_id": connection_id},
        )


def _stream_key(connection: Connection, account: Account) -> str:
    """Platform connections of every user share the platform's one broker account and its one
    credential: one stream serves them all. A user's own connection streams by itself."""
    owner = "platform" if connection.ownership == "platform" else connection.id
    return f"{account.broker_slug}:{account.broker_account_ref}:{owner}"


def _shared_stream_key(connection: Connection, account_refs: tuple[str, ...]) -> str:
    """One stream for every account of one connection's credential."""
    return f"{connection.broker_slug}:{','.join(sorted(account_refs))}:{connection.id}"


def _lease(stream_key: str) -> str:
    return f"upstream-stream:{stream_key}"
