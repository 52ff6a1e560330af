"""The fake IBKR Client Portal Gateway (see ``server.py``) and a way to run it locally."""

from tests.fakes.ibkr.server import FakeIbkrGateway, Faults, Question
from tests.fakes.runner import serve_asgi

__all__ = ["FakeIbkrGateway", "Faults", "Question", "serve_asgi"]
