"""The ``brokerage`` command: serve, migrate, token, and the ops commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from app.config import get_settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app
    from app.server import guard, server_options

    settings = get_settings()
    if args.workers > 1:
        # Several processes: uvicorn imports the factory in each worker.
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_config=None,
            access_log=False,
            proxy_headers=False,
            **server_options(settings),
        )
        return 0
    config = uvicorn.Config(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        **server_options(settings),
    )
    uvicorn.Server(guard(config, settings)).run()
    return 0


def _migrate(_args: argparse.Namespace) -> int:
    from app.db.migrate import upgrade

    upgrade(get_settings().database_url)
    print("migrations applied")  # noqa: T201
    return 0


def _token(args: argparse.Namespace) -> int:
    from app.security.jwt import issue_dev_token
    from app.startup import prepare_local_secrets

    _provider, settings = prepare_local_secrets(get_settings())
    if settings.jwt_secret is None:
        print("tokens can only be issued with BROKERAGE_JWT_SECRET (HS256)", file=sys.stderr)  # noqa: T201
        return 2
    token = issue_dev_token(
        settings.jwt_secret,
        args.user,
        admin=args.admin,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )
    print(token)  # noqa: T201
    return 0


def _keys_rotate(_args: argparse.Namespace) -> int:
    from app.security.keyring import rotate_keyring

    settings = get_settings()
    if settings.keyring_json is not None:
        print("the keyring comes from BROKERAGE_KEYRING_JSON; rotate it there", file=sys.stderr)  # noqa: T201
        return 2
    version = rotate_keyring(settings.keyring_path)
    print(f"key version {version} is now primary; run `brokerage keys rewrap` next")  # noqa: T201
    return 0


def _keys_rewrap(args: argparse.Namespace) -> int:
    """Re-wrap in the foreground, under the same cluster-wide lease as the app's job."""
    import asyncio

    from app.db.leases import leases_for
    from app.db.session import create_engine, create_sessionmaker
    from app.security.envelope import EnvelopeCipher
    from app.security.vault import TokenVault
    from app.services.key_rewrap import KeyRewrap, RewrapResult
    from app.startup import prepare_local_secrets

    provider, settings = prepare_local_secrets(get_settings())

    async def rewrap() -> RewrapResult | None:
        engine = create_engine(settings.database_url)
        try:
            job = KeyRewrap(
                create_sessionmaker(engine),
                TokenVault(EnvelopeCipher(provider)),
                leases=leases_for(engine),
                batch_size=args.batch_size,
                pause_seconds=args.pause,
            )
            try:
                return await job.run_once()
            finally:
                await job.close()
        finally:
            await engine.dispose()

    result = asyncio.run(rewrap())
    if result is None:
        print(  # noqa: T201
            "a re-wrap is already running (another instance or command holds the lease); "
            "follow it with `brokerage keys status`",
            file=sys.stderr,
        )
        return 3
    print(  # noqa: T201
        f"re-wrapped {result.rewrapped} token(s) under key version {result.primary_version}"
        f" in {result.batches} batch(es); {result.remaining} remaining"
    )
    if result.failed:
        print(  # noqa: T201
            f"{len(result.failed)} token(s) could not be re-wrapped (their key version is "
            "lost or retired); see the log for their ids",
            file=sys.stderr,
        )
        return 1
    return 0


def _keys_status(_args: argparse.Namespace) -> int:
    import asyncio

    from app.db.leases import LocalLeases
    from app.db.session import create_engine, create_sessionmaker
    from app.security.envelope import EnvelopeCipher
    from app.security.vault import TokenVault
    from app.services.key_rewrap import KeyRewrap, KeyStatus
    from app.startup import prepare_local_secrets

    provider, settings = prepare_local_secrets(get_settings())

    async def status() -> KeyStatus:
        engine = create_engine(settings.database_url)
        try:
            job = KeyRewrap(
                create_sessionmaker(engine),
                TokenVault(EnvelopeCipher(provider)),
                leases=LocalLeases(),
            )
            return await job.status()
        finally:
            await engine.dispose()

    found = asyncio.run(status())
    print(f"primary key version: {found.primary_version}")  # noqa: T201
    if found.min_decryption_version is not None:
        print(f"min_decryption_version: {found.min_decryption_version}")  # noqa: T201
    for version, count in sorted(found.tokens_by_version.items()):
        print(f"version {version}: {count} token(s)")  # noqa: T201
    print(f"pending re-wrap: {found.pending_rewrap}")  # noqa: T201
    return 0


def _keys_retire(args: argparse.Namespace) -> int:
    """Raise min_decryption_version, but only once no token row needs the versions below."""
    import asyncio

    from app.db.session import create_engine, create_sessionmaker
    from app.security.keyring import KeyringError, retire_keyring
    from app.services.key_rewrap import tokens_below

    settings = get_settings()
    below: int = args.below

    async def count() -> int:
        engine = create_engine(settings.database_url)
        try:
            return await tokens_below(create_sessionmaker(engine), below)
        finally:
            await engine.dispose()

    still = asyncio.run(count())
    if still:
        print(  # noqa: T201
            f"refused: {still} token(s) still use a key version below {below}; "
            "run `brokerage keys rewrap` (or wait for the background re-wrap) first",
            file=sys.stderr,
        )
        return 1
    if settings.keyring_json is not None:
        print(  # noqa: T201
            f"no token uses a version below {below}; the keyring comes from "
            f"BROKERAGE_KEYRING_JSON: set its min_decryption_version to {below} there",
            file=sys.stderr,
        )
        return 2
    try:
        provider = retire_keyring(settings.keyring_path, below)
    except KeyringError as exc:
        print(f"refused: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    print(  # noqa: T201
        f"key versions below {provider.min_decryption_version} are retired; "
        f"primary is {provider.primary_version}"
    )
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _audit_verify(_args: argparse.Namespace) -> int:
    """Check the whole audit chain; exit 0 when intact, 1 naming the first bad entry."""
    import asyncio
    import json

    from app.db.session import create_engine, create_sessionmaker
    from app.security.audit import AuditChain, AuditVerification
    from app.startup import prepare_local_secrets

    _provider, settings = prepare_local_secrets(get_settings())
    key = settings.audit_key
    assert key is not None  # prepare_local_secrets puts one in place

    async def verify() -> AuditVerification:
        engine = create_engine(settings.database_url)
        try:
            return await AuditChain(key).verify(create_sessionmaker(engine))
        finally:
            await engine.dispose()

    result = asyncio.run(verify())
    print(  # noqa: T201
        json.dumps(
            {
                "ok": result.ok,
                "entries_checked": result.entries_checked,
                "head_seq": result.head_seq,
                "first_bad_seq": result.first_bad_seq,
                "problem": result.problem,
                "detail": result.detail,
                "chain": result.chain,
                "chains_checked": result.chains_checked,
                "failures": [
                    {
                        "chain": f.chain,
                        "first_bad_seq": f.first_bad_seq,
                        "problem": f.problem,
                        "detail": f.detail,
                    }
                    for f in result.failures
                ],
            }
        )
    )
    for failure in result.failures:
        print(  # noqa: T201
            f"audit chain {failure.chain} BROKEN at seq {failure.first_bad_seq}: {failure.detail}",
            file=sys.stderr,
        )
    if not result.ok:
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="brokerage", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP/WebSocket server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="processes (Postgres only)")
    serve.set_defaults(func=_serve)

    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.set_defaults(func=_migrate)

    token = sub.add_parser("token", help="print a development JWT (HS256)")
    token.add_argument("--user", required=True)
    token.add_argument("--admin", action="store_true")
    token.set_defaults(func=_token)

    keys = sub.add_parser("keys", help="key-encryption key rotation")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    keys_sub.add_parser("rotate", help="add a new primary key version").set_defaults(
        func=_keys_rotate
    )
    rewrap = keys_sub.add_parser(
        "rewrap", help="re-wrap every token's data key under the primary key (resumable)"
    )
    rewrap.add_argument("--batch-size", type=_positive_int, default=500, help="rows per batch")
    rewrap.add_argument(
        "--pause", type=float, default=0.0, help="seconds to sleep between batches (throttle)"
    )
    rewrap.set_defaults(func=_keys_rewrap)
    keys_sub.add_parser(
        "status", help="tokens per key version and how many still need a re-wrap"
    ).set_defaults(func=_keys_status)
    retire = keys_sub.add_parser(
        "retire", help="stop decrypting key versions below N (refused while tokens use them)"
    )
    retire.add_argument("--below", type=_positive_int, required=True)
    retire.set_defaults(func=_keys_retire)

    audit = sub.add_parser("audit", help="the audit chain of live BYOB order actions")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    audit_sub.add_parser(
        "verify", help="check the whole chain; exit 1 naming the first bad entry"
    ).set_defaults(func=_audit_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
