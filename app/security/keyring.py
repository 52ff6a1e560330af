"""Key-encryption keys (KEKs): the seam between envelope encryption and where keys live.

``KeyProvider`` is what ``EnvelopeCipher`` needs: wrap a fresh data key under the current
(primary) KEK, and unwrap one under the KEK version recorded next to it. Production plugs a
KMS or Vault transit implementation in here; development and CI use ``LocalKeyProvider``, a
keyring of 32-byte AES keys read from a file or from ``BROKERAGE_KEYRING_JSON``.

Key versions make rotation possible without downtime: a new version becomes primary (new
tokens are wrapped under it), older versions stay readable until every token has been
re-wrapped (``app.services.key_rewrap``), and ``min_decryption_version`` then retires them
(``retire_below``). ``KeyringFile`` re-reads its file when it changes, so a rotation or a
retirement done by ``brokerage keys ...`` reaches running instances without a restart.

Key material never appears in a repr, an exception message or a log line.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import stat
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger(__name__)

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
_WRAP_CONTEXT = b"bg-kek-wrap-v1"


class DecryptionError(Exception):
    """A ciphertext or wrapped key could not be opened.

    The message says why in general terms (retired key version, authentication failed);
    it never carries plaintext, key material or ciphertext.
    """


class KeyVersionRetired(DecryptionError):
    """The wrap is under a key version below ``min_decryption_version``.

    Raised on purpose after ``brokerage keys retire``: the token should have been re-wrapped
    first (``retire`` refuses while any token row still uses such a version).
    """


class KeyringError(ValueError):
    """A keyring is malformed (bad JSON, wrong key length, no primary key)."""


@runtime_checkable
class KeyProvider(Protocol):
    """Wraps and unwraps data keys under versioned key-encryption keys.

    This is the seam for a KMS or Vault transit: ``wrap`` is their "encrypt" with the
    associated data as encryption context, ``unwrap`` their "decrypt". Implementations
    raise ``DecryptionError`` when a wrapped key does not authenticate or its version is
    unknown or retired; transport failures (network, throttling) propagate as they are so
    callers can tell an outage from a bad ciphertext.
    """

    @property
    def primary_version(self) -> int:
        """The version new data keys are wrapped under."""
        ...

    def wrap(self, data_key: bytes, aad: bytes) -> tuple[int, bytes]:
        """Wrap ``data_key`` under the primary KEK, bound to ``aad``; returns (version, wrapped)."""
        ...

    def unwrap(self, version: int, wrapped: bytes, aad: bytes) -> bytes:
        """Return the data key wrapped under KEK ``version`` with the same ``aad``."""
        ...


def _wrap_aad(version: int, aad: bytes) -> bytes:
    # The version is authenticated too, so a wrapped key cannot be relabelled.
    return _WRAP_CONTEXT + version.to_bytes(4, "big") + aad


class LocalKeyProvider:
    """A keyring held in memory: AES-256-GCM KEKs by version.

    Wrapped keys are ``nonce (12 bytes) || AES-GCM(kek, data_key, aad)``. Versions below
    ``min_decryption_version`` are refused even when their key is still in the keyring.
    """

    __slots__ = ("_keys", "_min_decryption_version", "_primary")

    def __init__(
        self, keys: Mapping[int, bytes], primary: int, min_decryption_version: int = 1
    ) -> None:
        if not keys:
            raise KeyringError("the keyring holds no keys")
        for version, key in keys.items():
            if isinstance(version, bool) or not isinstance(version, int) or version < 1:
                raise KeyringError("key versions are positive integers")
            if not isinstance(key, bytes) or len(key) != KEY_BYTES:
                raise KeyringError(f"key version {version} is not {KEY_BYTES} bytes")
        if primary not in keys:
            raise KeyringError(f"the primary key version {primary} is not in the keyring")
        if min_decryption_version > primary:
            raise KeyringError("min_decryption_version is above the primary version")
        self._keys = dict(keys)
        self._primary = primary
        self._min_decryption_version = min_decryption_version

    def __repr__(self) -> str:
        return (
            f"LocalKeyProvider(versions={sorted(self._keys)}, primary={self._primary}, "
            f"min_decryption_version={self._min_decryption_version})"
        )

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a keyring is not picklable")

    def __copy__(self) -> LocalKeyProvider:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> LocalKeyProvider:
        return self

    @property
    def primary_version(self) -> int:
        return self._primary

    @property
    def min_decryption_version(self) -> int:
        return self._min_decryption_version

    @property
    def versions(self) -> tuple[int, ...]:
        return tuple(sorted(self._keys))

    def wrap(self, data_key: bytes, aad: bytes) -> tuple[int, bytes]:
        nonce = os.urandom(NONCE_BYTES)
        kek = AESGCM(self._keys[self._primary])
        wrapped = nonce + kek.encrypt(nonce, data_key, _wrap_aad(self._primary, aad))
        return self._primary, wrapped

    def unwrap(self, version: int, wrapped: bytes, aad: bytes) -> bytes:
        if version < self._min_decryption_version:
            raise KeyVersionRetired(
                f"key version {version} is retired (versions below "
                f"{self._min_decryption_version} no longer decrypt); re-wrap before retiring"
            )
        key = self._keys.get(version)
        if key is None:
            raise DecryptionError(f"key version {version} is not in the keyring")
        if len(wrapped) < NONCE_BYTES + TAG_BYTES:
            raise DecryptionError("the wrapped data key is truncated")
        nonce, body = wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:]
        try:
            return AESGCM(key).decrypt(nonce, body, _wrap_aad(version, aad))
        except InvalidTag:
            raise DecryptionError("the wrapped data key does not authenticate") from None

    def rotated(self) -> LocalKeyProvider:
        """A copy with a fresh random key as the new primary version (max version + 1)."""
        version = max(self._keys) + 1
        keys = {**self._keys, version: AESGCM.generate_key(bit_length=256)}
        return LocalKeyProvider(keys, version, self._min_decryption_version)

    def retired_below(self, version: int) -> LocalKeyProvider:
        """A copy whose ``min_decryption_version`` is ``version`` (keys are kept, refused).

        Raises ``KeyringError`` when ``version`` is above the primary version (the primary
        must always decrypt) or below the current minimum (retirement is one-way).
        """
        if version > self._primary:
            raise KeyringError(f"cannot retire the primary key version {self._primary} or above it")
        if version < self._min_decryption_version:
            raise KeyringError(
                f"versions below {self._min_decryption_version} are already retired; "
                "retirement cannot be undone"
            )
        return LocalKeyProvider(self._keys, self._primary, version)

    @classmethod
    def generate(cls) -> LocalKeyProvider:
        """A new keyring with one random key, version 1."""
        return cls({1: AESGCM.generate_key(bit_length=256)}, 1)

    @classmethod
    def from_json(cls, text: str) -> LocalKeyProvider:
        """Parse ``{"primary": 1, "min_decryption_version": 1, "keys": {"1": "<base64>"}}``.

        Raises ``KeyringError`` for anything malformed; the message never quotes the input.
        """
        try:
            data = json.loads(text)
        except ValueError:
            raise KeyringError("the keyring is not valid JSON") from None
        if not isinstance(data, dict):
            raise KeyringError("the keyring must be a JSON object")
        primary = data.get("primary")
        min_version = data.get("min_decryption_version", 1)
        raw_keys = data.get("keys")
        if not isinstance(primary, int) or not _is_int(primary) or not _is_int(min_version):
            raise KeyringError("primary and min_decryption_version must be integers")
        if not isinstance(raw_keys, dict) or not raw_keys:
            raise KeyringError("the keyring needs a non-empty 'keys' object")
        keys: dict[int, bytes] = {}
        for name, encoded in raw_keys.items():
            try:
                version = int(name)
            except ValueError:
                raise KeyringError("key versions must be integers") from None
            if not isinstance(encoded, str):
                raise KeyringError(f"key version {version} must be a base64 string")
            try:
                keys[version] = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise KeyringError(f"key version {version} is not valid base64") from None
        return cls(keys, primary, min_version)

    def to_json(self) -> str:
        """The keyring in the ``from_json`` format. This string IS the key material."""
        return json.dumps(
            {
                "primary": self._primary,
                "min_decryption_version": self._min_decryption_version,
                "keys": {
                    str(v): base64.b64encode(k).decode("ascii")
                    for v, k in sorted(self._keys.items())
                },
            },
            indent=2,
        )


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _write_private_temp(directory: Path, text: str) -> Path:
    fd, name = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise
    return Path(name)


def create_private_file(path: Path, text: str) -> bool:
    """Create ``path`` (mode 0600, parents 0700) holding ``text`` unless it already exists.

    Returns True when this call created it. The file appears complete or not at all (written
    to a temporary file, then hard-linked into place), and an existing file is never
    overwritten, so two processes starting at once cannot each generate a different secret
    and lose one of them. Raises ``OSError`` when the directory is not writable.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = _write_private_temp(path.parent, text)
    try:
        os.link(temp, path)
    except FileExistsError:
        return False
    except OSError:
        # No hard links on this filesystem: exclusive create (a racing reader may briefly
        # see a partial file and fail to start; it never overwrites one).
        return _create_exclusive(path, text)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)
    return True


def _create_exclusive(path: Path, text: str) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def replace_private_file(path: Path, text: str) -> None:
    """Atomically replace ``path`` with ``text`` (mode 0600)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = _write_private_temp(path.parent, text)
    try:
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def read_private_file(path: Path) -> str:
    """Read a secrets file, warning when group or others can read it."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("secrets file %s is readable by other users; chmod 600 it", path)
    return path.read_text(encoding="utf-8")


def load_or_create_keyring(path: Path) -> tuple[LocalKeyProvider, bool]:
    """Load the keyring at ``path``, generating one (mode 0600) if there is none.

    Returns the provider and whether it was created by this call. Losing this file makes
    every stored credential unreadable: it must be backed up with the database. Raises
    ``KeyringError`` for a malformed file and ``OSError`` when it cannot be read or written.
    """
    if not path.exists():
        created = create_private_file(path, LocalKeyProvider.generate().to_json())
        if created:
            return LocalKeyProvider.from_json(read_private_file(path)), True
    return LocalKeyProvider.from_json(read_private_file(path)), False


def rotate_keyring(path: Path) -> int:
    """Add a fresh key version to the keyring file at ``path`` and make it primary.

    Returns the new version. Existing tokens stay readable under their old versions; run
    ``TokenVault.rewrap_all`` afterwards to move them to the new one. Not safe against a
    concurrent rotation of the same file (rotations are an operator action).
    """
    provider = LocalKeyProvider.from_json(read_private_file(path)).rotated()
    replace_private_file(path, provider.to_json())
    return provider.primary_version


def retire_keyring(path: Path, below: int) -> LocalKeyProvider:
    """Raise the keyring file's ``min_decryption_version`` to ``below``; returns the result.

    The caller must have checked that no token still uses a version below ``below``
    (``brokerage keys retire`` does). Raises ``KeyringError`` as ``retired_below`` does.
    """
    provider = LocalKeyProvider.from_json(read_private_file(path)).retired_below(below)
    replace_private_file(path, provider.to_json())
    return provider


class KeyringFile:
    """A ``KeyProvider`` over a keyring file that follows the file when it changes.

    ``brokerage keys rotate`` and ``keys retire`` replace the file atomically (new inode);
    every instance reading it picks the change up within ``check_seconds`` on its next
    wrap or unwrap, and at once when asked to unwrap a version it does not know (another
    instance already re-wrapped a token under a newer key). That is what makes rotation
    work without a restart: during the short window where instances disagree on the
    primary version, every version involved still decrypts everywhere.

    A file that becomes unreadable or malformed is logged and the last good keyring kept:
    an operator's typo must not take every credential offline.
    """

    __slots__ = ("_check_seconds", "_current", "_lock", "_next_check", "_path", "_stamp")

    def __init__(self, path: Path, *, check_seconds: float = 1.0) -> None:
        self._path = path
        self._check_seconds = check_seconds
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()
        self._current = LocalKeyProvider.from_json(read_private_file(path))
        self._next_check = time.monotonic() + check_seconds

    def __repr__(self) -> str:
        return f"KeyringFile({str(self._path)!r}, {self._current!r})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a keyring is not picklable")

    def _file_stamp(self) -> tuple[int, int, int]:
        info = self._path.stat()
        return (info.st_ino, info.st_mtime_ns, info.st_size)

    def reload(self, *, force: bool = False) -> bool:
        """Re-read the file if it changed (or ``force``); True when the keyring changed."""
        with self._lock:
            now = time.monotonic()
            if not force and now < self._next_check:
                return False
            self._next_check = now + self._check_seconds
            try:
                stamp = self._file_stamp()
                if stamp == self._stamp and not force:
                    return False
                fresh = LocalKeyProvider.from_json(read_private_file(self._path))
            except (OSError, KeyringError) as exc:
                log.error(
                    "cannot re-read the keyring %s; keeping the last good one: %s", self._path, exc
                )
                return False
            self._stamp = stamp
            changed = fresh.to_json() != self._current.to_json()
            if changed:
                log.warning(
                    "keyring reloaded: primary version %d, min_decryption_version %d",
                    fresh.primary_version,
                    fresh.min_decryption_version,
                )
            self._current = fresh
            return changed

    @property
    def current(self) -> LocalKeyProvider:
        self.reload()
        return self._current

    @property
    def primary_version(self) -> int:
        return self.current.primary_version

    @property
    def min_decryption_version(self) -> int:
        return self.current.min_decryption_version

    def wrap(self, data_key: bytes, aad: bytes) -> tuple[int, bytes]:
        return self.current.wrap(data_key, aad)

    def unwrap(self, version: int, wrapped: bytes, aad: bytes) -> bytes:
        provider = self.current
        if version not in provider.versions:
            # Another instance may have rotated since our last look and re-wrapped this token.
            self.reload(force=True)
            provider = self._current
        return provider.unwrap(version, wrapped, aad)
