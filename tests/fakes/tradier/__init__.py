"""The fake Tradier server (see ``server.py``) and a way to run it on a localhost port."""

from tests.fakes.runner import serve_asgi
from tests.fakes.tradier.server import FakeTradier, Faults

__all__ = ["FakeTradier", "Faults", "serve_asgi"]
