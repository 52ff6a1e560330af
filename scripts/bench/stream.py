"""Driver for scripts/bench/stream (see that file). Not a test: it prints figures.

Fan-out: SUBSCRIBERS WebSocket subscribers (spread over USERS users, each subscriber
watching all of its user's accounts) held by CLIENT_PROCS client processes over real
loopback sockets, against the gateway started with uvicorn on Postgres. Paper market orders
are placed at ORDER_RATE orders/s across the users' accounts by a second instance (the
real order service path, in its own process: so every event also crosses instances by
NOTIFY); every order produces order events (pending_submit, then filled) that reach every
subscriber of its user. Latency is measured per delivery, from the moment the event's
transaction COMMIT returned in the writing instance to the moment a subscriber process
read the frame off its socket (one clock: same machine).

``--lock-cost``: instead, measure what the outbox ordering lock costs writers: concurrent
raw transactions (INSERT one event + pg_notify + COMMIT) with and without
``pg_advisory_xact_lock``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from app.db.migrate import upgrade  # noqa: E402
from app.streaming.outbox import OUTBOX_CHANNEL  # noqa: E402
from scripts.bench.launch import cpu_ms_between, cpu_ticks, group_pids  # noqa: E402
from tests.postgres import _as_asyncpg_dsn, free_port, fresh_database, postgres_server  # noqa: E402

# A port nothing listens on (a fixed default could measure some other server).
PORT = int(os.environ.get("BENCH_PORT", "0")) or free_port()


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


# --- client processes ---------------------------------------------------------------------


class LeanClient(asyncio.Protocol):
    """A minimal RFC 6455 client for the benchmark's subscribers.

    The subscribers share the two cores with the server; the ``websockets`` client spends
    more CPU per message than the server does, which would measure the clients. This one
    parses every frame that arrives in one ``data_received`` call in a loop, answers
    pings, and looks only at what the figures need (the type and ``occurred_at``). It
    speaks to the server over a real socket exactly like any client (masked frames, no
    extensions). ``--websockets`` uses the ``websockets`` library instead.
    """

    def __init__(self, on_event: Any) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        self.control: asyncio.Queue[bytes] = asyncio.Queue()
        self.live = False
        self.on_event = on_event
        self.closed = asyncio.get_running_loop().create_future()
        self.opened = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is duck-typed

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def send_text(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = bytes([0x81, 0x80 | n])
        elif n < 65536:
            header = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
        else:
            header = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
        key = (mask * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
        assert self.transport is not None
        self.transport.write(header + mask + masked)

    def _pong(self, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert self.transport is not None
        self.transport.write(bytes([0x8A, 0x80 | len(payload)]) + mask + masked)

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if b" 101 " not in buf[: buf.find(b"\r\n")]:
                raise RuntimeError(bytes(buf[:200]))
            del buf[: end + 4]
            self.upgraded = True
            self.opened.set_result(None)
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            opcode = buf[pos] & 0x0F
            length = buf[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            if size < start + length:
                break
            payload = bytes(buf[start : start + length])
            pos = start + length
            if opcode == 1:
                if self.live:
                    self.on_event(payload)
                else:
                    self.control.put_nowait(payload)
            elif opcode == 9:
                self._pong(payload)
            elif opcode == 8:
                assert self.transport is not None
                self.transport.close()
        del buf[:pos]


async def lean_subscriber(url: str, token: str, on_event: Any) -> LeanClient:
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.split(":")
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(lambda: LeanClient(on_event), host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    assert client.transport is not None
    client.transport.write(
        (
            f"GET /v1/stream HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await client.opened  # frames sent before the 101 would wait for more data to be parsed
    client.send_text(json.dumps({"type": "auth", "token": token}))
    assert json.loads(await client.control.get())["type"] == "authenticated"
    client.send_text(json.dumps({"type": "subscribe", "accounts": "*", "after": None}))
    client.live = True  # from here on, parse in place (events may follow at once)
    return client


async def client_main(plan_path: str, url: str, use_websockets: bool, compression: bool) -> None:
    """Hold the planned subscriptions; START/STOP on stdin bracket the measurement."""
    plan: list[dict[str, Any]] = json.loads(Path(plan_path).read_text())  # noqa: ASYNC240
    state = {"measuring": False, "count": 0}
    receipts: list[tuple[int, float]] = []
    errors: list[str] = []
    gate = asyncio.Semaphore(50)
    now = time.time
    prefix = b'{"type":"event","event":{"cursor":"'
    start = len(prefix)

    def on_message(raw: bytes) -> None:
        if raw.startswith(prefix):
            if state["measuring"]:
                state["count"] += 1
                receipts.append((int(raw[start : raw.index(b'"', start)]), now()))
        elif raw.startswith(b'{"type":"resync"') or raw.startswith(b'{"type":"error"'):
            errors.append(raw[:80].decode())

    holders: list[Any] = []

    async def open_lean(entry: dict[str, Any]) -> None:
        async with gate:
            holders.append(await lean_subscriber(url, entry["token"], on_message))

    async def open_websockets(entry: dict[str, Any]) -> None:
        from websockets.asyncio.client import connect

        async with gate:
            ws = await connect(url, open_timeout=60, compression="deflate" if compression else None)
            await ws.send(json.dumps({"type": "auth", "token": entry["token"]}))
            assert json.loads(await ws.recv())["type"] == "authenticated"
            await ws.send(json.dumps({"type": "subscribe", "accounts": "*", "after": None}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
            holders.append(ws)

        async def read() -> None:
            async for message in ws:
                on_message(message.encode() if isinstance(message, str) else message)

        holders.append(asyncio.create_task(read()))

    opener = open_websockets if use_websockets else open_lean
    await asyncio.gather(*(opener(e) for e in plan))
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    started = stopped = 0.0
    while True:
        line = (await reader.readline()).decode().strip()
        if line == "START":
            state["count"], receipts[:] = 0, []
            state["measuring"], started = True, time.time()
        elif line == "STOP":
            state["measuring"], stopped = False, time.time()
        elif line == "REPORT" or not line:
            break
    print(
        "RESULT "
        + json.dumps(
            {
                "count": state["count"],
                "seconds": stopped - started,
                "receipts": receipts,
                "errors": errors[:20],
                "error_count": len(errors),
            }
        ),
        flush=True,
    )


# --- the driver ---------------------------------------------------------------------------


GATEWAY_LOG = Path(f"/tmp/bench-stream-gateway-{os.getpid()}.log")  # noqa: S108


def start_gateway(env: dict[str, str], workers: int) -> subprocess.Popen[bytes]:
    """The gateway as ``brokerage serve`` runs it (its HTTP and WebSocket protocol classes,
    ``app/server.py``). permessage-deflate is on offer, as in production; only a client
    that asks for it (``--deflate``) gets it."""
    args = [
        sys.executable,
        "-m",
        "app.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(PORT),
        "--workers",
        str(workers),
    ]
    log = GATEWAY_LOG.open("wb")  # its errors, counted after the run
    proc = subprocess.Popen(  # noqa: S603
        args, env=env, cwd=ROOT, start_new_session=True, stderr=log, stdout=log
    )
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
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def token_for(env: dict[str, str], user: str) -> str:
    from app.security.jwt import issue_dev_token

    return issue_dev_token(env["BROKERAGE_JWT_SECRET"], user)


async def source_main(plan_path: str, rate: float) -> None:
    """Another gateway instance, in-process: places paper orders through the real service
    path at ``rate``/s and records when each event's transaction committed.

    The commit time is taken in SQLAlchemy's ``after_commit`` hook, right after the COMMIT
    returned: that is the start of the commit-to-receipt latency. It is kept per placed
    order (a paper order's events commit in its one transaction), and the events' ids are
    read back at the end: the order path writes events with Core statements, and on Postgres
    an event's id is drawn at COMMIT (app/streaming/outbox.py), so no id is known before.
    """
    import contextvars

    from sqlalchemy import event as sa_event
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from app.config import Settings
    from app.db.models import OrderEvent
    from app.errors import AppError
    from app.main import create_app
    from app.schemas.orders import OrderCreate

    commit_of_order: dict[str, float] = {}
    first_commit: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar(
        "bench_first_commit", default=None
    )

    def after_commit(_session: Session) -> None:
        seen = first_commit.get()
        if seen is not None and not seen:
            seen.append(time.time())

    sa_event.listen(Session, "after_commit", after_commit)

    targets = [tuple(t) for t in json.loads(Path(plan_path).read_text())]  # noqa: ASYNC240
    app = create_app(Settings())
    body = OrderCreate.model_validate(
        {"symbol": "AAPL", "side": "buy", "quantity": "1", "order_type": "market"}
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with app.router.lifespan_context(app):
        orders = app.state.brokerage.orders
        placed = failures = 0
        refusals: collections.Counter[str] = collections.Counter()
        running = True
        pending: set[asyncio.Task[None]] = set()

        async def one(user: str, account: str) -> None:
            nonlocal placed, failures
            seen: list[float] = []
            first_commit.set(seen)
            try:
                answer = await orders.place(
                    user_id=user,
                    account_id=account,
                    body=body,
                    idempotency_key=uuid.uuid4().hex,
                    path=f"/v1/accounts/{account}/orders",
                )
                placed += 1
                if seen:
                    commit_of_order[answer.body["id"]] = seen[0]
            except AppError as exc:  # answered: 503/429 is load shed, a 5xx is an error
                failures += 1
                refusals[f"{exc.status} {exc.code}"] += 1
            except Exception as exc:  # what an HTTP client would see as a 500
                failures += 1
                kind = "too many clients" if "too many clients" in str(exc) else type(exc).__name__
                refusals[f"500 {kind}"] += 1

        async def produce() -> None:
            interval = 1.0 / rate
            next_at = time.monotonic()
            i = 0
            while running:
                user, account = targets[i % len(targets)]
                i += 1
                if len(pending) < 64:  # never more in flight than the pool can carry
                    task = asyncio.create_task(one(user, account))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))

        producer = asyncio.create_task(produce())
        print("READY", flush=True)
        started = stopped = 0.0
        count_at_start = 0
        while True:
            line = (await reader.readline()).decode().strip()
            if line == "START":
                started, count_at_start = time.monotonic(), placed
            elif line == "STOP" and running:
                # Only the first STOP ends the window: every client (this one too) is told
                # STOP again with REPORT, after the drain.
                stopped = time.monotonic()
                running = False
                await producer
                await asyncio.gather(*pending)
            elif line == "REPORT" or not line:
                break
        commits: dict[int, float] = {}
        order_ids = list(commit_of_order)
        async with app.state.brokerage.ctx.sessionmaker() as session:
            for i in range(0, len(order_ids), 1000):
                rows = await session.execute(
                    select(OrderEvent.id, OrderEvent.order_id).where(
                        OrderEvent.order_id.in_(order_ids[i : i + 1000])
                    )
                )
                for event_id, order_id in rows:
                    commits[event_id] = commit_of_order[order_id]
        print(
            "RESULT "
            + json.dumps(
                {
                    "orders_per_s": (placed - count_at_start) / max(stopped - started, 1e-9),
                    "failures": failures,
                    "refusals": dict(refusals),
                    "commits": commits,
                }
            ),
            flush=True,
        )


def _tell(proc: subprocess.Popen[bytes], line: bytes) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line)
    proc.stdin.flush()


async def fanout(args: argparse.Namespace) -> None:
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
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "BROKERAGE_JWT_SECRET": "bench-secret-" + os.urandom(16).hex(),
            "BROKERAGE_KEYRING_JSON": keyring,
            "BROKERAGE_LOG_LEVEL": "WARNING",
            "BROKERAGE_PAPER_TICK_SECONDS": "1",
            "BROKERAGE_DB_POOL_SIZE": "20",
        }
        gateway = start_gateway(env, args.workers)
        clients: list[subprocess.Popen[bytes]] = []
        try:
            users = [f"bench-{i}-{uuid.uuid4().hex[:6]}" for i in range(args.users)]
            targets: list[tuple[str, str]] = []
            plan: list[dict[str, Any]] = []
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{PORT}", timeout=30) as http:
                for user in users:
                    token = token_for(env, user)
                    for _ in range(args.accounts_per_user):
                        r = await http.post(
                            "/v1/connections",
                            json={"broker": "paper", "options": {"starting_cash": "1000000000"}},
                            headers={"Authorization": f"Bearer {token}"},
                        )
                        r.raise_for_status()
                        targets.append((user, r.json()["accounts"][0]))
                for n in range(args.subscribers):
                    user = users[n % len(users)]
                    plan.append({"token": token_for(env, user)})

                per_proc = [plan[i :: args.client_procs] for i in range(args.client_procs)]
                for part in per_proc:
                    path = Path(f"/tmp/bench-stream-plan-{os.getpid()}-{len(clients)}.json")  # noqa: S108
                    path.write_text(json.dumps(part))  # noqa: ASYNC240
                    clients.append(
                        subprocess.Popen(  # noqa: S603, ASYNC220
                            [
                                sys.executable,
                                __file__,
                                "--client",
                                str(path),
                                "--url",
                                f"ws://127.0.0.1:{PORT}/v1/stream",
                                *(["--deflate"] if args.deflate else []),
                                *(["--websockets"] if args.websockets or args.deflate else []),
                            ],
                            stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE,
                            cwd=ROOT,
                        )
                    )
            targets_path = Path(f"/tmp/bench-stream-targets-{os.getpid()}.json")  # noqa: S108
            targets_path.write_text(json.dumps([[u, a] for u, a in targets]))  # noqa: ASYNC240
            source = subprocess.Popen(  # noqa: S603, ASYNC220
                [sys.executable, __file__, "--source", str(targets_path), "--rate", str(args.rate)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                cwd=ROOT,
                env={**env, "BROKERAGE_BACKGROUND_TASKS": "false"},
            )
            clients.append(source)
            for proc in clients:
                assert proc.stdout is not None
                line = await asyncio.to_thread(proc.stdout.readline)
                if line.strip() != b"READY":
                    raise RuntimeError(f"a bench process failed to start: {line!r}")
            await asyncio.sleep(args.warmup)
            gateway_pids = group_pids(gateway.pid)
            cpu_before = cpu_ticks(gateway_pids)
            for proc in clients:
                _tell(proc, b"START\n")
            window_start = time.monotonic()
            sampling = asyncio.create_task(sample_connections(url, args.duration + 2.0))
            await asyncio.sleep(args.duration)
            _tell(source, b"STOP\n")
            window = time.monotonic() - window_start
            await asyncio.sleep(2.0)  # the last events arrive (counted, so deliveries/s is fair)
            gateway_cpu_ms = cpu_ms_between(cpu_before, cpu_ticks(gateway_pids))
            for proc in clients:
                _tell(proc, b"STOP\nREPORT\n")
            peak, statuses = await sampling
            results = []
            for proc in clients:
                assert proc.stdout is not None
                line = await asyncio.to_thread(proc.stdout.readline)
                assert line.startswith(b"RESULT "), line
                results.append(json.loads(line[len(b"RESULT ") :]))
        finally:
            for proc in clients:
                proc.kill()
            stop(gateway)

    produced, subscribers = results[-1], results[:-1]
    commits = {int(k): v for k, v in produced["commits"].items()}
    count = sum(r["count"] for r in subscribers)
    latencies = sorted(
        at - commits[event_id]
        for r in subscribers
        for event_id, at in r["receipts"]
        if event_id in commits
    )
    q = statistics.quantiles(latencies, n=1000)
    print(
        f"stream fan-out: {args.subscribers} subscribers over {args.users} users "
        f"({args.subscribers // args.users} per user), {args.client_procs} client processes, "
        f"{args.workers} gateway worker(s), permessage-deflate {'on' if args.deflate else 'off'}"
    )
    print(
        f"paper orders: {produced['orders_per_s']:.0f}/s placed by a second instance "
        f"(target {args.rate:g}), failures {produced['failures']}"
    )
    print(f"deliveries: {count} in {window:.1f} s = {count / window:,.0f} deliveries/s")
    print(
        f"gateway CPU (all its processes, START to the end of the drain): "
        f"{gateway_cpu_ms / 1000:.1f} s, "
        f"{gateway_cpu_ms * 1000 / max(count, 1):.1f} us per delivery"
    )
    print(
        f"commit->receipt latency over {len(latencies)} deliveries: p50 {q[499] * 1000:.1f} ms, "
        f"p99 {q[989] * 1000:.1f} ms, p99.9 {q[998] * 1000:.1f} ms, "
        f"max {latencies[-1] * 1000:.1f} ms"
    )
    print(
        f"database connections at peak (pg_stat_activity of the bench database): {peak} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(statuses.items()))})"
    )
    log = GATEWAY_LOG.read_text(errors="replace")  # noqa: ASYNC240
    print(
        f"gateway log: 'too many clients' {log.count('too many clients')}, "
        f"tracebacks {log.count('Traceback')}; orders refused/failed by status: "
        f"{produced['refusals'] or 'none'}"
    )
    results = subscribers
    errors = sum(r["error_count"] for r in results)
    if errors:
        print(f"client-side resyncs/errors: {errors} {results[0]['errors']}")


async def sample_connections(url: str, seconds: float) -> tuple[int, dict[str, int]]:
    """The most connections the bench database had at once (sampled every 100 ms over
    ``seconds``), and their states at that moment."""
    import asyncpg

    conn = await asyncpg.connect(_as_asyncpg_dsn(url))
    peak, at_peak = 0, {}
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            rows = await conn.fetch(
                "SELECT coalesce(state, '?') AS state, count(*) AS n FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() GROUP BY 1"
            )
            total = sum(int(r["n"]) for r in rows)
            if total > peak:
                peak, at_peak = total, {str(r["state"]): int(r["n"]) for r in rows}
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    return peak, at_peak


async def lock_cost(args: argparse.Namespace) -> None:
    import asyncpg

    explicit = os.environ.get("BENCH_DATABASE_URL")
    async with postgres_server() as admin, fresh_database(explicit or admin) as url:
        await asyncio.to_thread(upgrade, url)
        dsn = _as_asyncpg_dsn(url)
        conns = [await asyncpg.connect(dsn) for _ in range(args.writers)]
        try:
            for locked in (False, True, False, True):
                role = "origin" if locked else "replica"
                for conn in conns:
                    await conn.execute(f"SET session_replication_role = {role}")
                result = await _writers(conns, locked, args.duration)
                print(
                    f"{'with   ' if locked else 'without'} pg_advisory_xact_lock, "
                    f"{args.writers} writers: {result['tps']:,.0f} appends/s, "
                    f"commit p50 {result['p50']:.2f} ms, p99 {result['p99']:.2f} ms"
                )
        finally:
            for conn in conns:
                await conn.close()


async def _writers(conns: list[Any], locked: bool, duration: float) -> dict[str, float]:
    insert = (
        "INSERT INTO order_events (user_id, account_id, type, payload, occurred_at) "
        "VALUES ($1, 'acc', 'order.filled', $2, now()) RETURNING id"
    )
    payload = json.dumps({"quantity": "1", "status": "filled", "pad": "x" * 500})
    stop_at = time.monotonic() + duration
    times: list[float] = []

    async def loop(conn: Any) -> None:
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            async with conn.transaction():
                # The rest of a typical order transaction (its row update) comes first.
                await conn.execute("SELECT 1")
                # Locked: the outbox trigger takes the lock at COMMIT, publishes the id and
                # notifies (migration 0017; before it, 0008 took the lock at this insert).
                # Unlocked: the triggers are off for this session (replica role), and the
                # writer notifies itself, as a lock-free outbox would.
                event_id = await conn.fetchval(insert, "bench", payload)
                if not locked:
                    await conn.execute("SELECT pg_notify($1, $2)", OUTBOX_CHANNEL, str(event_id))
            times.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(loop(c) for c in conns))
    q = statistics.quantiles(times, n=100)
    return {"tps": len(times) / duration, "p50": q[49], "p99": q[98]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--subscribers", type=int, default=int(_env("BENCH_SUBSCRIBERS", "1000")))
    parser.add_argument("--users", type=int, default=int(_env("BENCH_USERS", "1")))
    parser.add_argument("--accounts-per-user", type=int, default=2)
    parser.add_argument("--rate", type=float, default=float(_env("BENCH_ORDER_RATE", "10")))
    parser.add_argument("--duration", type=float, default=float(_env("BENCH_DURATION", "20")))
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=int(_env("BENCH_WORKERS", "2")))
    parser.add_argument("--client-procs", type=int, default=int(_env("BENCH_CLIENT_PROCS", "1")))
    parser.add_argument(
        "--deflate",
        action="store_true",
        help="negotiate permessage-deflate, as browsers do (implies --websockets)",
    )
    parser.add_argument(
        "--websockets", action="store_true", help="subscribers use the websockets library"
    )
    parser.add_argument("--lock-cost", action="store_true")
    parser.add_argument("--writers", type=int, default=16)
    args = parser.parse_args()
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    if args.client:
        runner(client_main(args.client, args.url, args.websockets, args.deflate))
    elif args.source:
        runner(source_main(args.source, args.rate))
    elif args.lock_cost:
        runner(lock_cost(args))
    else:
        runner(fanout(args))


if __name__ == "__main__":
    main()
