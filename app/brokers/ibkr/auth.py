"""Interactive Brokers through the Client Portal Gateway: the user's own gateway, by URL.

There is no key to hold: the user runs IBKR's Client Portal Gateway and logs in there in a
browser (https://www.interactivebrokers.com/campus/ibkr-api-page/cpapi-v1/#gw-step-one);
the gateway keeps the brokerage session, and anything that can reach it acts for that user.
The connection therefore stores the gateway's base URL (sealed like any credential: it is
the capability to trade), e.g. ``https://localhost:5000/v1/api``.

Because the service itself sends requests to that URL, it is checked before anything is
sent (server-side request forgery): http or https, a host on this deployment's
``ibkr_gateway_hosts`` allow-list, no credentials or query in the URL, and the gateway's
``/v1/api`` path.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from app.brokers import errors
from app.brokers.http import credential_key
from app.security.credentials import Credentials, is_single_line, require_fields

SLUG = "ibkr"
BASE_URL = "base_url"
CREDENTIAL_FIELDS = frozenset({BASE_URL})
API_PATH = "/v1/api"


def normalize_base_url(value: str, allowed_hosts: list[str] | None) -> str:
    """The gateway's base URL, or ValueError naming the rule it breaks. ``allowed_hosts``
    None checks the shape only (the adapter checks the host against the settings)."""
    if not is_single_line(value, 300):
        raise ValueError("base_url is not a URL")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError("base_url must be an http or https URL")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("base_url takes no credentials, query or fragment")
    host = (parts.hostname or "").lower()
    allowed = {h.lower() for h in allowed_hosts or ()}
    if allowed_hosts is not None and host not in allowed:
        raise ValueError(
            f"base_url's host must be one of this deployment's IBKR gateway hosts: "
            f"{', '.join(sorted(allowed)) or 'none configured'}"
        )
    try:
        port = parts.port
    except ValueError:
        raise ValueError("base_url has an invalid port") from None
    path = parts.path.rstrip("/")
    if path != API_PATH:
        raise ValueError(f"base_url must end with the gateway's API path {API_PATH}")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return f"{parts.scheme}://{netloc}{API_PATH}"


def check_credentials(values: Mapping[str, str]) -> Credentials:
    """The connection's credential: the gateway URL, in its normalized form."""
    require_fields(values, CREDENTIAL_FIELDS)
    if not values[BASE_URL].startswith(("http://", "https://")):
        raise ValueError("base_url must be an http or https URL")
    return Credentials({BASE_URL: normalize_base_url(values[BASE_URL], None)})


def base_url(credentials: Credentials | None, allowed_hosts: list[str]) -> str:
    """The stored gateway URL, checked again (the allow-list may have changed since)."""
    if credentials is None or BASE_URL not in credentials:
        raise errors.AuthenticationFailed("no IBKR gateway for this connection", broker=SLUG)
    try:
        return normalize_base_url(credentials[BASE_URL], allowed_hosts)
    except ValueError as exc:
        raise errors.AuthenticationFailed(str(exc), broker=SLUG) from None


def bucket_key(url: str) -> str:
    """IBKR paces per gateway session (and penalizes the caller's IP): keyed by gateway."""
    return credential_key(SLUG, url)
