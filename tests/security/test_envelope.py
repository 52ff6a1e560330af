"""Envelope encryption: round trips, row binding, tamper detection and key rotation."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.security.envelope import AssociatedData, DecryptionError, Envelope, EnvelopeCipher
from app.security.keyring import (
    KeyringError,
    LocalKeyProvider,
    load_or_create_keyring,
    rotate_keyring,
)


def keyring_json_for_tests() -> str:
    # The format tests/harness.py uses (not imported: it pulls in the whole app).
    key = base64.b64encode(os.urandom(32)).decode()
    return json.dumps({"primary": 1, "min_decryption_version": 1, "keys": {"1": key}})


AAD = AssociatedData(
    user_id="user-1", connection_id="con_1", broker_slug="tradier", broker_tier="tier_a"
)
PLAINTEXT = b'{"access_token":"tok-0123456789abcdef"}'

PROVIDER = LocalKeyProvider.from_json(keyring_json_for_tests())
CIPHER = EnvelopeCipher(PROVIDER)
SEALED = CIPHER.seal(PLAINTEXT, AAD)


def test_round_trip() -> None:
    envelope = CIPHER.seal(PLAINTEXT, AAD)
    assert envelope.key_version == 1
    assert CIPHER.open(envelope, AAD) == PLAINTEXT
    assert PLAINTEXT not in envelope.ciphertext


@given(st.binary(max_size=2048))
def test_round_trip_any_plaintext(plaintext: bytes) -> None:
    assert CIPHER.open(CIPHER.seal(plaintext, AAD), AAD) == plaintext


def test_two_seals_of_the_same_plaintext_differ() -> None:
    first, second = CIPHER.seal(PLAINTEXT, AAD), CIPHER.seal(PLAINTEXT, AAD)
    assert first.ciphertext != second.ciphertext
    assert first.wrapped_data_key != second.wrapped_data_key


@pytest.mark.parametrize(
    "other",
    [
        dataclasses.replace(AAD, user_id="user-2"),
        dataclasses.replace(AAD, connection_id="con_2"),
        dataclasses.replace(AAD, broker_slug="schwab"),
        dataclasses.replace(AAD, broker_tier="tier_c"),
    ],
    ids=["other-user", "other-connection", "other-slug", "other-tier"],
)
def test_envelope_copied_to_another_row_does_not_open(other: AssociatedData) -> None:
    with pytest.raises(DecryptionError):
        CIPHER.open(SEALED, other)


def test_aad_encoding_is_unambiguous() -> None:
    a = AssociatedData(user_id="ab", connection_id="c", broker_slug="s", broker_tier="t")
    b = AssociatedData(user_id="a", connection_id="bc", broker_slug="s", broker_tier="t")
    assert a.encode() != b.encode()
    assert a.encode().startswith(len(b"bg-token-v1").to_bytes(4, "big") + b"bg-token-v1")


@settings(max_examples=200)
@given(
    field=st.sampled_from(["ciphertext", "wrapped_data_key"]),
    position=st.integers(min_value=0),
    flip=st.integers(min_value=1, max_value=255),
)
def test_any_single_byte_change_is_detected(field: str, position: int, flip: int) -> None:
    original: bytes = getattr(SEALED, field)
    index = position % len(original)
    tampered = bytearray(original)
    tampered[index] ^= flip
    with pytest.raises(DecryptionError):
        CIPHER.open(dataclasses.replace(SEALED, **{field: bytes(tampered)}), AAD)


@given(st.sampled_from(["ciphertext", "wrapped_data_key"]), st.integers(min_value=0))
def test_truncation_is_detected(field: str, cut: int) -> None:
    original: bytes = getattr(SEALED, field)
    with pytest.raises(DecryptionError):
        CIPHER.open(dataclasses.replace(SEALED, **{field: original[: cut % len(original)]}), AAD)


@pytest.mark.parametrize("version", [0, 2, -1, 99])
def test_changed_key_version_is_refused(version: int) -> None:
    with pytest.raises(DecryptionError):
        CIPHER.open(dataclasses.replace(SEALED, key_version=version), AAD)


def test_rotation_keeps_old_envelopes_readable_and_rewrap_moves_them() -> None:
    old_provider = LocalKeyProvider.from_json(keyring_json_for_tests())
    old_envelope = EnvelopeCipher(old_provider).seal(PLAINTEXT, AAD)

    rotated = old_provider.rotated()
    assert rotated.primary_version == 2
    cipher = EnvelopeCipher(rotated)
    assert cipher.open(old_envelope, AAD) == PLAINTEXT
    assert cipher.seal(PLAINTEXT, AAD).key_version == 2

    moved = cipher.rewrap(old_envelope, AAD)
    assert moved.key_version == 2
    assert moved.ciphertext == old_envelope.ciphertext
    assert moved.wrapped_data_key != old_envelope.wrapped_data_key
    assert cipher.open(moved, AAD) == PLAINTEXT
    assert cipher.rewrap(moved, AAD) is moved
    with pytest.raises(DecryptionError):
        cipher.rewrap(old_envelope, dataclasses.replace(AAD, user_id="user-2"))

    # Once every token is re-wrapped, version 1 is retired.
    retired = json.loads(rotated.to_json())
    retired["min_decryption_version"] = 2
    retiring = EnvelopeCipher(LocalKeyProvider.from_json(json.dumps(retired)))
    assert retiring.open(moved, AAD) == PLAINTEXT
    with pytest.raises(DecryptionError, match="retired"):
        retiring.open(old_envelope, AAD)


def test_reprs_show_no_key_material() -> None:
    raw = json.loads(PROVIDER.to_json())["keys"]["1"]
    for text in (repr(PROVIDER), str(PROVIDER), repr(CIPHER), repr(SEALED), str(SEALED)):
        assert raw not in text
        assert SEALED.ciphertext.hex() not in text
    assert "bytes>" in repr(SEALED)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        json.dumps({"primary": 1, "keys": {}}),
        json.dumps({"primary": 2, "keys": {"1": "A" * 44}}),
        json.dumps({"primary": 1, "keys": {"1": "c2hvcnQ="}}),
        json.dumps({"primary": 1, "keys": {"1": "!!!notbase64!!!"}}),
        json.dumps({"primary": True, "keys": {"1": "A" * 44}}),
        json.dumps({"primary": 1, "min_decryption_version": 2, "keys": {"1": "A" * 44}}),
    ],
)
def test_malformed_keyrings_are_refused(text: str) -> None:
    with pytest.raises(KeyringError):
        LocalKeyProvider.from_json(text)


def test_keyring_file_is_created_once_private_and_rotates(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "keyring.json"
    provider, created = load_or_create_keyring(path)
    assert created
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    envelope = EnvelopeCipher(provider).seal(PLAINTEXT, AAD)

    again, created_again = load_or_create_keyring(path)
    assert not created_again
    assert EnvelopeCipher(again).open(envelope, AAD) == PLAINTEXT

    assert rotate_keyring(path) == 2
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    rotated, _ = load_or_create_keyring(path)
    assert rotated.primary_version == 2
    assert rotated.versions == (1, 2)
    assert EnvelopeCipher(rotated).open(envelope, AAD) == PLAINTEXT
    assert [p.name for p in path.parent.iterdir()] == ["keyring.json"]


def test_envelope_is_a_plain_value() -> None:
    copy = Envelope(SEALED.ciphertext, SEALED.wrapped_data_key, SEALED.key_version)
    assert copy == SEALED
    with pytest.raises(dataclasses.FrozenInstanceError):
        SEALED.key_version = 3  # type: ignore[misc]
