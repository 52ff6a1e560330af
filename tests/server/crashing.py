"""Kill a real gateway process in the middle of an order and time the client's retry.

Shared by ``tests/server/test_crash_recovery.py`` and ``scripts/bench/crash_recovery``. The
gateway runs as its own process (``python -m app.cli serve``) from the code of ``repo`` (so
the benchmark can time another checkout, e.g. the main branch, with the same driver) on a
fresh Postgres database; the broker is the Alpaca fake in this process. The fake is told to
take the next order and then hold its answer: the order exists at the broker, the gateway
is waiting for the answer, and it is killed (SIGKILL) right then. It is started again on the
same port, and the client retries with the same Idempotency-Key until the answer is no
longer 409 ``request_in_progress``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.security.jwt import issue_dev_token
from tests.fakes.alpaca.server import FakeAlpaca
from tests.fakes.runner import serve_asgi
from tests.postgres import free_port, fresh_database

ORDER = {"symbol": "AAPL", "side": "buy", "quantity": "3", "order_type": "market"}


@dataclass(frozen=True)
class CrashFigures:
    restart_seconds: float  # from the kill until the new process answers /readyz
    answer_seconds: float  # from the kill until the retry's definitive answer
    status: int  # that answer's status
    body: dict[str, Any]
    retries: int  # retries answered 409 (or refused while the process was down)
    orders_at_broker: int  # orders the broker holds for the account (must be 1)


class Gateway:
    """One ``brokerage serve`` process of ``repo``'s code; killed and started again."""

    def __init__(self, repo: Path, env: dict[str, str], port: int, workdir: Path) -> None:
        self.repo = repo
        self.env = env
        self.port = port
        self.workdir = workdir
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_at = 0.0

    async def start(self, within: float = 60.0) -> None:
        python = self.repo / ".venv" / "bin" / "python"
        with (self.workdir / "gateway.log").open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603, ASYNC220 - our interpreter; not awaited
                [str(python), "-m", "app.cli", "serve", "--port", str(self.port)],
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the gateway exited; see {self.workdir / 'gateway.log'}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/readyz")).status_code == 200:
                        self.ready_at = time.monotonic()
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError("the gateway did not become ready")
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def _env(repo: Path, database_url: str, broker_url: str, secret: str) -> dict[str, str]:
    keyring = json.dumps(
        {
            "primary": 1,
            "min_decryption_version": 1,
            "keys": {"1": base64.b64encode(os.urandom(32)).decode()},
        }
    )
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return keep | {
        "PYTHONPATH": str(repo),
        "DATABASE_URL": database_url,
        "BROKERAGE_ENVIRONMENT": "test",
        "BROKERAGE_AUTO_MIGRATE": "true",
        "BROKERAGE_JWT_SECRET": secret,
        "BROKERAGE_KEYRING_JSON": keyring,
        "BROKERAGE_AUDIT_KEY": "crash-test-audit-key-" + uuid.uuid4().hex + uuid.uuid4().hex,
        "BROKERAGE_PAPER_FIRST_CYCLES": "0",
        "BROKERAGE_ALPACA_BASE_URL": broker_url,
        "BROKERAGE_ALPACA_DATA_URL": broker_url,
        "BROKERAGE_ALPACA_STREAM_URL": broker_url.replace("http://", "ws://") + "/stream",
        "BROKERAGE_LOG_LEVEL": "WARNING",
    }


async def _retry_until_answered(
    client: httpx.AsyncClient, path: str, key: str, within: float
) -> tuple[httpx.Response, int]:
    deadline = time.monotonic() + within
    retries = 0
    while True:
        try:
            response = await client.post(path, json=ORDER, headers={"Idempotency-Key": key})
        except httpx.TransportError:
            response = None
        if response is not None and response.status_code != 409:
            return response, retries
        retries += 1
        if time.monotonic() > deadline:
            raise TimeoutError(f"still no definitive answer after {within} s")
        await asyncio.sleep(0.25)


async def crash_mid_order(
    repo: Path, postgres_admin_url: str, within: float = 300.0, *, broker_stream: bool = True
) -> CrashFigures:
    """Place an order, kill the gateway while the broker holds its answer, restart, retry.

    ``broker_stream`` False points the gateway's Alpaca order stream at a closed port, so
    only reconciliation (no streamed ``new`` update) can learn about the order.
    """
    fake = FakeAlpaca()
    account = fake.add_account()
    secret = "crash-" + uuid.uuid4().hex
    user = f"crash-{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {issue_dev_token(secret, user)}"}  # type: ignore[arg-type]
    with tempfile.TemporaryDirectory(prefix="crash-") as tmp:
        workdir = Path(tmp)
        async with serve_asgi(fake.app) as broker_url, fresh_database(postgres_admin_url) as db:
            env = _env(repo, db, broker_url, secret)
            if not broker_stream:
                env["BROKERAGE_ALPACA_STREAM_URL"] = f"ws://127.0.0.1:{free_port()}/stream"
            gateway = Gateway(repo, env, free_port(), workdir)
            try:
                await gateway.start()
                async with httpx.AsyncClient(
                    base_url=gateway.url, headers=headers, timeout=60
                ) as client:
                    connected = await client.post(
                        "/v1/connections",
                        json={
                            "broker": "alpaca",
                            "credentials": {
                                "api_key_id": account.key_id,
                                "api_secret_key": account.secret,
                            },
                        },
                    )
                    assert connected.status_code == 201, connected.text
                    path = f"/v1/accounts/{connected.json()['accounts'][0]}/orders"
                    fake.faults.timeout_after_accept = 1
                    fake.faults.hang_seconds = within
                    key = "crash-" + uuid.uuid4().hex
                    placing = asyncio.create_task(
                        client.post(path, json=ORDER, headers={"Idempotency-Key": key})
                    )
                    async with asyncio.timeout(30):
                        while not account.orders:  # noqa: ASYNC110 - the fake has no event
                            await asyncio.sleep(0.005)
                    gateway.kill()
                    killed = time.monotonic()
                    with contextlib.suppress(httpx.TransportError):
                        await placing
                    fake.release_hung()
                    restart = asyncio.create_task(gateway.start())
                    response, retries = await _retry_until_answered(client, path, key, within)
                    answered = time.monotonic()
                    await restart
            finally:
                gateway.stop()
            return CrashFigures(
                restart_seconds=gateway.ready_at - killed,
                answer_seconds=answered - killed,
                status=response.status_code,
                body=response.json(),
                retries=retries,
                orders_at_broker=len(account.orders),
            )


def main() -> None:  # pragma: no cover - run through scripts/bench/crash_recovery
    import argparse

    from tests.postgres import postgres_server

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[2])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--within", type=float, default=300.0, help="give up after (s)")
    parser.add_argument(
        "--no-broker-stream",
        action="store_true",
        help="the broker's order stream unreachable: only reconciliation sees the order",
    )
    args = parser.parse_args()

    async def run() -> None:
        async with postgres_server() as admin_url:
            for n in range(args.runs):
                try:
                    figures = await crash_mid_order(
                        args.repo.resolve(),
                        admin_url,
                        args.within,
                        broker_stream=not args.no_broker_stream,
                    )
                except TimeoutError as exc:
                    print(f"run {n + 1} ({args.repo}): {exc}", flush=True)  # noqa: T201
                    continue
                print(  # noqa: T201
                    f"run {n + 1} ({args.repo}): kill -> definitive answer "
                    f"{figures.answer_seconds:.2f} s (restart {figures.restart_seconds:.2f} s, "
                    f"HTTP {figures.status} {figures.body.get('status', figures.body.get('code'))}"
                    f", {figures.retries} retries, {figures.orders_at_broker} order at broker)",
                    flush=True,
                )

    asyncio.run(run())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
