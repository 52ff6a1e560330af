"""What the benches start and how they measure it, in one place: a gateway or a bare server
under uvicorn in a process group of its own, the fake Alpaca in a process of its own, wrk,
and the CPU time of processes and of a database's Postgres backends (from /proc).

Used by scripts/bench/orders.py, overhead.py and group_commit.py. Run as a script only as
the fake's child process (``--fake-alpaca CONFIG``), never by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def new_keyring() -> str:
    """A fresh local keyring (one random key-encryption key) for a bench gateway."""
    return json.dumps(
        {
            "primary": 1,
            "min_decryption_version": 1,
            "keys": {"1": base64.b64encode(os.urandom(32)).decode()},
        }
    )


# --- wrk ------------------------------------------------------------------------------


def wrk(url: str, script: str, concurrency: int, duration: str) -> dict[str, Any]:
    """One wrk run (2 threads, 30 s request timeout: wrk's default of 2 s drops slower answers
    from the latency figures); the Lua ``script`` prints ``RESULT requests duration_us p50_us
    p99_us non_2xx timeouts`` in its ``done``."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        out = subprocess.run(  # noqa: S603
            [  # noqa: S607
                "wrk",
                "-t2",
                f"-c{concurrency}",
                f"-d{duration}",
                "--timeout",
                "30s",
                "-s",
                handle.name,
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(handle.name)
    match = re.search(r"RESULT (\d+) (\d+) ([\d.]+) ([\d.]+) (\d+) (\d+)", out)
    assert match, out
    requests, duration_us, p50_us, p99_us, errors, timeouts = match.groups()
    return {
        "requests": int(requests),
        "rps": int(requests) / (int(duration_us) / 1e6),
        "p50_ms": float(p50_us) / 1000,
        "p99_ms": float(p99_us) / 1000,
        "non_2xx": int(errors),
        "timeouts": int(timeouts),
    }


# --- CPU of processes -------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_ticks(pids: list[int]) -> dict[int, int]:
    """utime + stime of each process still alive."""
    found = {}
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            found[pid] = int(fields[11]) + int(fields[12])
    return found


def cpu_ms_between(before: dict[int, int], after: dict[int, int]) -> float:
    """CPU milliseconds spent between two ``cpu_ticks`` samples (new processes counted whole)."""
    return sum(t - before.get(p, 0) for p, t in after.items()) * TICK_MS


def group_pids(pgid: int) -> list[int]:
    """Every process of a server's process group (uvicorn's supervisor and workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and int(fields[2]) == pgid:
                pids.append(int(entry.name))
    return pids


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg", "postgresql")


async def postgres_pids(url: str) -> list[int]:
    """The Postgres backends serving the bench's own database (not other clients')."""
    import asyncpg

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return [row["pid"] for row in rows]


async def postgres_settings(url: str, names: tuple[str, ...]) -> dict[str, str]:
    """Postgres' own settings (``SHOW``-style values with their units)."""
    import asyncpg

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1::text[])", list(names)
        )
        version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    found = {row["name"]: row["setting"] + (row["unit"] or "") for row in rows}
    return {"server_version": version} | {name: found.get(name, "?") for name in names}


class LockWaits:
    """Samples, every 100 ms while running, how many of a database's sessions wait for a
    lock, by kind (``advisory``: e.g. the outbox's ``pg_advisory_xact_lock``;
    ``transactionid``/``tuple``: a row another transaction holds)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._stop = asyncio.Event()
        self._samples = 0
        self._waiting: collections.Counter[str] = collections.Counter()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LockWaits:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    def mean(self) -> dict[str, float]:
        """Mean number of sessions waiting, per lock kind."""
        return {kind: n / max(self._samples, 1) for kind, n in self._waiting.most_common()}

    def describe(self) -> str:
        return ", ".join(f"{kind} {n:.1f}" for kind, n in self.mean().items()) or "none"

    async def _run(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(asyncpg_dsn(self._url))
        try:
            while not self._stop.is_set():
                rows = await conn.fetch(
                    "SELECT wait_event, count(*) AS n FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock' "
                    "GROUP BY wait_event"
                )
                self._samples += 1
                for row in rows:
                    self._waiting[row["wait_event"]] += row["n"]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 0.1)
        finally:
            await conn.close()


# --- servers ------------------------------------------------------------------------------


def gateway_env(
    url: str, secret: str, fake_url: str | None, *, ca_file: str | None = None
) -> dict[str, str]:
    """The environment of a bench gateway (``python -m app.cli serve``, as production runs
    it): its database, fresh secrets, and the fake Alpaca's URL when there is one;
    ``ca_file``: the CA of a fake served over TLS, trusted through ``SSL_CERT_FILE``."""
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "BROKERAGE_JWT_SECRET": secret,
        "BROKERAGE_KEYRING_JSON": new_keyring(),
        "BROKERAGE_AUDIT_KEY": "bench-audit-" + os.urandom(32).hex(),
        "BROKERAGE_LOG_LEVEL": "WARNING",
        "BROKERAGE_PAPER_TICK_SECONDS": "1",
    }
    if fake_url is not None:
        env |= {
            "BROKERAGE_ALPACA_TRADING_URL": fake_url,
            "BROKERAGE_ALPACA_DATA_URL": fake_url,
            # Policy, not cost: the bench users trade live at once, no paper round trips first.
            "BROKERAGE_PAPER_FIRST_CYCLES": "0",
        }
    if ca_file is not None:
        env["SSL_CERT_FILE"] = ca_file
    return env


def start_server(
    args: list[str],
    env: dict[str, str],
    port: int,
    *,
    cwd: Path = ROOT,
    ready_path: str = "/docs",
) -> subprocess.Popen[bytes]:
    """Start a server in a process group of its own; return once it answers ``ready_path``."""
    proc = subprocess.Popen(args, env=env, cwd=cwd, start_new_session=True)  # noqa: S603
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{args[0]} exited with {proc.returncode} during start-up")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{ready_path}", timeout=1).status_code < 500:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError("server did not start")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's whole process group (its workers too); SIGKILL after 30 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# --- the fake Alpaca in its own process ----------------------------------------------------


@dataclass(frozen=True)
class AlpacaKey:
    key_id: str
    secret: str

    @classmethod
    def new(cls) -> AlpacaKey:
        return cls("PK" + uuid.uuid4().hex[:18].upper(), uuid.uuid4().hex + uuid.uuid4().hex)


@dataclass
class FakeProcess:
    url: str
    pid: int
    # With TLS: the CA certificate that signed the fake's, for the gateway's SSL_CERT_FILE.
    ca_file: str | None = None


def _self_signed(directory: Path) -> tuple[str, str, str]:
    """A CA and a certificate for 127.0.0.1 signed by it, as PEM files in ``directory``:
    (CA certificate, certificate chain, key). The fake then speaks HTTPS as a broker does."""
    import ipaddress
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)

    def certificate(
        name: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: Any, ca: bool
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
            builder = builder.add_extension(san, critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench CA")])
    ca = certificate("bench CA", ca_key, ca_name, ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = certificate("127.0.0.1", key, ca_name, ca_key, False)
    pem = serialization.Encoding.PEM
    paths = (directory / "ca.pem", directory / "chain.pem", directory / "key.pem")
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    paths[2].write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(paths[0]), str(paths[1]), str(paths[2])


@contextlib.asynccontextmanager
async def fake_alpaca(
    keys: list[AlpacaKey], *, latency_ms: float = 0.0, cash: str = "100000000", tls: bool = False
) -> AsyncIterator[FakeProcess]:
    """The fake Alpaca (tests/fakes/alpaca) serving one account per key, in a process of its
    own (its CPU is not the gateway's nor the client's); yields its URL and pid. At the end
    it prints on stderr what it was asked, so a gateway that calls the broker more than once
    per order shows there. ``tls``: served over HTTPS with a certificate of a CA made for
    the run (``FakeProcess.ca_file``), as real brokers are, so connecting costs a TLS
    handshake."""
    with tempfile.TemporaryDirectory() as certificates:
        ca_file, chain, key = _self_signed(Path(certificates)) if tls else (None, None, None)
        config = {
            "keys": [[k.key_id, k.secret] for k in keys],
            "latency_ms": latency_ms,
            "cash": cash,
            "tls": None if chain is None else [chain, key],
        }
        async with _fake_alpaca_process(config) as (url, pid):
            yield FakeProcess(url, pid, ca_file)


@contextlib.asynccontextmanager
async def _fake_alpaca_process(config: dict[str, object]) -> AsyncIterator[tuple[str, int]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--fake-alpaca",
        json.dumps(config),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        while True:  # the URL line (a log line may come first)
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
            if not line:
                raise RuntimeError("the fake Alpaca stopped during start-up")
            if line.startswith((b"http://", b"https://")):
                break
        yield line.decode().strip(), proc.pid
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


async def _serve_fake_alpaca(config: dict[str, object]) -> None:
    from tests.fakes.alpaca import FakeAlpaca, serve_asgi

    fake = FakeAlpaca()
    keys = config["keys"]
    assert isinstance(keys, list)
    for key_id, secret in keys:
        fake.add_account(key_id=key_id, secret=secret, cash=str(config["cash"]))
    fake.faults.latency = float(str(config["latency_ms"])) / 1000
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tls = config.get("tls")
    files = (str(tls[0]), str(tls[1])) if isinstance(tls, list) else None
    async with serve_asgi(fake.app, on_shutdown=fake.release_hung, tls=files) as url:
        print(url, flush=True)
        await stop.wait()
    counts = collections.Counter(f"{method} {path}" for method, path in fake.requests)
    for request, n in counts.most_common(8):
        print(f"fake served {n:6d} x {request}", file=sys.stderr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fake-alpaca", required=True, help="JSON config (from fake_alpaca)")
    asyncio.run(_serve_fake_alpaca(json.loads(parser.parse_args().fake_alpaca)))
