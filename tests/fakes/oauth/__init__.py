"""The fake OAuth 2.0 authorization server (see ``server.py``)."""

from tests.fakes.oauth.server import FakeAuthorizationServer, Faults

__all__ = ["FakeAuthorizationServer", "Faults"]
