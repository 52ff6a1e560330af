"""Opaque identifiers: a short type prefix and 128 random bits."""

from __future__ import annotations

import uuid


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def client_order_id_for(order_id: str) -> str:
    """Our client order id, derived from the order's own id so a retry always sends the same.

    34 characters: within every broker's limit (Webull's 40 is the tightest).
    """
    return "bg" + order_id.split("_", 1)[1]
