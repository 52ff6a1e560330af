"""The token vault: the only code that encrypts and decrypts stored broker credentials.

Every method works inside the caller's ``AsyncSession`` and never commits: the service that
owns the transaction decides. Reads go through ``BrokerTokenRepository`` scoped to the user,
so one user's id never reaches another user's token.

The read-only invariant lives here as well as in the database: ``credentials_for_order``
refuses a ``no_order_write`` (Tier C / Linked) or revoked credential *before* anything is
decrypted, and ``store`` forces ``no_order_write`` for Tier C, which the table's CHECK
constraint enforces again.

Opened credentials may be kept in memory (``CredentialCache``): callers that pass the
connection row's ``credential_version`` are served from there while it matches. Every
write here bumps that version (triggers of migration 0016) and drops the entry on every
instance (``app.security.credential_cache``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app import errors
from app.db.models import BrokerToken
from app.db.repositories.broker_tokens import (
    BrokerTokenRepository,
    DueToken,
    NewWrap,
    WrapRow,
)
from app.db.repositories.connections import ConnectionRepository
from app.ids import new_id
from app.security.credential_cache import (
    CredentialCache,
    credential_written,
    install_credential_hooks,
)
from app.security.credentials import Credentials
from app.security.envelope import AssociatedData, DecryptionError, Envelope, EnvelopeCipher
from app.security.keyring import KeyProvider

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


@dataclass(frozen=True, slots=True)
class RewrapBatch:
    """What one re-wrap batch did. ``claimed`` 0 means nothing above ``after_id`` was left
    (or every such row was locked by someone else)."""

    claimed: int
    rewrapped: int
    failed: tuple[str, ...]
    last_id: str | None
    primary_version: int


def _refuse_for_orders(no_order_write: bool, broker_tier: str) -> None:
    if no_order_write or broker_tier == "tier_c":
        raise ReadOnlyCredential()


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _aad(token: BrokerToken | WrapRow) -> AssociatedData:
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

    def __init__(
        self,
        cipher: EnvelopeCipher,
        *,
        clock: Callable[[], datetime] = _utcnow,
        cache: CredentialCache | None = None,
    ) -> None:
        self._cipher = cipher
        self._clock = clock
        self.cache = cache if cache is not None else CredentialCache(ttl_seconds=0, max_entries=0)
        self.decrypts = 0  # credentials opened by this vault (the benchmarks read it)
        install_credential_hooks()

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

        The previous active token of the connection is revoked in the same transaction and
        the connection's ``rotation_due_at`` flag is cleared. Tier C is always stored
        ``no_order_write``. The data key is wrapped under the primary key version, also
        while a re-wrap is running. ``rotate_after`` defaults to 90 days
        from now for Tier A. Raises ``errors.NotFound`` when the connection is not the
        user's, ``CredentialRevoked`` when the connection was revoked (revocation is final),
        ``ValueError`` when the tier is unknown or does not match the connection,
        and whatever the key provider raises when it cannot wrap (e.g. a KMS outage).
        """
        if broker_tier not in BROKER_TIERS:
            raise ValueError(f"unknown broker tier {broker_tier!r}")
        connection = await ConnectionRepository.for_user(session, user_id).get(
            connection_id, for_update=True
        )
        if connection is None:
            raise errors.NotFound("no such connection")
        if connection.status == "revoked" or connection.revoked_at is not None:
            # Revocation is final: reconnecting makes a new connection, never revives this one.
            raise CredentialRevoked()
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
        # A fresh credential satisfies the rotation policy (see app.services.token_rotation).
        connection.rotation_due_at = None
        await session.flush()
        await self._changed(session, connection_id)
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
        await self._changed(session, connection_id)
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
        self,
        session: AsyncSession,
        *,
        user_id: str,
        connection_id: str,
        version: int | None = None,
    ) -> Credentials:
        """Decrypted credentials for reads (positions, balances, quotes, refresh).

        ``version``: the connection row's ``credential_version`` as the caller read it; with
        it the credential may come from (and goes to) the cache. Raises
        ``CredentialMissing`` (also when the connection belongs to another user),
        ``CredentialRevoked``, or ``CredentialUnreadable`` when decryption fails.
        """
        return await self._opened(session, user_id, connection_id, version)

    async def credentials_for_read_many(
        self,
        session: AsyncSession,
        *,
        user_id: str,
        connection_ids: Sequence[str],
        versions: Mapping[str, int] | None = None,
    ) -> dict[str, Credentials | errors.ConnectionBroken]:
        """``credentials_for_read`` for many connections in one query (the portfolio).

        Each connection gets its credentials or the error ``credentials_for_read`` would
        have raised for it (``CredentialMissing``, ``CredentialRevoked``,
        ``CredentialUnreadable``), so one bad token never fails the others. ``versions``:
        the connection rows' ``credential_version`` (as for ``credentials_for_read``);
        connections served from the cache are not queried.
        """
        versions = versions or {}
        result: dict[str, Credentials | errors.ConnectionBroken] = {}
        wanted: list[str] = []
        for connection_id in connection_ids:
            version = versions.get(connection_id)
            cached = None if version is None else self.cache.get(connection_id, version)
            if cached is not None:
                result[connection_id] = cached.credentials
            else:
                wanted.append(connection_id)
        repo = BrokerTokenRepository.for_user(session, user_id)
        tokens = await repo.active_for_connections(wanted)
        for connection_id in wanted:
            token = tokens.get(connection_id)
            try:
                if token is None:
                    if await repo.exists_for_connection(connection_id):
                        raise CredentialRevoked()
                    raise CredentialMissing()
                result[connection_id] = self._open(token, versions.get(connection_id))
            except errors.ConnectionBroken as exc:
                result[connection_id] = exc
        return {connection_id: result[connection_id] for connection_id in connection_ids}

    async def credentials_for_order(
        self,
        session: AsyncSession,
        *,
        user_id: str,
        connection_id: str,
        version: int | None = None,
    ) -> Credentials:
        """Decrypted credentials for placing, modifying or cancelling orders.

        Refuses before decrypting: ``ReadOnlyCredential`` (403 ``read_only_account``) for a
        ``no_order_write`` or Tier C token, ``CredentialRevoked`` / ``CredentialMissing``
        (409 ``connection_broken``) otherwise; ``CredentialUnreadable`` if it cannot decrypt.
        ``version`` as for ``credentials_for_read``; a cached credential is refused the same
        way (its token's flags are kept with it).
        """
        if version is not None:
            cached = self.cache.get(connection_id, version)
            if cached is not None:
                _refuse_for_orders(cached.no_order_write, cached.broker_tier)
                return cached.credentials
        token = await self._order_token(session, user_id, connection_id)
        return self._open(token, version)

    async def check_order_credential(
        self,
        session: AsyncSession,
        *,
        user_id: str,
        connection_id: str,
        version: int | None = None,
    ) -> None:
        """Raise what ``credentials_for_order`` would refuse with, without decrypting.

        For the order router, which weighs every account of a user before choosing one and
        must not open credentials it will not use.
        """
        if version is not None:
            cached = self.cache.get(connection_id, version)
            if cached is not None:
                _refuse_for_orders(cached.no_order_write, cached.broker_tier)
                return
        await self._order_token(session, user_id, connection_id)

    async def _order_token(
        self, session: AsyncSession, user_id: str, connection_id: str
    ) -> BrokerToken:
        token = await self._active(session, user_id, connection_id)
        _refuse_for_orders(token.no_order_write, token.broker_tier)
        return token

    async def _opened(
        self, session: AsyncSession, user_id: str, connection_id: str, version: int | None
    ) -> Credentials:
        if version is not None:
            cached = self.cache.get(connection_id, version)
            if cached is not None:
                return cached.credentials
        return self._open(await self._active(session, user_id, connection_id), version)

    def _open(self, token: BrokerToken, version: int | None) -> Credentials:
        """Decrypt ``token``; kept in the cache when the caller knows the version."""
        credentials = self._decrypt(token)
        if version is not None:
            self.cache.put(
                token.connection_id,
                version,
                token_id=token.id,
                broker_tier=token.broker_tier,
                no_order_write=token.no_order_write,
                credentials=credentials,
            )
        return credentials

    async def _changed(self, session: AsyncSession, connection_id: str) -> None:
        """The connection's credential (or its right to place orders) changed in this
        transaction. The database bumped its version (a trigger, which on Postgres also
        tells every instance to drop it); see ``credential_written`` for the rest."""
        await credential_written(session, connection_id)

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
        await self._changed(session, connection_id)
        return True

    async def revoke(self, session: AsyncSession, *, user_id: str, connection_id: str) -> None:
        """Mark the connection's active tokens revoked (kept for audit, never handed out)."""
        await BrokerTokenRepository.for_user(session, user_id).revoke_for_connection(
            connection_id, self._clock()
        )
        await self._changed(session, connection_id)

    @property
    def primary_version(self) -> int:
        """The key version new and re-wrapped tokens go under."""
        return self._cipher.primary_version

    @property
    def key_provider(self) -> KeyProvider:
        return self._cipher.provider

    async def rewrap_batch(
        self, session: AsyncSession, *, limit: int = REWRAP_BATCH, after_id: str | None = None
    ) -> RewrapBatch:
        """Re-wrap up to ``limit`` tokens under an older key version, ids above ``after_id``.

        One batch of the background re-wrap (``app.services.key_rewrap``); the caller
        commits it as its own short transaction. Rows are claimed with ``FOR UPDATE SKIP
        LOCKED`` on Postgres and written only if unchanged since they were read, so a token
        stored or refreshed concurrently keeps its new envelope. Only the data key is
        re-wrapped; the ciphertext and the plaintext are never touched. A token whose wrap
        does not authenticate (lost key version) is logged by id and reported in
        ``failed``; provider outages (KMS) propagate and the caller's transaction must roll
        back.
        """
        repo = BrokerTokenRepository.for_system(session)
        primary = self._cipher.primary_version
        rows = await repo.claim_for_rewrap(primary, limit=limit, after_id=after_id)
        wraps: list[NewWrap] = []
        failed: list[str] = []
        for row in rows:
            old = Envelope(
                ciphertext=b"", wrapped_data_key=row.wrapped_data_key, key_version=row.key_version
            )
            try:
                fresh = self._cipher.rewrap(old, _aad(row))
            except DecryptionError as exc:
                log.error("cannot re-wrap broker token %s: %s", row.id, exc)
                failed.append(row.id)
                continue
            wraps.append(
                NewWrap(
                    id=row.id,
                    old_wrap=row.wrapped_data_key,
                    old_version=row.key_version,
                    new_wrap=fresh.wrapped_data_key,
                    new_version=fresh.key_version,
                )
            )
        written = await repo.store_wraps(wraps, self._clock())
        return RewrapBatch(
            claimed=len(rows),
            rewrapped=len(written),
            failed=tuple(failed),
            last_id=rows[-1].id if rows else None,
            primary_version=primary,
        )

    async def pending_rewrap(self, session: AsyncSession) -> int:
        """Tokens still wrapped under a version older than the primary one."""
        return await BrokerTokenRepository.for_system(session).count_below_version(
            self._cipher.primary_version
        )

    async def due_for_rotation(self, session: AsyncSession, *, limit: int = 200) -> list[DueToken]:
        """Active Tier A tokens past ``rotate_after`` whose connection is not flagged yet."""
        return await BrokerTokenRepository.for_system(session).due_for_rotation(
            self._clock(), limit=limit
        )

    async def active_token(
        self, session: AsyncSession, *, user_id: str, connection_id: str
    ) -> tuple[str, datetime | None] | None:
        """The id and ``rotate_after`` of the connection's active token (nothing decrypted)."""
        token = await BrokerTokenRepository.for_user(session, user_id).active_for_connection(
            connection_id
        )
        return None if token is None else (token.id, token.rotate_after)

    async def _active(self, session: AsyncSession, user_id: str, connection_id: str) -> BrokerToken:
        repo = BrokerTokenRepository.for_user(session, user_id)
        token = await repo.active_for_connection(connection_id)
        if token is not None:
            return token
        if await repo.exists_for_connection(connection_id):
            raise CredentialRevoked()
        raise CredentialMissing()

    def _decrypt(self, token: BrokerToken) -> Credentials:
        self.decrypts += 1
        try:
            plaintext = self._cipher.open(_envelope(token), _aad(token))
            return Credentials.from_json_bytes(plaintext)
        except (DecryptionError, ValueError) as exc:
            log.error("cannot decrypt broker token %s: %s", token.id, exc)
            raise CredentialUnreadable() from None
