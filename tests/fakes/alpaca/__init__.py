"""The fake Alpaca server (see ``server.py``) and a way to run it on a localhost port."""

from tests.fakes.alpaca.server import FakeAlpaca, Faults
from tests.fakes.runner import serve_asgi

__all__ = ["FakeAlpaca", "Faults", "serve_asgi"]
