"""The fake Plaid server (see ``server.py``) and a way to run it on a localhost port."""

from tests.fakes.plaid.server import FakePlaid, Faults
from tests.fakes.runner import serve_asgi

__all__ = ["FakePlaid", "Faults", "serve_asgi"]
