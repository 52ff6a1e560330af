"""The fake Robinhood Crypto Trading API (see ``server.py``) and a way to run it locally."""

from tests.fakes.robinhood.server import FakeRobinhood, Faults
from tests.fakes.runner import serve_asgi

__all__ = ["FakeRobinhood", "Faults", "serve_asgi"]
