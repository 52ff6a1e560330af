"""Brokerage gateway: one REST/WebSocket API over the user's own brokerage accounts."""
