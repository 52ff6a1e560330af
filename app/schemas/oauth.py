"""The OAuth connect flow's response body."""

from __future__ import annotations

from pydantic import Field

from app.schemas.common import ResponseModel, UTCTimestamp


class OAuthAuthorization(ResponseModel):
    authorization_url: str = Field(
        description="Send the browser here (top-level navigation) to authorize at the broker"
    )
    expires_at: UTCTimestamp = Field(description="The flow must finish before this time")
