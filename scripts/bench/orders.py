"""Driver for scripts/bench/orders (see that file). Not a test: it prints figures."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from app.db.migrate import upgrade  # noqa: E402
from app.security.jwt import issue_dev_token  # noqa: E402
from tests.postgres import free_port, fresh_database, postgres_server  # noqa: E402

DURATION = os.environ.get("BENCH_DURATION", "10s")
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
ACCOUNTS = 64

WRK_SCRIPT = """
local accounts = {%(accounts)s}
local counter = 0
local threads = 0
-- Each wrk thread gets its own key prefix: keys must never repeat across threads, or the
-- benchmark would measure idempotent replays instead of new orders.
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  prefix = string.format("%%d-%%d-%%s", os.time(), tid, "%(run)s")
end
request = function()
  counter = counter + 1
  local account = accounts[(counter %% #accounts) + 1]
  local headers = {}
  headers["Content-Type"] = "application/json"
  headers["Authorization"] = "Bearer %(token)s"
  headers["Idempotency-Key"] = prefix .. "-" .. counter
  return wrk.format("POST", "/v1/accounts/" .. account .. "/orders", headers, %(body)s)
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%f %%f %%d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), summary.errors.status))
end
"""

BARE_SCRIPT = """
request = function()
  return wrk.format("POST", "/bare", {["Content-Type"]="application/json"}, %(body)s)
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%f %%f %%d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), summary.errors.status))
end
"""

ORDER_BODY = '{"symbol": "AAPL", "side": "buy", "quantity": "1", "order_type": "market"}'


def wrk(url: str, script: str, concurrency: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    out = subprocess.run(  # noqa: S603
        ["wrk", "-t2", f"-c{concurrency}", f"-d{DURATION}", "-s", handle.name, url],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"RESULT (\d+) (\d+) ([\d.]+) ([\d.]+) (\d+)", out)
    assert match, out
    requests, duration_us, p50_us, p99_us, errors = match.groups()
    return {
        "rps": int(requests) / (int(duration_us) / 1e6),
        "p50_ms": float(p50_us) / 1000,
        "p99_ms": float(p99_us) / 1000,
        "non_2xx": int(errors),
    }


_TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _cpu_ticks(pids: list[int]) -> dict[int, int]:
    """utime + stime of each process still alive."""
    found = {}
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            found[pid] = int(fields[11]) + int(fields[12])
    return found


def group_pids(pgid: int) -> list[int]:
    """Every process of a server's process group (uvicorn's supervisor and workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[2]) == pgid:
                pids.append(int(entry.name))
    return pids


async def postgres_pids(url: str) -> list[int]:
    """The Postgres backends serving the bench's own database (not other clients')."""
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return [row["pid"] for row in rows]


async def measured(
    url: str, target: str, script: str, concurrency: int, server: subprocess.Popen[bytes]
) -> dict[str, float]:
    """One wrk run, with the CPU the server processes and the database's Postgres backends
    spent on it (ms per request; Postgres: only backends of this database)."""
    app_before = _cpu_ticks(group_pids(server.pid))
    pg_before = _cpu_ticks(await postgres_pids(url))
    result = await asyncio.to_thread(wrk, target, script, concurrency)
    app_after = _cpu_ticks(group_pids(server.pid))
    pg_after = _cpu_ticks(await postgres_pids(url))
    requests = result["rps"] * float(DURATION.rstrip("s"))
    app_ms = sum(t - app_before.get(p, 0) for p, t in app_after.items()) * _TICK_MS
    pg_ms = sum(t - pg_before.get(p, 0) for p, t in pg_after.items()) * _TICK_MS
    result["app_cpu_ms"] = app_ms / max(requests, 1)
    result["pg_cpu_ms"] = pg_ms / max(requests, 1)
    return result


def start_server(args: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(args, env=env, cwd=ROOT, start_new_session=True)  # noqa: S603
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/docs", timeout=1).status_code < 500:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


async def main() -> None:
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
            "BROKERAGE_LOG_LEVEL": "WARNING",
            "BROKERAGE_PAPER_TICK_SECONDS": "1",
        }
        gateway_port, bare_port = free_port(), free_port()
        gateway_url, bare_url = f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{bare_port}"
        gateway = start_server(
            [
                str(ROOT / ".venv/bin/brokerage"),
                "serve",
                "--port",
                str(gateway_port),
                "--workers",
                str(WORKERS),
            ],
            env,
            gateway_port,
        )
        try:
            token = issue_dev_token(secret, "bench")
            headers = {"Authorization": f"Bearer {token}"}
            accounts = []
            async with httpx.AsyncClient(base_url=gateway_url, headers=headers) as client:
                for _ in range(ACCOUNTS):
                    r = await client.post(
                        "/v1/connections",
                        json={"broker": "paper", "options": {"starting_cash": "1000000000"}},
                    )
                    r.raise_for_status()
                    accounts.append(r.json()["accounts"][0])
            script = WRK_SCRIPT % {
                "accounts": ",".join(f'"{a}"' for a in accounts),
                "token": token,
                "run": os.urandom(6).hex(),
                "body": json.dumps(ORDER_BODY),
            }
            wrk(gateway_url, script, 8)  # warm-up
            gateway_results = {
                c: await measured(url, gateway_url, script, c, gateway) for c in (8, 64)
            }
        finally:
            stop_server(gateway)

        bare = start_server(
            [
                str(ROOT / ".venv/bin/uvicorn"),
                "scripts.bench.bare_app:app",
                "--port",
                str(bare_port),
                "--workers",
                str(WORKERS),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            env,
            bare_port,
        )
        try:
            bare_script = BARE_SCRIPT % {"body": json.dumps(ORDER_BODY)}
            wrk(bare_url, bare_script, 8)
            bare_results = {c: await measured(url, bare_url, bare_script, c, bare) for c in (8, 64)}
        finally:
            stop_server(bare)

    title = "paper orders through the gateway vs a bare one-insert endpoint"
    print(f"{title} ({WORKERS} workers, {DURATION} each)")
    print(
        f"{'concurrency':>11} | {'gateway orders/s':>16} {'p50 ms':>7} {'p99 ms':>7} | "
        f"{'bare req/s':>10} {'p50 ms':>7} {'p99 ms':>7} | ratio"
    )
    for c in (8, 64):
        g, b = gateway_results[c], bare_results[c]
        line = (
            f"{c:>11} | {g['rps']:>16.0f} {g['p50_ms']:>7.2f} {g['p99_ms']:>7.2f} | "
            f"{b['rps']:>10.0f} {b['p50_ms']:>7.2f} {b['p99_ms']:>7.2f} | {g['rps'] / b['rps']:.2f}"
        )
        if g["non_2xx"] or b["non_2xx"]:
            line += f"  (non-2xx: gateway {g['non_2xx']}, bare {b['non_2xx']})"
        print(line)
    print("CPU ms per request (service processes / its Postgres backends):")
    for c in (8, 64):
        g, b = gateway_results[c], bare_results[c]
        print(
            f"{c:>11} | gateway {g['app_cpu_ms']:.2f} / {g['pg_cpu_ms']:.2f} | "
            f"bare {b['app_cpu_ms']:.2f} / {b['pg_cpu_ms']:.2f}"
        )
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
