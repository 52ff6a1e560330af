"""``scripts/fake-brokers`` serves the Robinhood fake too, with a key that signs requests."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from app.brokers.robinhood.adapter import RobinhoodAdapter
from app.brokers.robinhood.auth import check_credentials
from app.config import Settings
from tests.fakes.main import any_ports

ROOT = Path(__file__).resolve().parents[3]


async def test_the_fake_brokers_entry_point_serves_robinhood() -> None:
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
        url, credentials = None, None
        while credentials is None:
            line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
            assert line, "the fakes stopped before printing their settings"
            if line.startswith("export BROKERAGE_ROBINHOOD_BASE_URL="):
                url = line.strip().partition("=")[2]
            if '"broker": "robinhood"' in line:
                payload = line.strip().removeprefix("#     -d '").removesuffix("'")
                credentials = json.loads(payload)["credentials"]
        assert url is not None
        adapter = RobinhoodAdapter(Settings(robinhood_base_url=url), check_credentials(credentials))
        try:
            [account] = await adapter.list_accounts()
            assert account.currency == "USD"
        finally:
            await adapter.close()
    finally:
        process.terminate()
        await process.wait()
