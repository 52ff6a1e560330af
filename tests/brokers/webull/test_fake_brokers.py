"""``scripts/fake-brokers`` serves the Webull fake too, with an app that signs in at once."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from app.brokers.webull.adapter import WebullAdapter
from app.brokers.webull.auth import check_credentials
from app.config import Settings
from tests.fakes.main import any_ports

ROOT = Path(__file__).resolve().parents[3]


async def test_the_fake_brokers_entry_point_serves_webull() -> None:
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
            if line.startswith("export BROKERAGE_WEBULL_BASE_URL="):
                url = line.strip().partition("=")[2]
            if '"broker": "webull"' in line:
                payload = line.strip().removeprefix("#     -d '").removesuffix("'")
                credentials = json.loads(payload)["credentials"]
        assert url is not None
        settings = Settings(webull_base_url=url)
        bare = WebullAdapter(settings, check_credentials(credentials))
        try:
            stored = await bare.create_token()
        finally:
            await bare.close()
        assert stored["token_status"] == "NORMAL"
        adapter = WebullAdapter(settings, stored)
        try:
            assert len(await adapter.list_accounts()) == 1
        finally:
            await adapter.close()
    finally:
        process.terminate()
        await process.wait()
