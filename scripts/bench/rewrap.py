"""Driver for scripts/bench/rewrap (see that file). Not a test: it prints figures.

Phases, all against one real server (``brokerage serve``) on a fresh Postgres database:
  A. paper orders through HTTP for BENCH_DURATION seconds, no re-wrap: the baseline rate;
  B. ``keys rotate`` (the keyring file), then paper orders while the app's background
     re-wrap moves every token to the new version: the rate during it, and its duration;
  C. another rotation with no order load: the re-wrap's duration on its own.
The tokens are sealed by the real envelope code and bulk-inserted; the server finds the
rotation by itself (its keyring follows the file) and re-wraps under its lease.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from app.db.migrate import upgrade  # noqa: E402
from app.db.session import create_engine, create_sessionmaker  # noqa: E402
from app.security.envelope import EnvelopeCipher  # noqa: E402
from app.security.jwt import issue_dev_token  # noqa: E402
from app.security.keyring import load_or_create_keyring, rotate_keyring  # noqa: E402
from tests.postgres import free_port, fresh_database, postgres_server  # noqa: E402
from tests.services.rotation_support import seed_tokens  # noqa: E402

TOKENS = int(os.environ.get("BENCH_TOKENS", "100000"))
DURATION = float(os.environ.get("BENCH_DURATION", "15"))
CONCURRENCY = int(os.environ.get("BENCH_CONCURRENCY", "16"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
# A port nothing listens on (a fixed default could measure some other server).
PORT = int(os.environ.get("BENCH_PORT", "0")) or free_port()
ACCOUNTS = 32
ORDER = {"symbol": "AAPL", "side": "buy", "quantity": "1", "order_type": "market"}


def start_server(env: dict[str, str]) -> subprocess.Popen[bytes]:
    args = [str(ROOT / ".venv/bin/brokerage"), "serve", "--port", str(PORT)]
    args += ["--workers", str(WORKERS)]
    proc = subprocess.Popen(args, env=env, cwd=ROOT, start_new_session=True)  # noqa: S603
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{PORT}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError("server did not start")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)


class Load:
    """CONCURRENCY loops placing paper orders until stopped; records completion times."""

    def __init__(self, client: httpx.AsyncClient, accounts: list[str]) -> None:
        self._client = client
        self._accounts = accounts
        self.done: list[float] = []
        self.failures: dict[int, int] = {}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop(i)) for i in range(CONCURRENCY)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _loop(self, worker: int) -> None:
        index = 0
        while not self._stop.is_set():
            account = self._accounts[(worker + index * CONCURRENCY) % len(self._accounts)]
            index += 1
            response = await self._client.post(
                f"/v1/accounts/{account}/orders",
                json=ORDER,
                headers={"Idempotency-Key": uuid.uuid4().hex},
            )
            if response.status_code == 201:
                self.done.append(time.monotonic())
            else:
                self.failures[response.status_code] = self.failures.get(response.status_code, 0) + 1

    def rate(self, start: float, end: float) -> float:
        count = sum(1 for t in self.done if start <= t <= end)
        return count / (end - start)


async def wait_rewrapped(
    client: httpx.AsyncClient, admin: dict[str, str], total: int, primary: int
) -> tuple[float, float, dict[str, Any]]:
    """Poll GET /v1/admin/keys: (first progress seen, done, the body when done)."""
    began: float | None = None
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        body = (await client.get("/v1/admin/keys", headers=admin)).json()
        now = time.monotonic()
        if body["primary_version"] == primary and began is None and body["pending_rewrap"] < total:
            began = now
        if body["primary_version"] == primary and body["pending_rewrap"] == 0:
            return began or now, now, body
        await asyncio.sleep(0.25)
    raise RuntimeError("the re-wrap did not finish in 30 minutes")


async def run_seconds(admin: dict[str, str], primary: int) -> float | None:
    """The app's own measure of its last run, asked on new connections until the worker
    that ran it answers (a kept-alive connection always reaches the same worker)."""
    for _ in range(100):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{PORT}") as fresh:
            body = (await fresh.get("/v1/admin/keys", headers=admin)).json()
        last = body["last_run_here"]
        if last is not None and last["rewrapped"] > 0 and last["primary_version"] == primary:
            seconds: float = last["seconds"]
            return seconds
    return None


async def main() -> None:
    explicit = os.environ.get("BENCH_DATABASE_URL")
    async with postgres_server() as admin_url, fresh_database(explicit or admin_url) as url:
        await asyncio.to_thread(upgrade, url)
        workdir = Path(tempfile.mkdtemp(prefix="bench-rewrap-"))
        keyring = workdir / "keyring.json"
        provider, _ = load_or_create_keyring(keyring)

        engine = create_engine(url)
        started = time.monotonic()
        await seed_tokens(create_sessionmaker(engine), EnvelopeCipher(provider), TOKENS)
        seed_seconds = time.monotonic() - started
        await engine.dispose()
        print(f"seeded {TOKENS} sealed tokens in {seed_seconds:.1f} s", flush=True)
        print(f"load average (1 min) before: {os.getloadavg()[0]:.2f}", flush=True)

        secret = "bench-secret-" + os.urandom(32).hex()
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "BROKERAGE_JWT_SECRET": secret,
            "BROKERAGE_KEYRING_PATH": str(keyring),
            "BROKERAGE_LOG_LEVEL": "WARNING",
            "BROKERAGE_REWRAP_INTERVAL_SECONDS": "1",
        }
        env.pop("BROKERAGE_KEYRING_JSON", None)
        server = start_server(env)
        try:
            user = issue_dev_token(secret, "bench")
            admin = {"Authorization": f"Bearer {issue_dev_token(secret, 'ops', admin=True)}"}
            limits = httpx.Limits(max_connections=CONCURRENCY + 4)
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{PORT}",
                headers={"Authorization": f"Bearer {user}"},
                limits=limits,
                timeout=60,
            ) as client:
                accounts = []
                for _ in range(ACCOUNTS):
                    r = await client.post(
                        "/v1/connections",
                        json={"broker": "paper", "options": {"starting_cash": "1000000000"}},
                    )
                    r.raise_for_status()
                    accounts.append(r.json()["accounts"][0])

                warm = Load(client, accounts)  # warm-up
                warm.start()
                await asyncio.sleep(3)
                await warm.stop()

                baseline = Load(client, accounts)
                baseline.start()
                t0 = time.monotonic()
                await asyncio.sleep(DURATION)
                t1 = time.monotonic()
                await baseline.stop()
                base_rate = baseline.rate(t0, t1)

                during = Load(client, accounts)
                during.start()
                await asyncio.sleep(1)
                rotated_at = time.monotonic()
                rotate_keyring(keyring)  # `brokerage keys rotate`
                began, finished, body = await wait_rewrapped(client, admin, TOKENS, 2)
                await during.stop()
                loaded_rate = during.rate(began, finished)
                loaded_run = await run_seconds(admin, 2)
                by_version = body["tokens_by_version"]

                rotated_again = time.monotonic()
                rotate_keyring(keyring)
                began_idle, finished_idle, _ = await wait_rewrapped(client, admin, TOKENS, 3)
                idle_run = await run_seconds(admin, 3)
        finally:
            stop_server(server)

    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(
        f"key re-wrap of {TOKENS} tokens, {WORKERS} server workers, "
        f"{CONCURRENCY} concurrent order clients, batches of 500, "
        f"pause {os.environ.get('BROKERAGE_REWRAP_PAUSE_SECONDS', '0')} s between batches"
    )
    print(
        f"  under order load: {finished - began:.1f} s observed "
        f"(job's own measure {_s(loaded_run)}; {finished - rotated_at:.1f} s from the rotation, "
        "incl. up to ~2 s until the app notices)"
    )
    print(
        f"  without load:     {finished_idle - began_idle:.1f} s observed "
        f"(job's own measure {_s(idle_run)}; {finished_idle - rotated_again:.1f} s from the "
        "rotation)"
    )
    print(f"  tokens by version after the first re-wrap: {json.dumps(by_version)}")
    print("paper orders placed through HTTP (201s per second)")
    print(f"  without a re-wrap: {base_rate:8.1f} /s over {t1 - t0:.1f} s")
    print(f"  during the re-wrap: {loaded_rate:7.1f} /s over {finished - began:.1f} s")
    print(f"  ratio: {loaded_rate / base_rate:.2f}")
    failures = {**baseline.failures}
    for status, count in during.failures.items():
        failures[status] = failures.get(status, 0) + count
    if failures:
        print(f"  non-201 answers: {failures}")


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


if __name__ == "__main__":
    asyncio.run(main())
