"""A headless Chromium driven over the Chrome DevTools Protocol, with nothing but websockets.

The system's Chromium (Debian package ``chromium``) is started with
``--remote-debugging-port=0``; it writes the port it chose to ``DevToolsActivePort`` in its
profile directory, and one WebSocket to the browser endpoint carries every command (flat
sessions: each page's commands carry its ``sessionId``). No browser is downloaded and no
driver binary (chromedriver) is needed.

A ``BrowserContext`` is a separate cookie jar and storage, as a different browser would
have: what "another browser" means in the OAuth tests. Pages are driven as a user would:
navigate, click, fill in, wait for what the page shows, and take a screenshot.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """``BROWSER_BIN`` if set, else the first Chromium on PATH."""
    configured = os.environ.get("BROWSER_BIN")
    if configured:
        return configured if shutil.which(configured) else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class CdpError(Exception):
    pass


class Browser:
    """One Chromium process and its DevTools connection."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._listeners: dict[str, list[asyncio.Queue[dict[str, Any]]]] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self._ws:
            message = json.loads(raw)
            if "id" in message:
                future = self._pending.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message)
                continue
            for queue in self._listeners.get(message.get("sessionId", ""), []):
                queue.put_nowait(message)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(CdpError("the browser connection closed"))

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        command_id = next(self._ids)
        message: dict[str, Any] = {"id": command_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[command_id] = future
        await self._ws.send(json.dumps(message))
        answer = await asyncio.wait_for(future, timeout=30)
        if "error" in answer:
            raise CdpError(f"{method}: {answer['error'].get('message')}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    def listen(self, session: str) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._listeners.setdefault(session, []).append(queue)
        return queue

    async def new_context(self) -> BrowserContext:
        """A fresh profile-less context: no cookies, no storage (another browser)."""
        created = await self.send("Target.createBrowserContext", {"disposeOnDetach": True})
        return BrowserContext(self, created["browserContextId"])

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.send("Browser.close")
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._reader


class BrowserContext:
    def __init__(self, browser: Browser, context_id: str) -> None:
        self.browser = browser
        self.id = context_id

    async def new_page(self) -> Page:
        target = await self.browser.send(
            "Target.createTarget", {"url": "about:blank", "browserContextId": self.id}
        )
        attached = await self.browser.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self.browser, attached["sessionId"])
        for domain in ("Page", "Runtime", "Network"):
            await page.send(f"{domain}.enable")
        return page

    async def cookies(self) -> list[dict[str, Any]]:
        found = await self.browser.send("Storage.getCookies", {"browserContextId": self.id})
        cookies: list[dict[str, Any]] = found["cookies"]
        return cookies


class Page:
    """One tab. ``requests``: every URL it asked for (Network.requestWillBeSent), in order;
    ``console``: what its scripts logged (shown when a wait fails)."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session
        self.requests: list[str] = []
        self.console: list[str] = []
        self.paused: asyncio.Queue[dict[str, Any]] = asyncio.Queue()  # Fetch.requestPaused
        self._events = browser.listen(session)
        self._watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            event = await self._events.get()
            method, params = event.get("method"), event.get("params", {})
            if method == "Fetch.requestPaused":
                self.paused.put_nowait(params)
            elif method == "Network.requestWillBeSent":
                self.requests.append(params["request"]["url"])
            elif method == "Runtime.consoleAPICalled":
                self.console.append(
                    " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
                )
            elif method == "Runtime.exceptionThrown":
                self.console.append(str(params["exceptionDetails"].get("exception", {})))

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.browser.send(method, params, session=self.session)

    async def intercept(self, url_pattern: str) -> None:
        """Hold every request matching ``url_pattern`` (``*`` wildcards) in ``paused``."""
        await self.send("Fetch.enable", {"patterns": [{"urlPattern": url_pattern}]})

    async def intercepted(self, within: float = 15.0) -> str:
        """The next held request's URL; it is aborted (it never reaches its server)."""
        paused = await asyncio.wait_for(self.paused.get(), timeout=within)
        await self.send(
            "Fetch.failRequest", {"requestId": paused["requestId"], "errorReason": "Aborted"}
        )
        await self.send("Fetch.disable")
        return str(paused["request"]["url"])

    async def goto(self, url: str) -> None:
        answer = await self.send("Page.navigate", {"url": url})
        if answer.get("errorText"):
            raise CdpError(f"navigation to {url} failed: {answer['errorText']}")
        await self.wait_for("document.readyState === 'complete'")

    async def evaluate(self, expression: str) -> Any:
        """The expression's value (a promise is awaited), as JSON."""
        answer = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
        )
        if "exceptionDetails" in answer:
            raise CdpError(f"{expression!r} threw: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    async def wait_for(self, expression: str, within: float = 15.0) -> Any:
        """Poll until ``expression`` is truthy (navigations in between are expected)."""
        deadline = asyncio.get_running_loop().time() + within
        last: Any = None
        while True:
            with contextlib.suppress(CdpError):  # the page is between documents
                last = await self.evaluate(expression)
                if last:
                    return last
            if asyncio.get_running_loop().time() > deadline:
                url = await self.url()
                raise TimeoutError(
                    f"waited {within}s for {expression!r} at {url} (last: {last!r}); "
                    f"console: {self.console}"
                )
            await asyncio.sleep(0.05)

    async def url(self) -> str:
        with contextlib.suppress(CdpError):
            return str(await self.evaluate("location.href"))
        return "<navigating>"

    async def text(self, selector: str) -> str:
        return str(
            await self.evaluate(
                f"(document.querySelector({json.dumps(selector)}) || {{}}).innerText || ''"
            )
        )

    async def wait_for_text(self, selector: str, contains: str, within: float = 15.0) -> str:
        found = await self.wait_for(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            f" return e && e.innerText.includes({json.dumps(contains)}) && e.innerText; }})()",
            within,
        )
        return str(found)

    async def click(self, selector: str) -> None:
        """A real mouse click at the element's centre (Input.dispatchMouseEvent)."""
        box = await self.wait_for(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return null; e.scrollIntoView();"
            " const r = e.getBoundingClientRect();"
            " return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": box["x"], "y": box["y"], "button": "left", "clickCount": 1},
            )

    async def fill(self, selector: str, value: str) -> None:
        """Focus the field and type ``value`` into it (Input.insertText)."""
        await self.wait_for(f"!!document.querySelector({json.dumps(selector)})")
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        await self.send("Input.insertText", {"text": value})

    async def screenshot(self, path: Path) -> Path:
        shot = await self.send("Page.captureScreenshot", {"format": "png"})
        data = base64.b64decode(shot["data"])

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)

        await asyncio.to_thread(write)
        return path

    async def close(self) -> None:
        self._watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watcher


@contextlib.asynccontextmanager
async def launch(binary: str) -> AsyncIterator[Browser]:
    """Start headless Chromium with a throwaway profile; stop it afterwards."""
    # Chromium's helpers (renderers, crashpad) can outlive the browser process and keep
    # writing to the profile: the browser runs in a process group of its own, which is
    # killed whole, and a profile a straggler still writes to does not fail the teardown.
    with tempfile.TemporaryDirectory(prefix="cdp-profile-", ignore_cleanup_errors=True) as profile:
        process = await asyncio.create_subprocess_exec(
            binary,
            "--headless=new",
            "--no-sandbox",  # root in CI containers: Chromium refuses its sandbox there
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--window-size=1000,700",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            active = Path(profile) / "DevToolsActivePort"
            deadline = asyncio.get_running_loop().time() + 30
            while not (active.exists() and len(active.read_text().splitlines()) >= 2):
                if process.returncode is not None:
                    raise CdpError(f"chromium exited with {process.returncode} at start-up")
                if asyncio.get_running_loop().time() > deadline:
                    raise CdpError("chromium did not open its DevTools port within 30 s")
                await asyncio.sleep(0.05)
            port, path = active.read_text().splitlines()[:2]
            async with connect(f"ws://127.0.0.1:{port}{path}", max_size=None) as ws:
                browser = Browser(ws)
                try:
                    yield browser
                finally:
                    await browser.close()
        finally:
            if process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), timeout=10)
                except TimeoutError:
                    process.kill()
                    await process.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the helpers left behind, if any
