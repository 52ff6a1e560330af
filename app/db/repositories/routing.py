"""Queries on ``routing_rules``, ``order_routes`` and ``route_attempts``, scoped to one user."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite

from app.db.models import Order, OrderRoute, RouteAttempt, RoutingRule
from app.db.repositories.scoped import UserScoped
from app.ids import new_id


class RoutingRuleRepository(UserScoped):
    async def all(self) -> Sequence[RoutingRule]:
        stmt = (
            select(RoutingRule)
            .where(RoutingRule.user_id == self.user_id)
            .order_by(RoutingRule.asset_class)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def get(self, asset_class: str) -> RoutingRule | None:
        stmt = select(RoutingRule).where(
            RoutingRule.user_id == self.user_id, RoutingRule.asset_class == asset_class
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def replace(self, rules: Mapping[str, Sequence[str]], now: datetime) -> None:
        """Make the user's rules exactly ``rules`` (asset class -> ordered account ids).

        An upsert per asset class and one delete of the others: two concurrent replaces
        never collide on the (user, asset class) key; the last to commit wins.
        """
        dialect = self.session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        for asset_class, account_ids in rules.items():
            stmt = insert(RoutingRule).values(
                id=new_id("rul"),
                user_id=self.user_id,
                asset_class=asset_class,
                account_ids=list(account_ids),
                created_at=now,
                updated_at=now,
            )
            stmt = stmt.on_conflict_do_update(
                index_elements=["user_id", "asset_class"],
                set_={"account_ids": stmt.excluded.account_ids, "updated_at": now},
            )
            await self.session.execute(stmt)
        stale = delete(RoutingRule).where(RoutingRule.user_id == self.user_id)
        if rules:
            stale = stale.where(RoutingRule.asset_class.not_in(list(rules)))
        await self.session.execute(stale)


class RouteRepository(UserScoped):
    def add(self, route: OrderRoute) -> None:
        if not self.is_system and route.user_id != self.user_id:
            raise PermissionError("route belongs to another user")
        self.session.add(route)

    def add_attempt(self, attempt: RouteAttempt) -> None:
        if not self.is_system and attempt.user_id != self.user_id:
            raise PermissionError("route attempt belongs to another user")
        self.session.add(attempt)

    async def get(self, route_id: str) -> OrderRoute | None:
        stmt = select(OrderRoute).where(OrderRoute.id == route_id)
        if not self.is_system:
            stmt = stmt.where(OrderRoute.user_id == self.user_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def attempts(self, route_id: str) -> list[tuple[RouteAttempt, Order | None]]:
        """The route's attempts in order, each with its order row (None for a skipped one).

        Fresh reads: a stream or reconciliation may have moved the orders meanwhile.
        """
        stmt = (
            select(RouteAttempt, Order)
            .outerjoin(Order, Order.id == RouteAttempt.order_id)
            .where(RouteAttempt.route_id == route_id)
            .order_by(RouteAttempt.seq)
            .execution_options(populate_existing=True)
        )
        if not self.is_system:
            stmt = stmt.where(RouteAttempt.user_id == self.user_id)
        return [(a, o) for a, o in (await self.session.execute(stmt)).all()]

    async def route_of_order(self, order_id: str) -> OrderRoute | None:
        """The route an order was placed by, or None for an order placed on its account."""
        stmt = (
            select(OrderRoute)
            .join(RouteAttempt, RouteAttempt.route_id == OrderRoute.id)
            .where(RouteAttempt.order_id == order_id)
        )
        if not self.is_system:
            stmt = stmt.where(OrderRoute.user_id == self.user_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()
