"""Driver for scripts/bench/marketdata (see that file). Not a test: it prints figures.

Phases, in one run, with the same client processes and the same plan of subscribers:

1. bare: a bare ``websockets`` broadcast server (its own process) generates the quotes
   itself at RATE/s over SYMBOLS symbols, rendered exactly like the gateway's ``quote``
   frames (``received_at`` = when it generated the quote), and broadcasts each to the
   clients that asked for its symbol. The baseline: no auth, no routing, no queues.
2. gateway: the gateway (uvicorn, one worker, Postgres) with its paper market running at
   RATE quote updates/s over the same symbols; SUBSCRIBERS WebSocket clients, each of
   ``auth`` + ``market.subscribe`` quotes for one symbol (SUBSCRIBERS/SYMBOLS per symbol)
   through one paper account: one upstream session serves them all.
3. gateway, slow: the same, with SLOW_PERCENT of the clients reading slowly (they stop
   reading for 0.8 s of every second); the latency of the others is reported apart.
4. memory: the gateway's RSS with SUBSCRIBERS clients over MEM_SYMBOLS symbols subscribed
   (each client 5 symbols), then per additional subscriber (EXTRA more clients).

Latency is per delivered quote, from ``received_at`` (the gateway's receive time of the
upstream event; the bare server's generation time) to the client process reading the frame
off its socket: one clock, same machine. Beside it, from ``ts`` (the quote's exchange time:
for the paper market the start of its step, when the whole step's quotes become due; for
the bare server its generation time again) to the client: that one also counts the time the
gateway took to compute and take in the upstream event, so a gateway falling behind its
upstream cannot hide there.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from app.db.migrate import upgrade  # noqa: E402
from scripts.bench.stream import LeanClient  # noqa: E402
from tests.postgres import free_port, fresh_database, postgres_server  # noqa: E402

PORT = free_port()
BARE_PORT = free_port()
_RECEIVED = b'"received_at":"'
_TS = b'"ts":"'


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def symbols(count: int) -> list[str]:
    """The paper market's synthetic benchmark equities SYM000.. (``paper_bench_symbols``)."""
    return [f"SYM{i:03d}" for i in range(count)]


# --- client processes ---------------------------------------------------------------------


async def open_client(url: str, first: list[dict[str, Any]], on_event: Any) -> LeanClient:
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    path = "/" + url.split("//", 1)[1].split("/", 1)[1]
    host, port = host_port.split(":")
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(lambda: LeanClient(on_event), host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    assert client.transport is not None
    client.transport.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await client.opened
    for message in first[:-1]:
        client.send_text(json.dumps(message))
        reply = json.loads(await client.control.get())
        if reply.get("type") == "error":
            raise RuntimeError(reply)
    client.send_text(json.dumps(first[-1]))
    reply = json.loads(await client.control.get())
    if reply.get("type") == "error":
        raise RuntimeError(reply)
    client.live = True
    return client


async def client_main(plan_path: str) -> None:
    """Hold subscriptions; commands on stdin: OPEN <url> <kind>, START, STOP, REPORT, CLOSE."""
    plan: list[dict[str, Any]] = json.loads(Path(plan_path).read_text())  # noqa: ASYNC240
    state = {"measuring": False}
    fast: list[tuple[bytes, float]] = []
    slow: list[tuple[bytes, float]] = []
    counts = {"fast": 0, "slow": 0, "resync": 0, "error": 0}
    now = time.time
    holders: list[LeanClient] = []
    slow_tasks: list[asyncio.Task[None]] = []
    gate = asyncio.Semaphore(50)

    def handler(is_slow: bool) -> Any:
        sink = slow if is_slow else fast
        label = "slow" if is_slow else "fast"

        def on_message(raw: bytes) -> None:
            if raw.startswith(b'{"type":"quote"'):
                if state["measuring"]:
                    counts[label] += 1
                    at = raw.find(_RECEIVED) + len(_RECEIVED)
                    ts = raw.find(_TS) + len(_TS)
                    sink.append((raw[at : at + 32], raw[ts : ts + 32], now()))
            elif raw.startswith(b'{"type":"market.resync"'):
                counts["resync"] += 1
            elif raw.startswith(b'{"type":"error"'):
                counts["error"] += 1

        return on_message

    async def read_slowly(client: LeanClient) -> None:
        assert client.transport is not None
        while True:
            client.transport.pause_reading()
            await asyncio.sleep(0.8)
            client.transport.resume_reading()
            await asyncio.sleep(0.2)

    async def open_all(url: str, kind: str, slow_enabled: bool) -> None:
        async def one(entry: dict[str, Any]) -> None:
            is_slow = slow_enabled and entry["slow"]
            if kind == "bare":
                first = [{"type": "subscribe", "symbols": entry["symbols"]}]
            else:
                first = [
                    {"type": "auth", "token": entry["token"]},
                    {
                        "type": "market.subscribe",
                        "account_id": entry["account_id"],
                        "quotes": entry["symbols"],
                    },
                ]
            async with gate:
                client = await open_client(url, first, handler(is_slow))
            holders.append(client)
            if is_slow:
                slow_tasks.append(asyncio.create_task(read_slowly(client)))

        await asyncio.gather(*(one(e) for e in plan))

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("READY", flush=True)
    started = stopped = 0.0
    while True:
        words = (await reader.readline()).decode().split()
        if not words:
            break
        command = words[0]
        if command == "OPEN":
            await open_all(words[1], words[2], words[3] == "slow")
            print("OPENED", flush=True)
        elif command == "START":
            fast.clear()
            slow.clear()
            for k in counts:
                counts[k] = 0
            # The instrument must not stall: its samples hold no cycles, so no collections
            # while measuring (a full one over hundreds of thousands of samples took 100+ ms).
            gc.collect()
            gc.freeze()
            gc.disable()
            state["measuring"], started = True, now()
        elif command == "STOP":
            state["measuring"], stopped = False, now()
            gc.enable()
            gc.unfreeze()
        elif command == "REPORT":
            print(
                "RESULT "
                + json.dumps(
                    {
                        "seconds": stopped - started,
                        "counts": counts,
                        "fast": [(_stamp(r), _stamp(t), at) for r, t, at in fast],
                        "slow": [(_stamp(r), _stamp(t), at) for r, t, at in slow],
                    }
                ),
                flush=True,
            )
        elif command == "CLOSE":
            for task in slow_tasks:
                task.cancel()
            slow_tasks.clear()
            for client in holders:
                if client.transport is not None:
                    client.transport.close()
            holders.clear()
            await asyncio.sleep(0.5)
            print("CLOSED", flush=True)


# --- the bare broadcast server --------------------------------------------------------------


async def bare_main(port: int, rate: float, symbol_count: int) -> None:
    """A bare ``websockets`` server: generates the quotes and broadcasts each to the clients
    of its symbol (``websockets.broadcast``: no queue, no await per client)."""
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    names = symbols(symbol_count)
    by_symbol: dict[str, set[ServerConnection]] = {s: set() for s in names}

    async def handler(ws: ServerConnection) -> None:
        message = json.loads(await ws.recv())
        wanted = [s for s in message["symbols"] if s in by_symbol]
        await ws.send(json.dumps({"type": "subscribed", "symbols": wanted}))
        for s in wanted:
            by_symbol[s].add(ws)
        try:
            await ws.wait_closed()
        finally:
            for s in wanted:
                by_symbol[s].discard(ws)

    async def produce() -> None:
        rng = random.Random(7)
        interval = 1.0 / rate
        next_at = time.monotonic()
        i = 0
        while True:
            symbol = names[i % len(names)]
            i += 1
            bid = 100 + rng.randint(0, 10000) / 100
            stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            frame = json.dumps(
                {
                    "type": "quote",
                    "symbol": symbol,
                    "bid": f"{bid:.2f}",
                    "ask": f"{bid + 0.02:.2f}",
                    "bid_size": "100",
                    "ask_size": "200",
                    "ts": stamp,
                    "received_at": stamp,
                    "source": "stream",
                },
                separators=(",", ":"),
            )
            clients = by_symbol[symbol]
            if clients:
                broadcast(clients, frame)
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    async with serve(handler, "127.0.0.1", port, compression=None, max_queue=None):
        task = asyncio.create_task(produce())
        print("READY", flush=True)
        await asyncio.Event().wait()
        task.cancel()


# --- the driver ---------------------------------------------------------------------------


# uvicorn under cProfile, the profile written at SIGTERM (``python -m cProfile`` writes
# nothing: uvicorn re-raises the SIGTERM it caught once it has shut down, and the default
# action ends the process before cProfile's own dump).
_PROFILED_UVICORN = """
import cProfile, signal, sys
path = sys.argv[1]
sys.argv = ["uvicorn", *sys.argv[2:]]
profile = cProfile.Profile()
def dump(*_):
    profile.disable()
    profile.dump_stats(path)
    raise SystemExit(0)
signal.signal(signal.SIGTERM, dump)
import uvicorn.main
profile.enable()
uvicorn.main.main()
"""


def start_gateway(
    env: dict[str, str], ws: str = "auto", *, profiled: bool = True
) -> subprocess.Popen[bytes]:
    # BENCH_PROFILE, a path: run the fan-out phases' gateway under cProfile (written there
    # when it stops); the memory phase's gateway is never profiled.
    profile = os.environ.get("BENCH_PROFILE") if profiled else None
    args = [
        *([sys.executable, "-c", _PROFILED_UVICORN, profile] if profile else []),
        *([] if profile else [str(ROOT / ".venv/bin/uvicorn")]),
        "app.main:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(PORT),
        "--no-access-log",
        "--log-level",
        "warning",
        "--ws-per-message-deflate",
        "false",
        "--ws",
        ws,
    ]
    proc = subprocess.Popen(args, env=env, cwd=ROOT, start_new_session=True)  # noqa: S603
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{PORT}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("gateway did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    with_group = True
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        with_group = False
    if with_group:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of the process so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Clients:
    """The client processes and the commands that drive them all at once."""

    def __init__(self, plan: list[dict[str, Any]], procs: int) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        for i in range(procs):
            path = Path(f"/tmp/bench-md-plan-{os.getpid()}-{i}.json")  # noqa: S108
            path.write_text(json.dumps(plan[i::procs]))
            self.procs.append(
                subprocess.Popen(  # noqa: S603
                    [sys.executable, __file__, "--client", str(path)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    cwd=ROOT,
                )
            )
        self.expect("READY")

    def tell(self, line: str) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write((line + "\n").encode())
            proc.stdin.flush()

    def expect(self, word: str) -> list[bytes]:
        lines = []
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.startswith(word.encode()):
                raise RuntimeError(f"a client process said {line[:300]!r}, expected {word}")
            lines.append(line)
        return lines

    async def measure(self, duration: float) -> dict[str, Any]:
        self.tell("START")
        await asyncio.sleep(duration)
        self.tell("STOP")
        await asyncio.sleep(1.0)
        self.tell("REPORT")
        results = [json.loads(line[len(b"RESULT ") :]) for line in self.expect("RESULT")]
        return summarise(results, duration)

    def close_all(self) -> None:
        self.tell("CLOSE")
        self.expect("CLOSED")

    def kill(self) -> None:
        for proc in self.procs:
            proc.kill()


def _stamp(raw: bytes) -> str:
    return raw.split(b'"', 1)[0].decode()


def _latencies(rows: list[list[Any]], column: int = 0) -> list[float]:
    """Seconds from the frame's ``received_at`` (column 0) or ``ts`` (column 1) to the
    client reading it, sorted."""
    out = []
    for row in rows:
        sent = datetime.fromisoformat(row[column].replace("Z", "+00:00")).timestamp()
        out.append(row[2] - sent)
    out.sort()
    return out


def _q(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(p * len(values)))] * 1000


def summarise(results: list[dict[str, Any]], duration: float) -> dict[str, Any]:
    fast = _latencies([row for r in results for row in r["fast"]])
    fast_ts = _latencies([row for r in results for row in r["fast"]], column=1)
    slow = _latencies([row for r in results for row in r["slow"]])
    counts = {k: sum(r["counts"][k] for r in results) for k in results[0]["counts"]}
    return {
        "per_s": (counts["fast"] + counts["slow"]) / duration,
        "fast_per_s": counts["fast"] / duration,
        "fast_p50": _q(fast, 0.50),
        "fast_p99": _q(fast, 0.99),
        "fast_ts_p50": _q(fast_ts, 0.50),
        "fast_ts_p99": _q(fast_ts, 0.99),
        "slow_p50": _q(slow, 0.50),
        "slow_per_s": counts["slow"] / duration,
        "counts": counts,
    }


def line(label: str, r: dict[str, Any]) -> str:
    text = (
        f"{label:<28} {r['per_s']:>9,.0f} deliveries/s   "
        f"p50 {r['fast_p50']:6.1f} ms   p99 {r['fast_p99']:6.1f} ms"
        f"   (from exchange time: p50 {r['fast_ts_p50']:.1f} ms, p99 {r['fast_ts_p99']:.1f} ms)"
    )
    if r["counts"]["slow"]:
        text += (
            f"   (slow clients: {r['slow_per_s']:,.0f}/s, p50 {r['slow_p50']:.0f} ms, "
            f"resyncs {r['counts']['resync']})"
        )
    if r["counts"]["error"]:
        text += f"   errors {r['counts']['error']}"
    return text


def _metric(text: str, name: str) -> float:
    total = 0.0
    for row in text.splitlines():
        if row.startswith(name + "{") or row.startswith(name + " "):
            total += float(row.rsplit(" ", 1)[1])
    return total


async def run(args: argparse.Namespace) -> None:
    names = symbols(args.symbols)
    explicit = os.environ.get("BENCH_DATABASE_URL")
    async with postgres_server() as admin, fresh_database(explicit or admin) as url:
        await asyncio.to_thread(upgrade, url)
        keyring = json.dumps(
            {
                "primary": 1,
                "min_decryption_version": 1,
                "keys": {"1": base64.b64encode(os.urandom(32)).decode()},
            }
        )
        secret = "bench-secret-" + os.urandom(16).hex()
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "BROKERAGE_JWT_SECRET": secret,
            "BROKERAGE_KEYRING_JSON": keyring,
            "BROKERAGE_LOG_LEVEL": "WARNING",
            **paper_market_env(args.rate, args.symbols),
        }
        from app.security.jwt import issue_dev_token

        user = f"bench-md-{uuid.uuid4().hex[:6]}"
        token = issue_dev_token(secret, user)
        bare = subprocess.Popen(  # noqa: S603, ASYNC220
            [
                sys.executable,
                __file__,
                "--bare",
                str(BARE_PORT),
                "--rate",
                str(args.rate),
                "--symbols",
                str(args.symbols),
            ],
            stdout=subprocess.PIPE,
            cwd=ROOT,
            start_new_session=True,
        )
        gateway = start_gateway(env, args.ws)
        clients: Clients | None = None
        try:
            assert bare.stdout is not None
            assert (await asyncio.to_thread(bare.stdout.readline)).startswith(b"READY")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{PORT}", timeout=30) as http:
                r = await http.post(
                    "/v1/connections",
                    json={"broker": "paper", "options": {"starting_cash": "1000000"}},
                    headers={"Authorization": f"Bearer {token}"},
                )
                r.raise_for_status()
                account = r.json()["accounts"][0]
                slow_every = round(100 / args.slow_percent) if args.slow_percent else 0
                plan = [
                    {
                        "token": token,
                        "account_id": account,
                        "symbols": [names[n % len(names)]],
                        "slow": bool(slow_every) and n % slow_every == 0,
                    }
                    for n in range(args.subscribers)
                ]
                clients = await asyncio.to_thread(Clients, plan, args.client_procs)
                gw_url = f"ws://127.0.0.1:{PORT}/v1/stream"
                bare_url = f"ws://127.0.0.1:{BARE_PORT}/"
                results: dict[str, dict[str, Any]] = {}
                phases = [
                    ("bare websockets", bare_url, "bare", "fast"),
                    ("gateway", gw_url, "gateway", "fast"),
                    ("bare websockets, 10% slow", bare_url, "bare", "slow"),
                    ("gateway, 10% slow", gw_url, "gateway", "slow"),
                ]
                if args.fast_only:
                    phases = phases[:2]
                for label, url_, kind, slow in phases:
                    clients.tell(f"OPEN {url_} {kind} {slow}")
                    await asyncio.to_thread(clients.expect, "OPENED")
                    await asyncio.sleep(args.warmup)
                    before = (await http.get("/metrics")).text
                    server = gateway if kind == "gateway" else bare
                    cpu_before = cpu_seconds(server.pid)
                    results[label] = await clients.measure(args.duration)
                    # The server's CPU over the measured window (and the second after).
                    results[label]["server_cpu"] = cpu_seconds(server.pid) - cpu_before
                    after = (await http.get("/metrics")).text
                    results[label]["conflations"] = _metric(
                        after, "brokerage_market_conflations_total"
                    ) - _metric(before, "brokerage_market_conflations_total")
                    await asyncio.to_thread(clients.close_all)
                    await asyncio.sleep(1.0)
                clients.kill()
                clients = None
                if args.fast_only:
                    return _report(args, results, None)
                # Memory: a fresh gateway (same database) whose paper market quotes the
                # MEM_SYMBOLS symbols once a second each.
                stop(gateway)
                gateway = start_gateway(
                    {**env, **paper_market_env(args.mem_symbols, args.mem_symbols)},
                    args.ws,
                    profiled=False,
                )
                await asyncio.sleep(2.0)
                rss_idle = rss_mib(gateway.pid)
                mem = await memory(args, clients_plan(token, account, args), gateway.pid)
        finally:
            if clients is not None:
                clients.kill()
            stop(gateway)
            stop(bare)

    _report(args, results, (rss_idle, mem))


def _report(
    args: argparse.Namespace,
    results: dict[str, dict[str, Any]],
    memory_figures: tuple[float, dict[str, Any]] | None,
) -> None:
    print(
        f"market data fan-out: {args.subscribers} subscribers over {args.symbols} symbols "
        f"({args.subscribers // args.symbols} per symbol), upstream {args.rate:,.0f} quotes/s, "
        f"{args.duration:g} s per phase, {args.client_procs} client processes, "
        f"{os.cpu_count()} cores shared with everything else on the machine"
    )
    for label, r in results.items():
        delivered = r["per_s"] * args.duration
        extra = (
            f"   server CPU {r['server_cpu'] / (args.duration + 1.0):.2f} cores,"
            f" {r['server_cpu'] * 1e6 / max(delivered, 1):.0f} us per delivery"
        )
        if label.startswith("gateway"):
            extra = f"   conflations {r['conflations']:,.0f}" + extra
        print(line(label, r) + extra)
    ratio = results["gateway"]["per_s"] / max(results["bare websockets"]["per_s"], 1e-9)
    print(f"gateway / bare delivery rate: {ratio:.2f}")
    if memory_figures is None:
        return
    rss_idle, mem = memory_figures
    print(
        f"memory: idle {rss_idle:.0f} MiB; with {args.subscribers} subscribers"
        f" and {args.mem_symbols} symbols subscribed {mem['rss']:.0f} MiB; "
        f"+{args.extra} subscribers: {mem['per_extra_kib']:.1f} KiB each"
    )


def clients_plan(token: str, account: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    names = symbols(args.mem_symbols)
    return [
        {
            "token": token,
            "account_id": account,
            "symbols": [names[(n * 5 + k) % len(names)] for k in range(5)],
            "slow": False,
        }
        for n in range(args.subscribers + args.extra)
    ]


async def memory(args: argparse.Namespace, plan: list[dict[str, Any]], pid: int) -> dict[str, Any]:
    base = await asyncio.to_thread(Clients, plan[: args.subscribers], args.client_procs)
    extra: Clients | None = None
    try:
        url = f"ws://127.0.0.1:{PORT}/v1/stream"
        base.tell(f"OPEN {url} gateway fast")
        await asyncio.to_thread(base.expect, "OPENED")
        await asyncio.sleep(3.0)
        rss = rss_mib(pid)
        extra = await asyncio.to_thread(Clients, plan[args.subscribers :], 1)
        extra.tell(f"OPEN {url} gateway fast")
        await asyncio.to_thread(extra.expect, "OPENED")
        await asyncio.sleep(3.0)
        rss_more = rss_mib(pid)
    finally:
        base.kill()
        if extra is not None:
            extra.kill()
    return {"rss": rss, "per_extra_kib": (rss_more - rss) * 1024 / max(args.extra, 1)}


def paper_market_env(rate: float, symbol_count: int) -> dict[str, str]:
    """Settings that make the gateway's paper market step every ``symbol_count / rate``
    seconds over ``symbol_count`` synthetic symbols: ``rate`` quote updates/s in all."""
    step_ms = max(1, round(1000 * symbol_count / rate))
    return {
        "BROKERAGE_PAPER_MARKET_STEP_MS": str(step_ms),
        "BROKERAGE_PAPER_BENCH_SYMBOLS": str(symbol_count),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--bare", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--subscribers", type=int, default=int(_env("BENCH_SUBSCRIBERS", "1000")))
    parser.add_argument("--symbols", type=int, default=int(_env("BENCH_SYMBOLS", "100")))
    parser.add_argument("--rate", type=float, default=float(_env("BENCH_QUOTE_RATE", "2000")))
    parser.add_argument("--duration", type=float, default=float(_env("BENCH_DURATION", "20")))
    # Past the connection storm: 1,000 clients authenticating and subscribing at once put
    # the paper market seconds behind, and the gateway needs about 10 s to catch up.
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--slow-percent", type=float, default=10.0)
    parser.add_argument("--client-procs", type=int, default=int(_env("BENCH_CLIENT_PROCS", "2")))
    parser.add_argument("--mem-symbols", type=int, default=500)
    parser.add_argument("--extra", type=int, default=200)
    parser.add_argument(
        "--fast-only", action="store_true", help="only the bare and gateway phases, no memory"
    )
    parser.add_argument(
        "--ws", default="auto", help="uvicorn's WebSocket implementation for the gateway"
    )
    args = parser.parse_args()
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    if args.client:
        runner(client_main(args.client))
    elif args.bare:
        runner(bare_main(args.bare, args.rate, args.symbols))
    else:
        runner(run(args))


if __name__ == "__main__":
    main()
