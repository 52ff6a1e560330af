"""The IBKR market WebSocket over TLS with a gateway certificate from the deployment's own
CA (``BROKERAGE_IBKR_GATEWAY_CA_BUNDLE``, as a Client Portal Gateway's self-signed one):
the socket uses the REST client's TLS context, and without the CA it fails saying why.

The fake gateway is served over HTTPS and WSS with a certificate for 127.0.0.1 signed by a
CA made here; nothing of ours is replaced.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.brokers import errors
from app.brokers.base import MarketDataSubscription, MarketGap, MarketQuote
from app.brokers.http import tls_context
from app.brokers.ibkr import market_data
from tests.brokers.ibkr.support import FAKE_SLOW_SECONDS, Running
from tests.brokers.market_data.reader import reading
from tests.fakes.ibkr import FakeIbkrGateway, serve_asgi
from tests.fakes.ibkr.server import API


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """(CA bundle, server certificate, server key): a CA and a 127.0.0.1 certificate it signed."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test gateway CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    bundle, cert, key_file = directory / "ca.pem", directory / "server.pem", directory / "key.pem"
    bundle.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return bundle, cert, key_file


@contextlib.asynccontextmanager
async def tls_gateway(directory: Path) -> AsyncIterator[tuple[Running, Path]]:
    bundle, cert, key = _certificates(directory)
    fake = FakeIbkrGateway(slow_seconds=FAKE_SLOW_SECONDS)
    account = fake.add_account(cash="100000")
    async with serve_asgi(
        fake.app, on_shutdown=fake.release_hung, tls=(str(cert), str(key))
    ) as url:
        assert url.startswith("https://")
        running = Running(fake=fake, url=url + API, account=account)
        try:
            yield running, bundle
        finally:
            await running.close_adapters()


AAPL = MarketDataSubscription(quotes=frozenset({"AAPL"}))


async def test_the_market_socket_verifies_the_gateway_with_the_configured_ca(
    tmp_path: Path,
) -> None:
    async with tls_gateway(tmp_path) as (running, bundle):
        adapter = running.adapter(ibkr_gateway_ca_bundle=str(bundle))
        session = adapter.market_data_session()
        assert market_data.ws_url(running.url).startswith("wss://")
        await session.update(AAPL)
        async with reading(session) as reader:
            [event] = await reader.take(1)
    assert isinstance(event, MarketQuote), event
    assert event.symbol == "AAPL"
    assert session.connects == 1
    # The same context object as the REST clients of that CA bundle.
    assert session.tls is tls_context(str(bundle))


async def test_without_the_ca_the_market_socket_fails_saying_why(tmp_path: Path) -> None:
    async with tls_gateway(tmp_path) as (running, bundle):
        # REST (tickle, symbol lookup) through an adapter given the CA; the socket with
        # the default TLS context, as before the CA bundle was applied to it.
        adapter = running.adapter(ibkr_gateway_ca_bundle=str(bundle))
        session = market_data.IbkrMarketSession(
            market_data.ws_url(running.url),
            adapter._ws_session,
            adapter._conid_of_any,
            max_backoff=0.5,
        )
        await session.update(AAPL)
        async with reading(session) as reader:
            [event] = await reader.take(1)
        assert isinstance(event, MarketGap), event
        assert "TLS certificate was not verified" in event.reason
        assert "BROKERAGE_IBKR_GATEWAY_CA_BUNDLE" in event.reason
        assert session.connects == 0
        # An adapter without the CA: its REST calls are refused first (the symbol lookup).
        bare = running.adapter().market_data_session()
        with pytest.raises(errors.Transient):
            await bare.update(AAPL)
        await bare.close()
