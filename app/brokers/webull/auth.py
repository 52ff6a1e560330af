"""Webull OpenAPI authentication: HMAC-signed requests plus an app-confirmed access token.

Signing (the official SDK, PyPI ``webull-openapi-python-sdk`` 3.0.4,
``webull/core/auth/composer/default_signature_composer.py`` and
``webull/core/auth/algorithm/sha_hmac256_new.py``; the 3.x composer signs every request with
HMAC-SHA256 whatever the host, where 2.x used HMAC-SHA1 with an MD5 body digest):

* headers ``x-app-key``, ``x-timestamp`` (``%Y-%m-%dT%H:%M:%SZ``, UTC),
  ``x-signature-version`` ``1.0``, ``x-signature-algorithm`` ``HMAC-SHA256``,
  ``x-signature-nonce`` (unique per request) and ``x-signature``;
* string to sign: the path, ``&``, the sorted ``key=value`` pairs (joined by ``&``) of those
  five headers lower-cased, ``host``, and the query parameters (raw values), then, when
  there is a body, ``&`` and the upper-case hex SHA-256 of the body as sent (compact JSON);
  the whole string percent-encoded with no safe characters;
* signature: base64 HMAC-SHA256 keyed with ``app_secret + "&"``.

The developer pages still describe the HMAC-SHA1 variant
(https://developer.webull.com/apis/docs/authentication/overview/ "e.g. HMAC-SHA1"); the
algorithm is named in ``x-signature-algorithm``, so the fake verifies either.

Access token (https://developer.webull.com/apis/docs/authentication/token; paths from the 3.x
SDK's ``webull/core/http/initializer/token/bean/*``): created by ``POST /auth/tokens/create``
with status ``PENDING``; the user enters the SMS code in the Webull app and the status
becomes ``NORMAL`` (``POST /auth/tokens/check`` with ``{"token"}``); ``EXPIRED`` when not
verified in time, ``INVALID`` when unknown or unused. It lasts 15 days by default and is
sent as ``x-access-token``. Accounts without two-factor authentication get a ``NORMAL``
token at once (the SDK first asks ``GET /openapi/config`` whether ``token_check_enabled``).
It is renewed before it expires by ``POST /openapi/auth/token/refresh`` with ``{"token"}``
(3.0.4 ``refresh_token_request.py`` keeps that path).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from urllib.parse import quote

import httpx

from app.brokers import errors
from app.brokers.http import credential_key
from app.security.credentials import Credentials, is_single_line, require_fields

SLUG = "webull"
APP_KEY = "app_key"
APP_SECRET = "app_secret"  # noqa: S105 - a field name, not a secret
ACCESS_TOKEN = "access_token"  # noqa: S105 - a field name
TOKEN_STATUS = "token_status"  # noqa: S105 - a field name
TOKEN_EXPIRES = "token_expires"  # noqa: S105 - a field name
USER_FIELDS = frozenset({APP_KEY, APP_SECRET})
TOKEN_STATUSES = frozenset({"PENDING", "NORMAL", "INVALID", "EXPIRED"})
SIGNATURE_VERSION = "1.0"
SIGNATURE_ALGORITHM = "HMAC-SHA256"
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def check_credentials(values: Mapping[str, str]) -> Credentials:
    """The user's App Key and App Secret; ValueError naming the problem (never values)."""
    require_fields(values, USER_FIELDS)
    for name in sorted(USER_FIELDS):
        value = values[name]
        if not is_single_line(value, 256):
            raise ValueError(f"{name} is not a valid Webull App Key or Secret")
    return Credentials({name: values[name] for name in sorted(USER_FIELDS)})


def with_token(credentials: Credentials, token: str, status: str, expires: str) -> Credentials:
    """The stored credential: the user's key plus the access token Webull issued for it."""
    return Credentials(
        {
            APP_KEY: credentials[APP_KEY],
            APP_SECRET: credentials[APP_SECRET],
            ACCESS_TOKEN: token,
            TOKEN_STATUS: status,
            TOKEN_EXPIRES: expires,
        }
    )


def string_to_sign(
    path: str, sign_headers: Mapping[str, str], host: str, query: list[tuple[str, str]], body: bytes
) -> str:
    params = {k.lower(): v for k, v in sign_headers.items()}
    params["host"] = host
    for key, value in query:
        params[key] = f"{params[key]}&{value}" if key in params else value
    text = path + "&" + "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    if body:
        text += "&" + hashlib.sha256(body).hexdigest().upper()
    return quote(text, safe="")


def signature(app_secret: str, text: str) -> str:
    digest = hmac.new((app_secret + "&").encode(), text.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


class RequestSigner:
    """``app.brokers.http.Signer`` for one App Key: signs each request as it is sent.

    ``clock`` and ``nonce`` are injectable so tests can pin a signature.
    """

    def __init__(
        self,
        credentials: Credentials,
        *,
        clock: Callable[[], float] = time.time,
        nonce: Callable[[], str] = lambda: uuid.uuid4().hex,
        with_access_token: bool = True,
    ) -> None:
        self._app_key = credentials[APP_KEY]
        self._app_secret = credentials[APP_SECRET]
        # The token endpoints carry the token in their body, never as a header.
        self._token = credentials.get(ACCESS_TOKEN) if with_access_token else None
        self._clock = clock
        self._nonce = nonce

    def __repr__(self) -> str:
        return "RequestSigner(webull)"

    def headers(self, method: str, url: httpx.URL, body: bytes) -> dict[str, str]:
        sign_headers = {
            "x-app-key": self._app_key,
            "x-timestamp": datetime.fromtimestamp(self._clock(), UTC).strftime(TIMESTAMP_FORMAT),
            "x-signature-version": SIGNATURE_VERSION,
            "x-signature-algorithm": SIGNATURE_ALGORITHM,
            "x-signature-nonce": self._nonce(),
        }
        text = string_to_sign(
            url.path, sign_headers, url.netloc.decode("ascii"), list(url.params.multi_items()), body
        )
        headers = {**sign_headers, "x-signature": signature(self._app_secret, text)}
        if self._token:
            headers["x-access-token"] = self._token
        return headers

    def __call__(self, request: httpx.Request) -> Mapping[str, str]:
        return self.headers(request.method, request.url, request.content)


def signer(credentials: Credentials | None, *, with_access_token: bool = True) -> RequestSigner:
    if credentials is None or not USER_FIELDS <= set(credentials):
        raise errors.AuthenticationFailed("no Webull App Key for this connection", broker=SLUG)
    return RequestSigner(credentials, with_access_token=with_access_token)


def token_usable(credentials: Credentials) -> bool:
    """Whether the stored access token was confirmed (orders need it)."""
    return credentials.get(TOKEN_STATUS) == "NORMAL" and bool(credentials.get(ACCESS_TOKEN))


def bucket_key(credentials: Credentials) -> str:
    """Webull limits per App Key ("each App ID"); the bucket is keyed by a hash of it."""
    return credential_key(SLUG, credentials[APP_KEY])
