"""A fake SnapTrade API (partner signing, Connection Portal, webhooks) on the paper engine."""

from tests.fakes.runner import serve_asgi
from tests.fakes.snaptrade.server import FakeSnapTrade

__all__ = ["FakeSnapTrade", "serve_asgi"]
