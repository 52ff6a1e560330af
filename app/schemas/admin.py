"""Ops summaries under /v1/admin: kill-switches in force, audit chain verification."""

from __future__ import annotations

from typing import Literal

from app.schemas.common import ResponseModel, UTCTimestamp
from app.security.audit import Problem as AuditProblem


class KillSwitchOut(ResponseModel):
    variable: str
    value: str
    scope: Literal["all_byob", "broker"]
    broker: str | None


class KillSwitches(ResponseModel):
    """What is switched off right now, read from the process environment at request time."""

    byob_live_disabled: bool
    # Brokers of this deployment whose live BYOB orders are refused (503) right now.
    blocked_brokers: list[str]
    # Brokers of this deployment left out of GET /v1/brokers right now.
    hidden_brokers: list[str]
    # Every switch variable that is on, including ones naming no broker of this deployment.
    switches: list[KillSwitchOut]
    as_of: UTCTimestamp


class AuditChainFailure(ResponseModel):
    """One broken chain: ``first_bad_seq`` names its first entry that fails."""

    chain: str
    entries_checked: int
    head_seq: int | None
    first_bad_seq: int | None
    problem: AuditProblem
    detail: str


class AuditVerification(ResponseModel):
    """Every audit chain checked (one per user, plus the frozen pre-per-user ``global``
    chain). ``first_bad_seq``, ``problem`` and ``chain`` are those of the first broken chain;
    ``failures`` names the first bad entry of each broken chain."""

    ok: bool
    entries_checked: int
    head_seq: int | None
    first_bad_seq: int | None
    problem: AuditProblem | None
    detail: str
    checked_at: UTCTimestamp
    chain: str | None
    chains_checked: int
    failures: list[AuditChainFailure]
