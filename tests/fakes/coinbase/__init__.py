"""The fake Coinbase Advanced Trade server (see ``server.py``) and a way to serve it."""

from tests.fakes.coinbase.server import FakeCoinbase, FakeUser, Faults
from tests.fakes.runner import serve_asgi

__all__ = ["FakeCoinbase", "FakeUser", "Faults", "serve_asgi"]
