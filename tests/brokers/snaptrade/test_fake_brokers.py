"""``scripts/fake-brokers`` serves the SnapTrade fake too, and prints how to reach it."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx

from app.brokers.snaptrade import auth
from tests.fakes.main import any_ports

ROOT = Path(__file__).resolve().parents[3]


async def test_the_fake_brokers_entry_point_serves_snaptrade() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.main",
        *any_ports(),
        "--snaptrade-webhook-url",
        "",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        exports: dict[str, str] = {}
        while "BROKERAGE_SNAPTRADE_CONSUMER_KEY" not in exports:
            line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
            assert line, "the fakes stopped before printing their settings"
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").strip().partition("=")
                exports[name] = value
        key = auth.PartnerKey(
            exports["BROKERAGE_SNAPTRADE_CLIENT_ID"], exports["BROKERAGE_SNAPTRADE_CONSUMER_KEY"]
        )
        async with httpx.AsyncClient(
            base_url=exports["BROKERAGE_SNAPTRADE_BASE_URL"], auth=auth.SignedRequests(key)
        ) as client:
            registered = await client.post("/snapTrade/registerUser", json={"userId": "u-1"})
            assert registered.status_code == 200, registered.text
            accounts = await client.get(
                "/accounts",
                params={"userId": "u-1", "userSecret": registered.json()["userSecret"]},
            )
            assert accounts.json() == []
    finally:
        process.terminate()
        await process.wait()
