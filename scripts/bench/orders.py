"""Driver for scripts/bench/orders (see that file). Not a test: it prints figures.

    orders.py [--live] [--users 64] [--latency-ms 0] [--ref GIT_REF ...]

Paper (default): paper orders from one user over 64 paper accounts. ``--live``: limit orders
(far below the market, so each one rests and every order takes the same path) on Alpaca
BYOB connections, one user per connection (``--users``), each with its own API key in the
vault, against the fake Alpaca in a process of its own. ``--ref REF`` (repeatable) runs the
same bench, in the same invocation and on the same Postgres, against a ``git worktree``
checkout of REF as well (under var/bench-ref/<commit>, removed at the end; the gateway runs
from it with this checkout's virtualenv and ``PYTHONPATH`` set to it, and its own
migrations build its database). Each gateway (and the bare endpoint) gets a database of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from app.db.migrate import upgrade  # noqa: E402
from app.security.jwt import issue_dev_token  # noqa: E402
from scripts.bench.launch import (  # noqa: E402
    AlpacaKey,
    LockWaits,
    cpu_ms_between,
    cpu_ticks,
    fake_alpaca,
    gateway_env,
    group_pids,
    postgres_pids,
    start_server,
    stop_server,
    wrk,
)
from tests.postgres import free_port, fresh_database, postgres_server  # noqa: E402

DURATION = os.environ.get("BENCH_DURATION", "10s")
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
ACCOUNTS = 64
CONCURRENCY = (8, 64)

# What every script shares: the RESULT line wrk's ``done`` prints (read by launch.wrk), and
# for the scripts that send Idempotency-Keys, a key prefix of each wrk thread's own: keys
# must never repeat across threads, or the benchmark would measure idempotent replays
# instead of new orders.
_REPORT = """
done = function(summary, latency, requests)
  io.write(string.format("RESULT %%d %%d %%f %%f %%d %%d\\n", summary.requests,
    summary.duration, latency:percentile(50), latency:percentile(99), summary.errors.status,
    summary.errors.timeout))
end
"""
_KEY_PREFIX = """
local counter = 0
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  prefix = string.format("%%d-%%d-%%s", os.time(), tid, "%(run)s")
end
"""

WRK_SCRIPT = (
    _KEY_PREFIX
    + """
local accounts = {%(accounts)s}
request = function()
  counter = counter + 1
  local account = accounts[(counter %% #accounts) + 1]
  local headers = {}
  headers["Content-Type"] = "application/json"
  headers["Authorization"] = "Bearer " .. account[2]
  headers["Idempotency-Key"] = prefix .. "-" .. counter
  return wrk.format("POST", "/v1/accounts/" .. account[1] .. "/orders", headers, %(body)s)
end
"""
    + _REPORT
)

BARE_SCRIPT = (
    """
request = function()
  return wrk.format("POST", "/bare", {["Content-Type"]="application/json"}, %(body)s)
end
"""
    + _REPORT
)

FLOOR_SCRIPT = (
    _KEY_PREFIX
    + """
request = function()
  counter = counter + 1
  local headers = {}
  headers["Content-Type"] = "application/json"
  headers["Idempotency-Key"] = prefix .. "-" .. counter
  return wrk.format("POST", "/floor/acct-" .. (counter %% %(accounts)d), headers, %(body)s)
end
"""
    + _REPORT
)

PAPER_BODY = '{"symbol": "AAPL", "side": "buy", "quantity": "1", "order_type": "market"}'
# Far below the market: the order rests at the broker, so every order takes the same path.
LIVE_BODY = (
    '{"symbol": "AAPL", "side": "buy", "quantity": "1", "order_type": "limit", '
    '"limit_price": "1.00", "time_in_force": "gtc"}'
)


@dataclass(frozen=True)
class Target:
    """What runs the gateway: this checkout, or a worktree of another commit."""

    label: str
    root: Path

    @property
    def env(self) -> dict[str, str]:
        if self.root == ROOT:
            return {}
        return {"PYTHONPATH": str(self.root)}


def worktree_of(ref: str) -> Target:
    """A ``git worktree`` checkout of ``ref`` under var/bench-ref/<commit> (``main`` removes
    it at the end)."""
    commit = subprocess.run(  # noqa: S603
        ["git", "rev-parse", "--verify", f"{ref}^{{commit}}"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    path = ROOT / "var" / "bench-ref" / commit[:12]
    if not (path / "app").is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(  # noqa: S603
            ["git", "worktree", "add", "--detach", str(path), commit],  # noqa: S607
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    return Target(f"{ref} ({commit[:7]})", path)


def remove_worktree(target: Target) -> None:
    subprocess.run(  # noqa: S603
        ["git", "worktree", "remove", "--force", str(target.root)],  # noqa: S607
        cwd=ROOT,
        check=False,
        capture_output=True,
    )


async def migrate(target: Target, url: str) -> None:
    """The target's own migrations build its database (its schema, its head)."""
    if target.root == ROOT:
        await asyncio.to_thread(upgrade, url)
        return
    code = "import sys, app; from app.db.migrate import upgrade; upgrade(sys.argv[1])"
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", code, url],
        cwd=target.root,
        env={**os.environ, **target.env},
        check=True,
    )


async def measured(
    url: str,
    target: str,
    script: str,
    concurrency: int,
    server: subprocess.Popen[bytes],
    others: dict[str, int],
) -> dict[str, Any]:
    """One wrk run, with the CPU the server processes and the database's Postgres backends
    spent on it (ms per request; Postgres: only backends of this database), and that of
    ``others`` (name -> pid, e.g. the fake broker)."""
    app_before = cpu_ticks(group_pids(server.pid))
    pg_before = cpu_ticks(await postgres_pids(url))
    others_before = cpu_ticks(list(others.values()))
    profiler = _py_spy(server.pid, concurrency)
    async with LockWaits(url) as waits:
        result = await asyncio.to_thread(wrk, target, script, concurrency, DURATION)
    if profiler is not None:
        profiler.wait()
    app_after = cpu_ticks(group_pids(server.pid))
    pg_after = cpu_ticks(await postgres_pids(url))
    others_after = cpu_ticks(list(others.values()))
    requests = max(result["requests"], 1)
    result["app_cpu_ms"] = cpu_ms_between(app_before, app_after) / requests
    result["pg_cpu_ms"] = cpu_ms_between(pg_before, pg_after) / requests
    result["lock_waits"] = waits.describe()
    for name, pid in others.items():
        spent = cpu_ms_between({pid: others_before.get(pid, 0)}, {pid: others_after.get(pid, 0)})
        result[f"{name}_cpu_ms"] = spent / requests
    return result


def _py_spy(pid: int, concurrency: int) -> subprocess.Popen[bytes] | None:
    """With BENCH_PROFILE=DIR, a py-spy sample of the gateway's processes during the run
    (raw collapsed stacks in DIR/<server pid>-c<N>.txt; needs py-spy in the virtualenv;
    BENCH_PROFILE_NATIVE=1 samples C frames too)."""
    out = os.environ.get("BENCH_PROFILE")
    if not out:
        return None
    Path(out).mkdir(parents=True, exist_ok=True)
    seconds = max(int(DURATION.rstrip("s")) - 2, 1)
    py_spy = str(Path(sys.executable).with_name("py-spy"))
    args = [py_spy, "record", "--pid", str(pid), "--subprocesses", "-r", "200"]
    args += ["-d", str(seconds), "-f", "raw", "-o", f"{out}/{pid}-c{concurrency}.txt"]
    # Native frames (asyncpg's protocol, pydantic-core, uvloop) need the process paused
    # for each sample; without them py-spy samples without pausing.
    args.append("--native" if os.environ.get("BENCH_PROFILE_NATIVE") else "--nonblocking")
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603


async def open_accounts(
    gateway_url: str, secret: str, keys: list[AlpacaKey] | None
) -> list[tuple[str, str]]:
    """(account id, bearer token) pairs: 64 paper accounts of one user, or one Alpaca BYOB
    connection per user, its key stored in the vault."""
    pairs = []
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        if keys is None:
            token = issue_dev_token(secret, "bench")
            for _ in range(ACCOUNTS):
                r = await client.post(
                    "/v1/connections",
                    json={"broker": "paper", "options": {"starting_cash": "1000000000"}},
                    headers={"Authorization": f"Bearer {token}"},
                )
                r.raise_for_status()
                pairs.append((r.json()["accounts"][0], token))
            return pairs
        for n, key in enumerate(keys):
            token = issue_dev_token(secret, f"bench-user-{n}")
            r = await client.post(
                "/v1/connections",
                json={
                    "broker": "alpaca",
                    "credentials": {"api_key_id": key.key_id, "api_secret_key": key.secret},
                },
                headers={"Authorization": f"Bearer {token}"},
            )
            r.raise_for_status()
            pairs.append((r.json()["accounts"][0], token))
    return pairs


async def run_gateway(
    admin: str, target: Target, live: bool, users: int, latency_ms: float, tls: bool = False
) -> tuple[dict[int, dict[str, Any]], int]:
    """The gateway of ``target`` under wrk at each concurrency; also the largest number of
    orders any one Alpaca key was sent (the per-key rate limit is 200 a minute)."""
    async with fresh_database(admin) as url:
        await migrate(target, url)
        secret = "bench-secret-" + os.urandom(32).hex()
        keys = [AlpacaKey.new() for _ in range(users)] if live else None
        fake_cm = (
            fake_alpaca(keys, latency_ms=latency_ms, tls=tls) if keys else contextlib.nullcontext()
        )
        async with fake_cm as fake:
            port = free_port()
            gateway_url = f"http://127.0.0.1:{port}"
            args = ["-m", "app.cli", "serve", "--port", str(port), "--workers", str(WORKERS)]
            gateway = start_server(
                [sys.executable, *args],
                gateway_env(
                    url,
                    secret,
                    fake.url if fake else None,
                    ca_file=fake.ca_file if fake else None,
                )
                | target.env,
                port,
                cwd=target.root,
            )
            try:
                pairs = await open_accounts(gateway_url, secret, keys)
                script = WRK_SCRIPT % {
                    "accounts": ",".join(f'{{"{a}","{t}"}}' for a, t in pairs),
                    "run": os.urandom(6).hex(),
                    "body": json.dumps(LIVE_BODY if live else PAPER_BODY),
                }
                # Warm-up, unmeasured (shorter live: each key may send 200 orders a minute).
                warm = await asyncio.to_thread(
                    wrk, gateway_url, script, 8, "3s" if live else DURATION
                )
                others = {"fake": fake.pid} if fake else {}
                results = {
                    c: await measured(url, gateway_url, script, c, gateway, others)
                    for c in CONCURRENCY
                }
            finally:
                stop_server(gateway)
    sent = warm["requests"] + sum(r["requests"] for r in results.values())
    return results, int(sent) // max(len(pairs), 1)


Results = dict[int, dict[str, Any]]


async def run_bare(admin: str, with_floor: bool) -> tuple[Results, Results | None]:
    """The bare endpoint at each concurrency, and (``with_floor``) the floor endpoint: the
    paper order's database round trips without the gateway (scripts/bench/bare_app.py)."""
    async with fresh_database(admin) as url:
        port = free_port()
        bare_url = f"http://127.0.0.1:{port}"
        bare = start_server(
            [
                str(ROOT / ".venv/bin/uvicorn"),
                "scripts.bench.bare_app:app",
                "--port",
                str(port),
                "--workers",
                str(WORKERS),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            {**os.environ, "DATABASE_URL": url},
            port,
        )
        try:
            script = BARE_SCRIPT % {"body": json.dumps(PAPER_BODY)}
            await asyncio.to_thread(wrk, bare_url, script, 8, DURATION)
            bare_results = {
                c: await measured(url, bare_url, script, c, bare, {}) for c in CONCURRENCY
            }
            if not with_floor:
                return bare_results, None
            script = FLOOR_SCRIPT % {
                "body": json.dumps(PAPER_BODY),
                "run": os.urandom(6).hex(),
                "accounts": ACCOUNTS,
            }
            await asyncio.to_thread(wrk, bare_url, script, 8, "3s")
            floor = {c: await measured(url, bare_url, script, c, bare, {}) for c in CONCURRENCY}
            return bare_results, floor
        finally:
            stop_server(bare)


async def main(args: argparse.Namespace) -> None:
    targets = [worktree_of(ref) for ref in args.ref]
    targets.append(Target("this checkout", ROOT))
    explicit = os.environ.get("BENCH_DATABASE_URL")
    gateways: dict[str, dict[int, dict[str, Any]]] = {}
    per_key: dict[str, int] = {}
    try:
        async with postgres_server() as admin:
            for target in targets:
                results, most = await run_gateway(
                    explicit or admin, target, args.live, args.users, args.latency_ms, args.tls
                )
                gateways[target.label] = results
                per_key[target.label] = most
            bare, floor = await run_bare(explicit or admin, with_floor=not args.live)
    finally:
        for target in targets:
            if target.root != ROOT:
                remove_worktree(target)

    if args.live:
        title = (
            f"live Alpaca limit orders ({args.users} users, one BYOB connection and key each; "
            f"fake Alpaca in its own process, latency {args.latency_ms:g} ms)"
        )
    else:
        title = "paper orders through the gateway"
    print(f"{title} vs a bare one-insert endpoint ({WORKERS} workers, {DURATION} each)")
    print(
        f"{'gateway':<28} {'c':>3} | {'orders/s':>8} {'p50 ms':>7} {'p99 ms':>7} | "
        f"{'bare req/s':>10} {'p50 ms':>7} {'p99 ms':>7} | ratio | CPU ms/order gw / pg"
        + (" / fake" if args.live else "")
    )
    for label, results in gateways.items():
        for c in CONCURRENCY:
            g, b = results[c], bare[c]
            line = (
                f"{label:<28} {c:>3} | {g['rps']:>8.0f} {g['p50_ms']:>7.2f} {g['p99_ms']:>7.2f} | "
                f"{b['rps']:>10.0f} {b['p50_ms']:>7.2f} {b['p99_ms']:>7.2f} | "
                f"{g['rps'] / b['rps']:5.2f} | {g['app_cpu_ms']:.2f} / {g['pg_cpu_ms']:.2f}"
            )
            if args.live:
                line += f" / {g['fake_cpu_ms']:.2f}"
            if g["non_2xx"] or b["non_2xx"] or g["timeouts"] or b["timeouts"]:
                line += (
                    f"  (non-2xx: gateway {g['non_2xx']}, bare {b['non_2xx']}; "
                    f"timeouts after 30 s: gateway {g['timeouts']}, bare {b['timeouts']})"
                )
            print(line)
    print(
        "bare CPU ms/request (server / its Postgres backends): "
        + ", ".join(
            f"c={c} {bare[c]['app_cpu_ms']:.2f} / {bare[c]['pg_cpu_ms']:.2f}" for c in CONCURRENCY
        )
    )
    if floor is not None:
        print(
            "floor (a paper order's 4 database round trips, none of the gateway's logic; "
            "bare_app.py /floor):"
        )
        for c in CONCURRENCY:
            f = floor[c]
            print(
                f"  c={c:<3} {f['rps']:>6.0f} req/s  p50 {f['p50_ms']:.2f} ms  "
                f"p99 {f['p99_ms']:.2f} ms  CPU ms/request {f['app_cpu_ms']:.2f} / "
                f"{f['pg_cpu_ms']:.2f}  ratio to bare {f['rps'] / bare[c]['rps']:.2f}"
                + (f"  (non-2xx {f['non_2xx']})" if f["non_2xx"] else "")
            )
    print("sessions waiting for a lock in the gateway's database (mean, by kind):")
    for label, results in gateways.items():
        for c in CONCURRENCY:
            print(f"{label:<28} {c:>3} | {results[c]['lock_waits']}")
    if args.live:
        for label, most in per_key.items():
            note = "" if most < 190 else " (past the 200 burst: the limiter may have queued some)"
            print(f"{label}: about {most} orders per Alpaca key in the run{note}")
    load = os.getloadavg()
    print(f"load: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--live", action="store_true", help="live Alpaca orders (fake Alpaca)")
    parser.add_argument("--users", type=int, default=64, help="--live: users, one key each")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="--live: fake's latency")
    parser.add_argument(
        "--tls", action="store_true", help="--live: the fake over HTTPS, as brokers are"
    )
    parser.add_argument(
        "--ref", action="append", default=[], help="also run the gateway of this git ref"
    )
    asyncio.run(main(parser.parse_args()))
