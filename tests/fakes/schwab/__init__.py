"""The fake Schwab server (see ``server.py``) and a way to run it on a localhost port."""

from tests.fakes.runner import serve_asgi
from tests.fakes.schwab.server import FakeSchwab, Faults

__all__ = ["FakeSchwab", "Faults", "serve_asgi"]
