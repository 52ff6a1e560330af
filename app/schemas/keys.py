"""Key-rotation progress for operators (``GET /v1/admin/keys``)."""

from __future__ import annotations

from pydantic import Field

from app.schemas.common import ResponseModel


class KeyVersionCount(ResponseModel):
    version: int
    tokens: int


class RewrapRunOut(ResponseModel):
    primary_version: int
    rewrapped: int
    batches: int
    remaining: int
    failed: int = Field(description="Tokens whose wrap did not authenticate (ids in the log).")
    stopped: bool = Field(description="The run was interrupted (shutdown, lost lease).")
    seconds: float = Field(description="How long the run took.")


class KeyStatusOut(ResponseModel):
    primary_version: int = Field(description="New and re-wrapped tokens go under this version.")
    min_decryption_version: int | None = Field(
        description="Versions below it are retired (null when the key provider has no such"
        " setting)."
    )
    tokens_by_version: list[KeyVersionCount] = Field(
        description="Token rows per key version, revoked ones included."
    )
    pending_rewrap: int = Field(
        description="Tokens still under a version older than the primary one: the background"
        " re-wrap moves them; `brokerage keys retire` waits for 0."
    )
    rewrap_running_here: bool = Field(
        description="This instance runs the re-wrap now (one instance at a time does)."
    )
    last_run_here: RewrapRunOut | None
