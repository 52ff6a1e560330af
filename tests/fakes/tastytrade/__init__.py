"""The fake tastytrade server (see ``server.py``) and a way to run it on a localhost port."""

from tests.fakes.runner import serve_asgi
from tests.fakes.tastytrade.server import FakeTastytrade, Faults

__all__ = ["FakeTastytrade", "Faults", "serve_asgi"]
