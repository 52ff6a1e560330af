"""Secrets for the embedded mode: a local keyring and a development JWT secret.

Production supplies both (a keyring or KMS, and a JWKS URL or a secret); the embedded
default generates them under ``./var/`` on first run and says loudly that they are not for
production. Missing secrets in production are a start-up error, never generated.
"""

from __future__ import annotations

import logging
import sys

from app.config import Settings
from app.security.audit import load_or_create_audit_key
from app.security.jwt import load_or_create_dev_secret
from app.security.keyring import (
    KeyProvider,
    KeyringFile,
    LocalKeyProvider,
    load_or_create_keyring,
)

log = logging.getLogger(__name__)

NOT_FOR_PRODUCTION = "generated on first run; NOT FOR PRODUCTION"


class ConfigurationError(RuntimeError):
    pass


def _warn(message: str) -> None:
    log.warning(message)
    print(f"WARNING: {message}", file=sys.stderr)  # noqa: T201 - the operator must see this


def prepare_local_secrets(settings: Settings) -> tuple[KeyProvider, Settings]:
    """Return the key provider and settings with a JWT secret (or JWKS URL) and an audit
    key in place."""
    production = settings.environment == "production"
    if settings.keyring_json is not None:
        provider: KeyProvider = LocalKeyProvider.from_json(settings.keyring_json.get_secret_value())
    elif production and not settings.keyring_path.exists():
        raise ConfigurationError("no keyring: set BROKERAGE_KEYRING_JSON or BROKERAGE_KEYRING_PATH")
    else:
        _provider, created = load_or_create_keyring(settings.keyring_path)
        if created:
            _warn(f"local keyring {settings.keyring_path} {NOT_FOR_PRODUCTION}")
        # Followed when it changes: `brokerage keys rotate/retire` needs no restart.
        provider = KeyringFile(settings.keyring_path)
    if settings.jwt_secret is None and settings.jwks_url is None:
        if production:
            raise ConfigurationError(
                "no JWT verification: set BROKERAGE_JWKS_URL or BROKERAGE_JWT_SECRET"
            )
        secret, created = load_or_create_dev_secret(settings.dev_secrets_path)
        if created:
            _warn(f"development JWT secret {settings.dev_secrets_path} {NOT_FOR_PRODUCTION}")
        settings = settings.model_copy(update={"jwt_secret": secret})
    if settings.audit_key is None:
        if production:
            raise ConfigurationError("no audit chain key: set BROKERAGE_AUDIT_KEY")
        path = settings.audit_key_path or settings.dev_secrets_path.with_name("audit-key.json")
        key, created = load_or_create_audit_key(path)
        if created:
            _warn(f"audit chain key {path} {NOT_FOR_PRODUCTION}")
        settings = settings.model_copy(update={"audit_key": key})
    return provider, settings
