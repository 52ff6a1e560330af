"""The token vault: the only code that encrypts and decrypts stored broker credentials.

Every method works inside the caller's ``AsyncSession`` and never commits: the service that
owns the transaction decides. Reads go through ``BrokerTokenRepository`` scoped to the user,
so one user's id never reaches another user's token.

The read-only invariant lives here as well as in the database: ``credentials_for_order``
refuses a ``no_order_write`` (Tier C / Linked) or revoked credential *before* anything is
decrypted, and ``store`` forces ``no_order_write`` for Tier C, which the table's CHECK
constraint enforces again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app import errors
from app.db.models import BrokerToken
from app.db.repositories.broker_tokens import BrokerTokenRepository
from app.db.repositories.connections import ConnectionRepository
from app.ids import new_id
from app.security.credentials import Credentials
from app.security.envelope import AssociatedData, DecryptionError, Envelope, EnvelopeCipher

log = logging.getLogger(__name__)

BROKER_TIERS = ("tier_a", "tier_b", "tier_c")
# connections.tier -> broker_tokens.broker_tier
_CONNECTION_TIERS = {"A": "tier_a", "B": "tier_b", "C": "tier_c"}
TIER_A_ROTATE_AFTER = timedelta(days=90)
REWRAP_BATCH = 500


class CredentialMissing(errors.ConnectionBroken):
    title = "No credential is stored for this connection"


class CredentialRevoked(errors.ConnectionBroken):
    title = "The credential of this connection was revoked"


class CredentialUnreadable(errors.ConnectionBroken):
    title = "The stored credential of this connection cannot be read; reconnect it"


class ReadOnlyCredential(errors.ReadOnlyAccount):
    """An order path asked for a ``no_order_write`` credential."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _aad(token: BrokerToken) -> AssociatedData:
    # Built from the row itself: a ciphertext moved to another row gets that row's AAD.
    return AssociatedData(
        user_id=token.user_id,
        connection_id=token.connection_id,
        broker_slug=token.broker_slug,
        broker_tier=token.broker_tier,
    )


def _flow_aad(user_id: str, flow_id: str, broker_slug: str) -> AssociatedData:
    # "oauth_flow" is not a broker tier: a flow secret never opens as a credential.
    return AssociatedData(
        user_id=user_id, connection_id=flow_id, broker_slug=broker_slug, broker_tier="oauth_flow"
    )


def _envelope(token: BrokerToken) -> Envelope:
    return Envelope(
        ciphertext=token.token_ciphertext,
        wrapped_data_key=token.wrapped_data_key,
        key_version=token.key_version,
    )


class TokenVault:
    """Stores, hands out, revokes and re-wraps envelope-encrypted broker credentials."""

    def __init__(self, cipher: EnvelopeCipher, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self._cipher = cipher
        self._clock = clock

    def __repr__(self) -> str:
        return f"TokenVault({self._cipher!r})"

    async def store(
        self,
        session: AsyncSession,
        *,
        user_id: str,
        connection_id: str,
        broker_slug: str,
        broker_tier: str,
        credentials: Credentials,
        no_order_write: bool = False,
        expires_at: datetime | None = None,
        refresh_expires_at: datetime | None = None,
        rotate_after: datetime | None = None,
    ) -> str:
        """Encrypt and store the connection's credential; returns the new token id.

        The previous active token of the connection is revoked in the same transaction.
        Tier C is always stored ``no_order_write``. ``rotate_after`` defaults to 90 days
        from now for Tier A. Raises ``errors.NotFound`` when the connection is not the
        user's, ``ValueError`` when the tier is unknown or does not match the connection,
        and whatever the key provider raises when it cannot wrap (e.g. a KMS outage).
        """
        if broker_tier not in BROKER_TIERS:
            raise ValueError(f"unknown broker tier {broker_tier!r}")
        connection = await ConnectionRepository.for_user(session, user_id).get(
            connection_id, for_update=True
        )
        if connection is None:
            raise errors.NotFound("no such connection")
        if connection.broker_slug != broker_slug:
            raise ValueError("the broker slug does not match the connection")
        if _CONNECTION_TIERS.get(connection.tier) != broker_tier:
            raise ValueError("the broker tier does not match the connection")
        if broker_tier == "tier_c":
            no_order_write = True
        now = self._clock()
        if rotate_after is None and broker_tier == "tier_a":
            rotate_after = now + TIER_A_ROTATE_AFTER
        aad = AssociatedData(
            user_id=user_id,
            connection_id=connection_id,
            broker_slug=broker_slug,
            broker_tier=broker_tier,
        )
        envelope = self._cipher.seal(credentials.to_json_bytes(), aad)
        repo = BrokerTokenRepository.for_user(session, user_id)
        await repo.revoke_for_connection(connection_id, now)
        token = BrokerToken(
            id=new_id("tok"),
            connection_id=connection_id,
            user_id=user_id,
            broker_tier=broker_tier,
            broker_slug=broker_slug,
            no_order_write=no_order_write,
            token_ciphertext=envelope.ciphertext,
            wrapped_data_key=envelope.wrapped_data_key,
            key_version=envelope.key_version,
            created_at=now,
            updated_at=now,
            expires_at=expires_at,
            refresh_expires_at=refresh_expires_at,
            rotate_after=rotate_after,
        )
        repo.add(token)
        await session.flush()
        return token.id

    async def reseal(
        self,
        session: AsyncSession,
        *,
        user_id: str,
        connection_id: str,
        credentials: Credentials,
        expires_at: datetime | None,
        refresh_expires_at: datetime | None,
    ) -> str:
        """Replace the active token's credential in place (an OAuth refresh); returns its id.

        Sealed again under a fresh data key and the current KEK; the row keeps its id,
        ``created_at`` and ``rotate_after``. In place rather than a new row, so superseded
        refresh tokens do not pile up in the table. Raises ``CredentialRevoked`` /
        ``CredentialMissing`` when there is no active token to replace.
        """
        repo = BrokerTokenRepository.for_user(session, user_id)
        token = await repo.active_for_connection(connection_id, for_update=True)
        if token is None:
            if await repo.exists_for_connection(connection_id):
                raise CredentialRevoked()
            raise CredentialMissing()
        envelope = self._cipher.seal(credentials.to_json_bytes(), _aad(token))
        token.token_ciphertext = envelope.ciphertext
        token.wrapped_data_key = envelope.wrapped_data_key
        token.key_version = envelope.key_version
        token.expires_at = expires_at
        token.refresh_expires_at = refresh_expires_at
        token.updated_at = self._clock()
        await session.flush()
        return token.id

    def seal_flow_secret(
        self, *, user_id: str, flow_id: str, broker_slug: str, value: str
    ) -> Envelope:
        """Seal a short-lived secret of a connect flow (the PKCE verifier) for its state row.

        Bound to the row (user, flow id, broker) like a credential, so it never sits in the
        database in plaintext and a copy on another row does not open.
        """
        return self._cipher.seal(value.encode("utf-8"), _flow_aad(user_id, flow_id, broker_slug))

    def open_flow_secret(
        self, *, user_id: str, flow_id: str, broker_slug: str, envelope: Envelope
    ) -> str:
        """Open ``seal_flow_secret`` output; ``CredentialUnreadable`` when it does not open."""
        try:
            plaintext = self._cipher.open(envelope, _flow_aad(user_id, flow_id, broker_slug))
            return plaintext.decode("utf-8")
        except (DecryptionError, ValueError) as exc:
            log.error("cannot open the secret of oauth flow %s: %s", flow_id, exc)
            raise CredentialUnreadable() from None

    async def credentials_for_read(
        self, session: AsyncSession, *, user_id: str, connection_id: str
    ) -> Credentials:
        """Decrypted credentials for reads (positions, balances, quotes, refresh).

        Raises ``CredentialMissing`` (also when the connection belongs to another user),
        ``CredentialRevoked``, or ``CredentialUnreadable`` when decryption fails.
        """
        token = await self._active(session, user_id, connection_id)
        return self._decrypt(token)

    async def credentials_for_read_many(
        self, session: AsyncSession, *, user_id: str, connection_ids: Sequence[str]
    ) -> dict[str, Credentials | errors.ConnectionBroken]:
        """``credentials_for_read`` for many connections in one query (the portfolio).

        Each connection gets its credentials or the error ``credentials_for_read`` would
        have raised for it (``CredentialMissing``, ``CredentialRevoked``,
        ``CredentialUnreadable``), so one bad token never fails the others.
        """
        repo = BrokerTokenRepository.for_user(session, user_id)
        tokens = await repo.active_for_connections(connection_ids)
        result: dict[str, Credentials | errors.ConnectionBroken] = {}
        for connection_id in connection_ids:
            token = tokens.get(connection_id)
            try:
                if token is None:
                    if await repo.exists_for_connection(connection_id):
                        raise CredentialRevoked()
                    raise CredentialMissing()
                result[connection_id] = self._decrypt(token)
            except errors.ConnectionBroken as exc:
                result[connection_id] = exc
        return result

    async def credentials_for_order(
        self, session: AsyncSession, *, user_id: str, connection_id: str
    ) -> Credentials:
        """Decrypted credentials for placing, modifying or cancelling orders.

        Refuses before decrypting: ``ReadOnlyCredential`` (403 ``read_only_account``) for a
        ``no_order_write`` or Tier C token, ``CredentialRevoked`` / ``CredentialMissing``
        (409 ``connection_broken``) otherwise; ``CredentialUnreadable`` if it cannot decrypt.
        """
        return self._decrypt(await self._order_token(session, user_id, connection_id))

    async def check_order_credential(
        self, session: AsyncSession, *, user_id: str, connection_id: str
    ) -> None:
        """Raise what ``credentials_for_order`` would refuse with, without decrypting.

        For the order router, which weighs every account of a user before choosing one and
        must not open credentials it will not use.
        """
        await self._order_token(session, user_id, connection_id)

    async def _order_token(
        self, session: AsyncSession, user_id: str, connection_id: str
    ) -> BrokerToken:
        token = await self._active(session, user_id, connection_id)
        if token.no_order_write or token.broker_tier == "tier_c":
            raise ReadOnlyCredential()
        return token

    async def set_no_order_write(
        self, session: AsyncSession, *, user_id: str, connection_id: str, no_order_write: bool
    ) -> bool:
        """Make the connection's active credential read-only, or lift that; True if it changed.

        For aggregator links whose read-only status is learnt after the credential was
        stored (a Fidelity link through SnapTrade). Nothing is decrypted. A Tier C
        credential stays read-only (``ValueError``); ``CredentialMissing`` /
        ``CredentialRevoked`` when there is no active credential.
        """
        token = await self._active(session, user_id, connection_id)
        if token.broker_tier == "tier_c" and not no_order_write:
            raise ValueError("a tier C credential is always read-only")
        if token.no_order_write == no_order_write:
            return False
        token.no_order_write = no_order_write
        token.updated_at = self._clock()
        await session.flush()
        return True

    async def revoke(self, session: AsyncSession, *, user_id: str, connection_id: str) -> None:
        """Mark the connection's active tokens revoked (kept for audit, never handed out)."""
        await BrokerTokenRepository.for_user(session, user_id).revoke_for_connection(
            connection_id, self._clock()
        )

    async def rewrap_all(self, session: AsyncSession) -> int:
        """Re-wrap every token not under the primary key version; returns how many moved.

        Run after a key rotation, then commit. Tokens whose wrap does not authenticate
        (retired or lost key versions) are logged by id and skipped, not fatal. Provider
        outages propagate.
        """
        repo = BrokerTokenRepository.for_system(session)
        primary = self._cipher.primary_version
        moved = 0
        after: str | None = None
        while True:
            batch = await repo.needing_rewrap(primary, limit=REWRAP_BATCH, after_id=after)
            if not batch:
                return moved
            for token in batch:
                try:
                    envelope = self._cipher.rewrap(_envelope(token), _aad(token))
                except DecryptionError as exc:
                    log.error("cannot re-wrap broker token %s: %s", token.id, exc)
                    continue
                token.wrapped_data_key = envelope.wrapped_data_key
                token.key_version = envelope.key_version
                token.updated_at = self._clock()
                moved += 1
            await session.flush()
            after = batch[-1].id

    async def _active(self, session: AsyncSession, user_id: str, connection_id: str) -> BrokerToken:
        repo = BrokerTokenRepository.for_user(session, user_id)
        token = await repo.active_for_connection(connection_id)
        if token is not None:
            return token
        if await repo.exists_for_connection(connection_id):
            raise CredentialRevoked()
        raise CredentialMissing()

    def _decrypt(self, token: BrokerToken) -> Credentials:
        try:
            plaintext = self._cipher.open(_envelope(token), _aad(token))
            return Credentials.from_json_bytes(plaintext)
        except (DecryptionError, ValueError) as exc:
            log.error("cannot decrypt broker token %s: %s", token.id, exc)
            raise CredentialUnreadable() from None
