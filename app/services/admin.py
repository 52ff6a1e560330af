"""Ops use cases behind /v1/admin and the CLI: kill-switch status, audit chain verification."""

from __future__ import annotations

from app.observability import AUDIT_VERIFICATIONS
from app.schemas.admin import AuditChainFailure, AuditVerification, KillSwitches, KillSwitchOut
from app.services.clock import utcnow
from app.services.context import ServiceContext
from app.services.kill_switches import LIVE_BYOB_TIERS
from app.services.kill_switches import KillSwitches as Switches


class AdminService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    def kill_switches(self) -> KillSwitches:
        """The switches in force now (the environment is read on every call)."""
        switches = Switches.from_environ()
        specs = self._ctx.registry.all()
        blocked = [
            s.slug
            for s in specs
            if s.tier.value in LIVE_BYOB_TIERS
            and switches.blocks_live_orders(slug=s.slug, ownership="byob", tier=s.tier.value)
        ]
        hidden = [s.slug for s in specs if switches.hides_broker(slug=s.slug, tier=s.tier.value)]
        return KillSwitches(
            byob_live_disabled=switches.live_disabled,
            blocked_brokers=sorted(blocked),
            hidden_brokers=sorted(hidden),
            switches=[
                KillSwitchOut(
                    variable=s.variable,
                    value=s.value,
                    scope="all_byob" if s.slug is None else "broker",
                    broker=s.slug,
                )
                for s in switches.switches
            ],
            as_of=utcnow(),
        )

    async def verify_audit(self) -> AuditVerification:
        """Check the whole audit chain; see ``AuditChain.verify``."""
        result = await self._ctx.audit.verify(self._ctx.sessionmaker)
        AUDIT_VERIFICATIONS.labels(outcome="ok" if result.ok else "broken").inc()
        return AuditVerification(
            ok=result.ok,
            entries_checked=result.entries_checked,
            head_seq=result.head_seq,
            first_bad_seq=result.first_bad_seq,
            problem=result.problem,
            detail=result.detail,
            checked_at=utcnow(),
            chain=result.chain,
            chains_checked=result.chains_checked,
            failures=[
                AuditChainFailure(
                    chain=f.chain,
                    entries_checked=f.entries_checked,
                    head_seq=f.head_seq,
                    first_bad_seq=f.first_bad_seq,
                    problem=f.problem or "chain_broken",
                    detail=f.detail,
                )
                for f in result.failures
            ],
        )
