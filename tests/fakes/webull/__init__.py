"""The fake Webull OpenAPI (see ``server.py``) and a way to run it on a localhost port."""

from tests.fakes.runner import serve_asgi
from tests.fakes.webull.server import FakeWebull, Faults

__all__ = ["FakeWebull", "Faults", "serve_asgi"]
