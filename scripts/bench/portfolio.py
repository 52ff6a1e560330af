"""Driver for scripts/bench/portfolio (see that file). Not a test: it prints figures.

Processes: the fake Alpaca (this file, ``fake`` mode) and the gateway (``brokerage serve``)
each run on their own, on real sockets; this process is the client. The gateway runs on
Postgres with its production defaults (portfolio timeout 1 s, skip 30 s, background tasks
on); only the Alpaca rate pacing is lifted, since the fake does not rate limit and the bench
sends far more than Alpaca's 200 requests per minute per key.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from app.db.migrate import upgrade  # noqa: E402
from app.security.jwt import issue_dev_token  # noqa: E402
from tests.fakes.alpaca import FakeAlpaca, serve_asgi  # noqa: E402
from tests.postgres import fresh_database, postgres_server  # noqa: E402

# Idle connections expire before uvicorn's 5 s keep-alive closes them from the other side.
LIMITS = httpx.Limits(keepalive_expiry=2.0)


def key(n: int) -> tuple[str, str]:
    """The fake's API key id and secret of bench account ``n`` (deterministic)."""
    return f"PKBENCH{n:013d}", f"bench-alpaca-secret-{n:04d}-not-a-real-key"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the fake, in its own process -------------------------------------------------------


async def serve_fake(port: int, accounts: int, latency: float, slow_latency: float) -> None:
    fake = FakeAlpaca()
    fake.faults.latency = latency
    for n in range(accounts):
        key_id, secret = key(n)
        fake.add_account(key_id=key_id, secret=secret, cash=f"{100000 + n}.{n:02d}")
    slow_key, _ = key(accounts - 1)
    fake.faults.latency_by_key[slow_key] = slow_latency
    async with serve_asgi(fake.app, port=port, on_shutdown=fake.release_hung):
        await asyncio.Event().wait()


# --- the measurement --------------------------------------------------------------------


def wait_for(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, env=env, cwd=ROOT, start_new_session=True)  # noqa: S603


def stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


async def direct_read(client: httpx.AsyncClient, n: int) -> float:
    """What the gateway does per account, straight to the fake: account and positions."""
    key_id, secret = key(n)
    headers = {"APCA-API-KEY-ID": key_id, "APCA-API-SECRET-KEY": secret}
    started = time.perf_counter()
    account, positions = await asyncio.gather(
        client.get("/v2/account", headers=headers), client.get("/v2/positions", headers=headers)
    )
    elapsed = (time.perf_counter() - started) * 1000
    account.raise_for_status()
    positions.raise_for_status()
    return elapsed


async def measure(args: argparse.Namespace) -> None:
    fake_port, gateway_port = free_port(), free_port()
    fake_url, gateway_url = f"http://127.0.0.1:{fake_port}", f"http://127.0.0.1:{gateway_port}"
    explicit = os.environ.get("BENCH_DATABASE_URL")
    async with postgres_server() as admin, fresh_database(explicit or admin) as url:
        await asyncio.to_thread(upgrade, url)
        secret = "bench-secret-" + os.urandom(32).hex()
        keyring = json.dumps(
            {
                "primary": 1,
                "min_decryption_version": 1,
                "keys": {"1": base64.b64encode(os.urandom(32)).decode()},
            }
        )
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "BROKERAGE_JWT_SECRET": secret,
            "BROKERAGE_KEYRING_JSON": keyring,
            "BROKERAGE_LOG_LEVEL": "ERROR",
            "BROKERAGE_ALPACA_BASE_URL": fake_url,
            "BROKERAGE_ALPACA_DATA_URL": fake_url,
            "BROKERAGE_ALPACA_REQUESTS_PER_MINUTE": "10000000",
        }
        python = str(ROOT / ".venv/bin/python")
        fake = start(
            [
                python,
                str(Path(__file__)),
                "fake",
                "--port",
                str(fake_port),
                "--accounts",
                str(args.accounts),
                "--latency-ms",
                str(args.latency_ms),
                "--slow-ms",
                str(args.slow_ms),
            ],
            env,
        )
        gateway = None
        try:
            wait_for(fake_url + "/v2/account", fake)
            gateway = start(
                [
                    str(ROOT / ".venv/bin/brokerage"),
                    "serve",
                    "--port",
                    str(gateway_port),
                    "--workers",
                    str(args.workers),
                ],
                env,
            )
            wait_for(gateway_url + "/healthz", gateway)
            await run(args, fake_url, gateway_url, secret)
        finally:
            if gateway is not None:
                stop(gateway)
            stop(fake)


async def run(args: argparse.Namespace, fake_url: str, gateway_url: str, secret: str) -> None:
    auth = {"Authorization": f"Bearer {issue_dev_token(secret, 'bench-portfolio')}"}
    slow_n = args.accounts - 1
    async with (
        httpx.AsyncClient(base_url=gateway_url, headers=auth, timeout=30, limits=LIMITS) as gw,
        httpx.AsyncClient(base_url=fake_url, timeout=30, limits=LIMITS) as direct,
    ):
        ids: dict[int, str] = {}
        for n in range(args.accounts):
            key_id, key_secret = key(n)
            created = await gw.post(
                "/v1/connections",
                json={
                    "broker": "alpaca",
                    "credentials": {"api_key_id": key_id, "api_secret_key": key_secret},
                },
            )
            created.raise_for_status()
            ids[n] = created.json()["accounts"][0]
        slow_id = ids[slow_n]
        healthy = [n for n in ids if n != slow_n]

        missed: dict[str, int] = {}  # healthy accounts not read, by reason

        def check(body: dict[str, Any]) -> dict[str, Any]:
            """The slow account's entry; counts healthy accounts that were not read."""
            slow = None
            for entry in body["unavailable"]:
                if entry["account_id"] == slow_id:
                    slow = entry
                else:
                    name = f"{entry['reason']} attempted={entry['attempted']}"
                    missed[name] = missed.get(name, 0) + 1
            if slow is None:
                raise AssertionError("the slow account was read in time: nothing to measure")
            return dict(slow)

        started = time.perf_counter()
        cold = await gw.get("/v1/portfolio")
        cold_ms = (time.perf_counter() - started) * 1000
        cold.raise_for_status()
        cold_slow = check(cold.json())
        for _ in range(args.warmup):
            (await gw.get("/v1/portfolio")).raise_for_status()
        missed.clear()

        portfolio_ms: list[float] = []
        slowest_healthy_ms: list[float] = []
        reasons: dict[tuple[str, bool], int] = {}
        for _ in range(args.requests):
            started = time.perf_counter()
            answer = await gw.get("/v1/portfolio")
            portfolio_ms.append((time.perf_counter() - started) * 1000)
            answer.raise_for_status()
            slow = check(answer.json())
            mark = (slow["reason"], slow["attempted"])
            reasons[mark] = reasons.get(mark, 0) + 1
            # The floor for any aggregator: it must wait for its slowest healthy broker.
            each = await asyncio.gather(*(direct_read(direct, n) for n in healthy))
            slowest_healthy_ms.append(max(each))

        # Context: one healthy account read alone (no other load on the fake).
        alone = [await direct_read(direct, healthy[i % len(healthy)]) for i in range(100)]

    p50, p99 = percentile(portfolio_ms, 0.5), percentile(portfolio_ms, 0.99)
    h50, h99 = percentile(slowest_healthy_ms, 0.5), percentile(slowest_healthy_ms, 0.99)
    print(
        f"portfolio over {args.accounts} Alpaca-fake accounts: {len(healthy)} at "
        f"{args.latency_ms:g} ms, 1 at {args.slow_ms:g} ms; gateway on Postgres, "
        f"{args.workers} worker(s), portfolio timeout 1 s (default), {args.requests} sequential "
        f"requests after {args.warmup} warm-up"
    )
    print(
        f"first answer (cold; the slow account is asked): {cold_ms:7.1f} ms  slow account: "
        f"reason={cold_slow['reason']} attempted={cold_slow['attempted']}"
    )
    print(
        f"portfolio            p50 {p50:7.1f} ms   p99 {p99:7.1f} ms   max "
        f"{max(portfolio_ms):7.1f} ms   mean {statistics.fmean(portfolio_ms):7.1f} ms"
    )
    print(
        f"slowest healthy read p50 {h50:7.1f} ms   p99 {h99:7.1f} ms   (per request, the slowest "
        "of the healthy accounts' account+positions read straight to the fake)"
    )
    print(
        f"one healthy read alone p50 {percentile(alone, 0.5):7.1f} ms   p99 "
        f"{percentile(alone, 0.99):7.1f} ms   (context: the fake with no concurrent load)"
    )
    print(f"ratio p99/p99 {p99 / h99:.2f}   p50/p50 {p50 / h50:.2f}   (target p99 ratio <= 1.3)")
    summary = ", ".join(
        f"{reason} attempted={attempted}: {count}"
        for (reason, attempted), count in sorted(reasons.items())
    )
    print(f"slow account in the measured answers: {summary}")
    lost = ", ".join(f"{reason}: {count}" for reason, count in sorted(missed.items()))
    print(f"healthy accounts not read in the measured answers: {lost or 'none'}")
    waited = sum(1 for ms in portfolio_ms if ms >= args.slow_ms)
    print(
        f"answers that took the slow broker's {args.slow_ms:g} ms or longer: {waited} of "
        f"{len(portfolio_ms)} (reported, not waited for)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="GET /v1/portfolio with one slow broker")
    sub = parser.add_subparsers(dest="mode")
    fake = sub.add_parser("fake", help="serve the fake Alpaca (used by the bench itself)")
    for p in (parser, fake):
        p.add_argument("--accounts", type=int, default=10)
        p.add_argument("--latency-ms", type=float, default=50.0)
        p.add_argument("--slow-ms", type=float, default=2000.0)
    fake.add_argument("--port", type=int, required=True)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--workers", type=int, default=int(os.environ.get("BENCH_WORKERS", "1")))
    args = parser.parse_args()
    if args.mode == "fake":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(
                serve_fake(args.port, args.accounts, args.latency_ms / 1000, args.slow_ms / 1000)
            )
        return
    asyncio.run(measure(args))


if __name__ == "__main__":
    main()
