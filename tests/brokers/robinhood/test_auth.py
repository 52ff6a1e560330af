"""Robinhood request signing: the docs' worked example, both key formats, credential shape."""

from __future__ import annotations

import base64

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from app.brokers import errors
from app.brokers.robinhood import auth
from app.security.credentials import Credentials
from tests.brokers.robinhood.payloads import SIGNATURE_EXAMPLE as DOC


def doc_credentials() -> Credentials:
    return Credentials(api_key=DOC["api_key"], private_key=DOC["private_key"])


def test_the_docs_example_signature_is_reproduced_byte_for_byte() -> None:
    signer = auth.RequestSigner(doc_credentials(), clock=lambda: DOC["timestamp"])
    headers = signer.headers(DOC["method"], DOC["path"], DOC["body"])
    assert headers == {
        "x-api-key": DOC["api_key"],
        "x-timestamp": str(DOC["timestamp"]),
        "x-signature": DOC["signature"],
    }


def test_the_docs_key_pair_belongs_together() -> None:
    key = auth.signing_key(doc_credentials())
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert base64.b64encode(public).decode() == DOC["public_key"]


def test_a_built_request_is_signed_over_its_path_query_and_exact_body() -> None:
    signer = auth.RequestSigner(doc_credentials(), clock=lambda: 1700000000)
    request = httpx.Request(
        "GET",
        "https://trading.robinhood.com/api/v1/crypto/marketdata/best_bid_ask/",
        params=[("symbol", "BTC-USD"), ("symbol", "ETH-USD")],
    )
    headers = signer(request)
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(DOC["public_key"]))
    expected = (
        f"{DOC['api_key']}1700000000/api/v1/crypto/marketdata/best_bid_ask/"
        "?symbol=BTC-USD&symbol=ETH-USDGET"
    ).encode()
    public.verify(base64.b64decode(headers["x-signature"]), expected)  # raises if not

    post = httpx.Request(
        "POST", "https://trading.robinhood.com/api/v1/crypto/trading/orders/", json={"a": "1"}
    )
    signed = signer(post)
    public.verify(
        base64.b64decode(signed["x-signature"]),
        f"{DOC['api_key']}1700000000/api/v1/crypto/trading/orders/POST".encode() + post.content,
    )
    assert post.content == b'{"a":"1"}'


def test_the_node_js_64_byte_secret_key_is_accepted_and_signs_the_same() -> None:
    seed = base64.b64decode(DOC["private_key"])
    public = base64.b64decode(DOC["public_key"])
    node = Credentials(api_key=DOC["api_key"], private_key=base64.b64encode(seed + public).decode())
    assert auth.check_credentials(dict(node))[auth.PRIVATE_KEY] == node[auth.PRIVATE_KEY]
    signer = auth.RequestSigner(node, clock=lambda: DOC["timestamp"])
    assert signer.headers("POST", DOC["path"], DOC["body"])["x-signature"] == DOC["signature"]


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"api_key": "rh-api-x"}, "missing credentials: private_key"),
        ({"api_key": "k", "private_key": DOC["private_key"], "pw": "x"}, "unknown credentials"),
        ({"api_key": "", "private_key": DOC["private_key"]}, "api_key is not valid"),
        ({"api_key": "k", "private_key": "not base64!"}, "not base64"),
        ({"api_key": "k", "private_key": base64.b64encode(b"short").decode()}, "32 or 64"),
    ],
)
def test_credential_shape_errors_name_the_field_never_the_value(
    values: dict[str, str], problem: str
) -> None:
    with pytest.raises(ValueError, match=problem.replace("is not valid", "is not a valid")) as e:
        auth.check_credentials(values)
    for value in values.values():
        if len(value) > 3:
            assert value not in str(e.value)


def test_a_64_byte_key_whose_halves_disagree_is_refused() -> None:
    seed = base64.b64decode(DOC["private_key"])
    other = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    with pytest.raises(ValueError, match="does not match"):
        auth.check_credentials(
            {"api_key": "k", "private_key": base64.b64encode(seed + other).decode()}
        )


def test_no_credentials_is_an_authentication_failure_and_reprs_hide_keys() -> None:
    with pytest.raises(errors.AuthenticationFailed):
        auth.signer(None)
    signer = auth.signer(doc_credentials())
    assert DOC["private_key"] not in repr(signer)
    assert DOC["api_key"] not in repr(signer)
