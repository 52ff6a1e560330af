"""``KeyringFile`` follows its file (rotation and retirement reach running instances) and
retirement is one-way, refused above the primary, and fails clearly afterwards."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from app.security.envelope import AssociatedData, EnvelopeCipher
from app.security.keyring import (
    KeyringError,
    KeyringFile,
    KeyVersionRetired,
    LocalKeyProvider,
    load_or_create_keyring,
    retire_keyring,
    rotate_keyring,
)

AAD = AssociatedData("user-1", "con-1", "alpaca", "tier_a")


def test_a_rotation_by_another_process_is_followed(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    load_or_create_keyring(path)
    here = KeyringFile(path, check_seconds=3600)  # no periodic look during this test
    sealed_v1 = EnvelopeCipher(here).seal(b"secret one", AAD)
    assert sealed_v1.key_version == 1

    assert rotate_keyring(path) == 2  # `brokerage keys rotate`, elsewhere
    elsewhere = KeyringFile(path)
    sealed_v2 = EnvelopeCipher(elsewhere).seal(b"secret two", AAD)
    assert sealed_v2.key_version == 2

    # This instance has not looked at the file yet, but a version it does not know makes
    # it look at once: a token re-wrapped by another instance stays readable here.
    assert EnvelopeCipher(here).open(sealed_v2, AAD) == b"secret two"
    assert here.primary_version == 2
    assert EnvelopeCipher(here).seal(b"x", AAD).key_version == 2
    assert EnvelopeCipher(here).open(sealed_v1, AAD) == b"secret one"


def test_a_periodic_look_picks_up_a_change(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    load_or_create_keyring(path)
    provider = KeyringFile(path, check_seconds=0)  # look on every use
    rotate_keyring(path)
    assert provider.primary_version == 2
    assert provider.reload() is False  # nothing changed since


def test_a_broken_file_keeps_the_last_good_keyring(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keyring.json"
    created, _ = load_or_create_keyring(path)
    provider = KeyringFile(path)
    sealed = EnvelopeCipher(provider).seal(b"still readable", AAD)
    path.write_text("{not json")
    os.chmod(path, 0o600)
    caplog.set_level(logging.ERROR)
    assert provider.reload(force=True) is False
    assert "cannot re-read the keyring" in caplog.text
    assert EnvelopeCipher(provider).open(sealed, AAD) == b"still readable"
    key_material = created.to_json().split('"1": "')[1].split('"')[0]
    assert key_material not in repr(provider)
    assert key_material not in caplog.text


def test_retirement_is_refused_above_the_primary_and_cannot_be_undone(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    load_or_create_keyring(path)
    with pytest.raises(KeyringError, match="primary"):
        retire_keyring(path, 2)
    rotate_keyring(path)
    rotate_keyring(path)
    retired = retire_keyring(path, 3)
    assert (retired.primary_version, retired.min_decryption_version) == (3, 3)
    with pytest.raises(KeyringError, match="cannot be undone"):
        retire_keyring(path, 2)
    assert LocalKeyProvider.from_json(path.read_text()).min_decryption_version == 3


def test_a_retired_version_fails_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    load_or_create_keyring(path)
    provider = KeyringFile(path, check_seconds=0)
    sealed_v1 = EnvelopeCipher(provider).seal(b"old", AAD)
    rotate_keyring(path)
    assert EnvelopeCipher(provider).open(sealed_v1, AAD) == b"old"  # still readable
    retire_keyring(path, 2)
    with pytest.raises(KeyVersionRetired) as info:
        EnvelopeCipher(provider).open(sealed_v1, AAD)
    assert "key version 1 is retired" in str(info.value)
    assert "re-wrap before retiring" in str(info.value)
