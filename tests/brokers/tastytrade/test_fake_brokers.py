"""``scripts/fake-brokers`` serves the tastytrade fake too, and prints how to reach it."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx

from tests.fakes.main import any_ports

ROOT = Path(__file__).resolve().parents[3]


async def test_the_fake_brokers_entry_point_serves_tastytrade() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.main",
        *any_ports(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        exports: dict[str, str] = {}
        while "BROKERAGE_TASTYTRADE_STREAMER_URL" not in exports:
            line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
            assert line, "the fakes stopped before printing their settings"
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").strip().partition("=")
                exports[name] = value
        base = exports["BROKERAGE_TASTYTRADE_BASE_URL"]
        assert exports["BROKERAGE_TASTYTRADE_STREAMER_URL"] == "ws" + base.removeprefix("http")
        async with httpx.AsyncClient(base_url=base) as client:
            token = await client.post(
                "/oauth/token",
                json={
                    "grant_type": "refresh_token",
                    "refresh_token": "fake-tastytrade-refresh-token",
                    "client_secret": "fake-tastytrade-client-secret",
                },
                headers={"User-Agent": "test/1.0"},
            )
            assert token.status_code == 200, token.text
            accounts = await client.get(
                "/customers/me/accounts",
                headers={
                    "User-Agent": "test/1.0",
                    "Authorization": f"Bearer {token.json()['access_token']}",
                },
            )
            assert len(accounts.json()["data"]["items"]) == 1
    finally:
        process.terminate()
        await process.wait()
