"""``scripts/fake-brokers`` serves the fake IBKR gateway too, logged in and ready."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from app.brokers.ibkr.adapter import IbkrAdapter
from app.brokers.ibkr.auth import check_credentials
from app.config import Settings
from tests.fakes.main import any_ports

ROOT = Path(__file__).resolve().parents[3]


async def test_the_fake_brokers_entry_point_serves_the_ibkr_gateway() -> None:
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
        credentials = None
        while credentials is None:
            line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
            assert line, "the fakes stopped before printing their settings"
            if '"broker": "ibkr"' in line:
                payload = line.strip().removeprefix("#     -d '").removesuffix("'")
                credentials = json.loads(payload)["credentials"]
        adapter = IbkrAdapter(Settings(), check_credentials(credentials))
        try:
            [account] = await adapter.list_accounts()
            assert account.name.endswith("(paper)")
        finally:
            await adapter.close()
    finally:
        process.terminate()
        await process.wait()
