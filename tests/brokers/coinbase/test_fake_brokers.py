"""``scripts/fake-brokers`` serves the Coinbase fake too, and prints how to reach it."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import httpx

from app.brokers.coinbase import auth
from tests.fakes.main import any_ports

ROOT = Path(__file__).resolve().parents[3]


async def test_the_fake_brokers_entry_point_serves_coinbase() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.main",
        *any_ports(),
        *("--snaptrade-webhook-url", ""),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        exports: dict[str, str] = {}
        credentials: dict[str, str] | None = None
        while credentials is None:
            line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
            assert line, "the fakes stopped before printing their settings"
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").strip().partition("=")
                exports[name] = value
            if '"broker": "coinbase"' in line:
                body = json.loads(line.split("-d '", 1)[1].rsplit("'", 1)[0])
                credentials = body["credentials"]
        base = exports["BROKERAGE_COINBASE_BASE_URL"]
        assert exports["BROKERAGE_COINBASE_WS_URL"] == "ws" + base.removeprefix("http")
        assert credentials["api_key_name"] == "organizations/fake-org/apiKeys/fake-coinbase-key"
        stored = auth.check_credentials(credentials)  # the printed key is a usable one
        path = "/api/v3/brokerage/accounts"
        token = auth.Signer(stored).rest_jwt("GET", auth.jwt_host(base), path)
        async with httpx.AsyncClient(base_url=base) as client:
            accounts = await client.get(path, headers={"Authorization": f"Bearer {token}"})
        assert accounts.status_code == 200, accounts.text
        usd = [a for a in accounts.json()["accounts"] if a["currency"] == "USD"]
        assert usd[0]["available_balance"] == {"value": "100000", "currency": "USD"}
    finally:
        process.terminate()
        await process.wait()
