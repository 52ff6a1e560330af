"""Bodies of the Plaid link flow and webhook routes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.schemas.common import ResponseModel, StrictModel, UTCTimestamp


class LinkTokenOut(ResponseModel):
    """A Plaid Link token for the frontend's Link session (investments product)."""

    link_token: str
    expiration: UTCTimestamp


class PublicTokenExchange(StrictModel):
    """The ``public_token`` Link's ``onSuccess`` handed to the frontend."""

    public_token: str = Field(min_length=1, max_length=512)


class WebhookOut(ResponseModel):
    """What the webhook caused: a refresh of the Item's accounts, a broken connection,
    nothing (a webhook type the gateway does not act on), or no connection has the Item."""

    outcome: Literal["refreshed", "connection_broken", "ignored", "unknown_item"]
