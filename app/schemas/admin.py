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


class AuditVerification(ResponseModel):
    """The whole audit chain checked; ``first_bad_seq`` names the first entry that fails."""

    ok: bool
    entries_checked: int
    head_seq: int | None
    first_bad_seq: int | None
    problem: AuditProblem | None
    detail: str
    checked_at: UTCTimestamp
