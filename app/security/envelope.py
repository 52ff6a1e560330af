"""Envelope encryption of stored broker credentials.

Each credential gets its own fresh AES-256-GCM data key; the data key is wrapped by the
``KeyProvider``'s current key-encryption key. Both the payload and the data-key wrap are
bound to ``AssociatedData`` (user, connection, broker slug, tier), so a ciphertext copied
onto another row, or a row relabelled to another tier, does not decrypt.

Rotation re-wraps only the small data key (``EnvelopeCipher.rewrap``); the ciphertext is
never touched, so rotating a KEK never needs the plaintext.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.security.keyring import NONCE_BYTES, TAG_BYTES, DecryptionError, KeyProvider

__all__ = ["AAD_VERSION", "AssociatedData", "DecryptionError", "Envelope", "EnvelopeCipher"]

AAD_VERSION = b"bg-token-v1"


@dataclass(frozen=True, slots=True)
class AssociatedData:
    """What a ciphertext is bound to: the row it belongs to."""

    user_id: str
    connection_id: str
    broker_slug: str
    broker_tier: str

    def encode(self) -> bytes:
        """Versioned, length-prefixed fields: no two distinct values share an encoding."""
        parts = [AAD_VERSION] + [
            field.encode("utf-8")
            for field in (self.user_id, self.connection_id, self.broker_slug, self.broker_tier)
        ]
        return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


@dataclass(frozen=True, slots=True)
class Envelope:
    """A sealed credential as stored: ``nonce || ciphertext || tag``, the wrapped data key,
    and the KEK version that wrapped it. The repr shows sizes only."""

    ciphertext: bytes
    wrapped_data_key: bytes
    key_version: int

    def __repr__(self) -> str:
        return (
            f"Envelope(key_version={self.key_version}, ciphertext=<{len(self.ciphertext)} bytes>, "
            f"wrapped_data_key=<{len(self.wrapped_data_key)} bytes>)"
        )


class EnvelopeCipher:
    """Seals and opens credentials with a per-credential data key under a ``KeyProvider``."""

    __slots__ = ("_provider",)

    def __init__(self, provider: KeyProvider) -> None:
        self._provider = provider

    def __repr__(self) -> str:
        return f"EnvelopeCipher({self._provider!r})"

    @property
    def primary_version(self) -> int:
        return self._provider.primary_version

    @property
    def provider(self) -> KeyProvider:
        return self._provider

    def seal(self, plaintext: bytes, aad: AssociatedData) -> Envelope:
        """Encrypt ``plaintext`` for the row ``aad`` describes, under a fresh data key.

        Provider failures (e.g. a KMS outage) propagate unchanged.
        """
        encoded = aad.encode()
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = nonce + AESGCM(data_key).encrypt(nonce, plaintext, encoded)
        version, wrapped = self._provider.wrap(data_key, encoded)
        return Envelope(ciphertext=ciphertext, wrapped_data_key=wrapped, key_version=version)

    def open(self, envelope: Envelope, aad: AssociatedData) -> bytes:
        """Decrypt ``envelope`` for the row ``aad`` describes.

        Raises ``DecryptionError`` when the key version is unknown or retired, when the
        wrapped key or the ciphertext was altered, or when ``aad`` is not the row the
        envelope was sealed for. The message never includes plaintext or key material.
        """
        encoded = aad.encode()
        data_key = self._unwrap(envelope, encoded)
        if len(envelope.ciphertext) < NONCE_BYTES + TAG_BYTES:
            raise DecryptionError("the ciphertext is truncated")
        nonce, body = envelope.ciphertext[:NONCE_BYTES], envelope.ciphertext[NONCE_BYTES:]
        try:
            return AESGCM(data_key).decrypt(nonce, body, encoded)
        except (InvalidTag, ValueError):
            raise DecryptionError("the ciphertext does not authenticate for this row") from None

    def rewrap(self, envelope: Envelope, aad: AssociatedData) -> Envelope:
        """Re-wrap the data key under the primary KEK; the ciphertext is kept as it is.

        Returns ``envelope`` itself when it is already under the primary version. Raises
        ``DecryptionError`` like ``open`` when the current wrap does not authenticate.
        """
        if envelope.key_version == self._provider.primary_version:
            return envelope
        encoded = aad.encode()
        data_key = self._unwrap(envelope, encoded)
        version, wrapped = self._provider.wrap(data_key, encoded)
        return Envelope(
            ciphertext=envelope.ciphertext, wrapped_data_key=wrapped, key_version=version
        )

    def _unwrap(self, envelope: Envelope, encoded_aad: bytes) -> bytes:
        data_key = self._provider.unwrap(
            envelope.key_version, envelope.wrapped_data_key, encoded_aad
        )
        if len(data_key) != 32:
            raise DecryptionError("the unwrapped data key has the wrong length")
        return data_key
