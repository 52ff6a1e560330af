"""CDP API keys: the credential check, and the JWTs minted per request (verified here with
the key's public half, as Coinbase would)."""

from __future__ import annotations

import base64

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from app.brokers import errors
from app.brokers.coinbase import auth
from app.security.credentials import Credentials
from tests.fakes.coinbase.server import new_key

NAME = "organizations/11111111-2222-3333-4444-555555555555/apiKeys/66666666-7777-8888-9999"


def ec_pem() -> tuple[str, ec.EllipticCurvePublicKey]:
    pem, public = new_key("ES256")
    assert isinstance(public, ec.EllipticCurvePublicKey)
    return pem, public


def test_a_pem_key_is_stored_normalized_and_its_json_escapes_are_undone() -> None:
    pem, _ = ec_pem()
    escaped = pem.strip().replace("\n", "\\n")  # as pasted from the key's JSON file
    stored = auth.check_credentials({"api_key_name": NAME, "private_key": escaped})
    assert stored["private_key"] == pem
    assert stored["api_key_name"] == NAME
    assert set(stored) == {"api_key_name", "private_key"}


def test_an_ed25519_key_in_base64_is_accepted() -> None:
    private, public = new_key("EdDSA")
    stored = auth.check_credentials({"api_key_name": "a1b2c3", "private_key": private})
    signer = auth.Signer(stored)
    token = signer.rest_jwt("GET", "api.coinbase.com", "/api/v3/brokerage/accounts")
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    claims = jwt.decode(token, public, algorithms=["EdDSA"], issuer="cdp")
    assert claims["uri"] == "GET api.coinbase.com/api/v3/brokerage/accounts"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"api_key_name": NAME}, "missing credentials: private_key"),
        ({"private_key": "x"}, "missing credentials: api_key_name"),
        ({"api_key_name": NAME, "private_key": "x", "passphrase": "p"}, "unknown credentials"),
        ({"api_key_name": "", "private_key": "x"}, "api_key_name is not a valid"),
        ({"api_key_name": " padded", "private_key": "x"}, "api_key_name is not a valid"),
        ({"api_key_name": NAME, "private_key": "not-a-key-at-all!"}, "neither a PEM key nor"),
        ({"api_key_name": NAME, "private_key": base64.b64encode(b"x" * 10).decode()}, "32 or 64"),
        (
            {
                "api_key_name": NAME,
                "private_key": "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----",
            },
            "not a readable PEM",
        ),
    ],
)
def test_bad_credentials_are_refused_naming_the_field_never_the_value(
    values: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        auth.check_credentials(values)
    for value in values.values():
        if len(value) > 3:
            assert value not in str(caught.value)


def test_a_key_on_another_curve_is_refused() -> None:
    other = ec.generate_private_key(ec.SECP384R1())
    pem = other.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    with pytest.raises(ValueError, match="P-256"):
        auth.check_credentials({"api_key_name": NAME, "private_key": pem})


def test_the_rest_jwt_has_the_documented_header_and_claims() -> None:
    pem, public = ec_pem()
    signer = auth.Signer(
        Credentials(api_key_name=NAME, private_key=pem), clock=lambda: 1_760_000_000.7
    )
    token = signer.rest_jwt("post", "api.coinbase.com", "/api/v3/brokerage/orders")
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    assert header["kid"] == NAME
    assert len(header["nonce"]) == 64
    assert int(header["nonce"], 16) >= 0
    claims = jwt.decode(
        token,
        public,
        algorithms=["ES256"],
        issuer="cdp",
        options={"verify_exp": False, "verify_nbf": False},
    )
    assert claims == {
        "sub": NAME,
        "iss": "cdp",
        "nbf": 1_760_000_000,
        "exp": 1_760_000_120,
        "uri": "POST api.coinbase.com/api/v3/brokerage/orders",
    }
    other = signer.rest_jwt("post", "api.coinbase.com", "/api/v3/brokerage/orders")
    assert jwt.get_unverified_header(other)["nonce"] != header["nonce"]


def test_the_websocket_jwt_has_no_uri() -> None:
    pem, public = ec_pem()
    token = auth.Signer(Credentials(api_key_name=NAME, private_key=pem)).ws_jwt()
    claims = jwt.decode(token, public, algorithms=["ES256"], issuer="cdp")
    assert "uri" not in claims
    assert claims["exp"] - claims["nbf"] == 120


def test_the_signer_shows_no_key_material_and_a_broken_stored_key_is_an_auth_failure() -> None:
    pem, _ = ec_pem()
    signer = auth.Signer(Credentials(api_key_name=NAME, private_key=pem))
    assert "PRIVATE" not in repr(signer)
    assert pem not in repr(signer)
    with pytest.raises(errors.AuthenticationFailed):
        auth.Signer(Credentials(api_key_name=NAME, private_key="garbage!"))
    with pytest.raises(errors.AuthenticationFailed):
        auth.require(None)


def test_the_uri_host_is_the_base_urls_host_and_port() -> None:
    assert auth.jwt_host("https://api.coinbase.com") == "api.coinbase.com"
    assert auth.jwt_host("http://127.0.0.1:8771") == "127.0.0.1:8771"


def test_the_rate_bucket_is_keyed_by_a_hash_of_the_key_name() -> None:
    pem, _ = ec_pem()
    key = auth.bucket_key(Credentials(api_key_name=NAME, private_key=pem))
    assert NAME not in key
    assert len(key) == 32


def test_ed25519_pem_keys_load_too() -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    assert isinstance(auth.load_private_key(pem), ed25519.Ed25519PrivateKey)
