"""The connect flows as a user's browser meets them, and the order stream from a web page.

Each test starts on the test frontend's page (its own origin), clicks what a user clicks,
signs in where a user signs in, and reads the page the user lands on; the gateway's API is
asked afterwards what really happened. A screenshot of every flow's last page (and of the
broker pages on the way) is written under ``tests/output/browser/``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from app.security.oauth_state import cookie_name
from tests.browser.cdp import BrowserContext, Page
from tests.browser.conftest import CHROMIUM, NO_CHROMIUM, SCHWAB_LOGIN_ID, SCHWAB_PASSWORD, Stack
from tests.conftest import new_user

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


async def _connections(stack: Stack, user: str) -> list[dict[str, Any]]:
    h = stack.harness
    listed = await h.client.get("/v1/connections", headers=h.auth(user))
    assert listed.status_code == 200, listed.text
    items: list[dict[str, Any]] = listed.json()["items"]
    return items


async def _fresh_page(stack: Stack) -> tuple[BrowserContext, Page]:
    context = await stack.browser.new_context()
    return context, await context.new_page()


async def _to_schwab_sign_in(stack: Stack, page: Page, user: str) -> str:
    """From the frontend's Brokers page to Schwab's sign-in page; returns its URL."""
    await page.goto(stack.page_url("/connect.html", user))
    await page.click("#connect-schwab")
    await page.wait_for("!!document.querySelector('#log-in')")
    url = await page.url()
    assert urlsplit(url).path == "/v1/oauth/authorize", url
    return url


async def _sign_in(page: Page) -> None:
    await page.fill("#login_id", SCHWAB_LOGIN_ID)
    await page.fill("#password", SCHWAB_PASSWORD)
    await page.click("#log-in")


async def test_schwab_connects_through_the_oauth_redirects_and_a_replayed_state_fails(
    stack: Stack,
) -> None:
    user = new_user("browser")
    context, page = await _fresh_page(stack)
    await _to_schwab_sign_in(stack, page, user)
    # The authorize call (cross-origin fetch, credentials included) left the binding cookie.
    [binding] = [c for c in await context.cookies() if c["name"] == cookie_name("schwab")]
    assert (binding["httpOnly"], binding["path"]) == (True, "/v1/oauth/schwab/callback")
    await page.screenshot(stack.shots / "schwab-1-sign-in.png")

    await _sign_in(page)
    shown = await page.wait_for_text("#status", "(active)")

    assert shown == "Connected: Schwab (active)"
    landed = await page.url()
    assert landed.startswith(f"{stack.frontend}/brokers/done.html?connection_id="), landed
    connection_id = _query(landed)["connection_id"]
    # The browser went through the gateway's callback once, then was sent to return_to.
    callbacks = [
        u for u in page.requests if u.startswith(f"{stack.gateway}/v1/oauth/schwab/callback?")
    ]
    assert len(callbacks) == 1, page.requests
    assert {"code", "state"} <= set(_query(callbacks[0]))
    [connection] = await _connections(stack, user)
    assert (connection["id"], connection["broker"], connection["status"]) == (
        connection_id,
        "schwab",
        "active",
    )
    assert len(connection["accounts"]) == len(stack.schwab_login.accounts)
    # The callback cleared the binding cookie.
    assert cookie_name("schwab") not in {c["name"] for c in await context.cookies()}
    await page.screenshot(stack.shots / "schwab-2-connected.png")

    # The same callback URL again (a replayed state and code), in the same browser.
    await page.goto(callbacks[0])
    shown = await page.wait_for_text("#status", "[state_used]")

    assert "already used" in shown
    assert _query(await page.url()) == {"error": "state_used"}
    assert [c["id"] for c in await _connections(stack, user)] == [connection_id]
    await page.screenshot(stack.shots / "schwab-3-replayed-state.png")


async def test_a_sign_in_finished_in_another_browser_connects_nothing(stack: Stack) -> None:
    user = new_user("browser")
    _, started = await _fresh_page(stack)
    authorization_url = await _to_schwab_sign_in(stack, started, user)

    # The authorization URL (its state) opened in another browser: no binding cookie there.
    _, other = await _fresh_page(stack)
    await other.goto(authorization_url)
    await _sign_in(other)
    shown = await other.wait_for_text("#status", "[state_mismatch]")

    assert "started in another browser" in shown
    landed = await other.url()
    assert landed == f"{stack.frontend}/brokers/done.html?error=state_mismatch", landed
    assert await _connections(stack, user) == []
    await other.screenshot(stack.shots / "schwab-4-other-browser.png")


async def test_a_stolen_callback_is_useless_to_the_thief_and_burns_the_state(
    stack: Stack,
) -> None:
    user = new_user("browser")
    _, victim = await _fresh_page(stack)
    await _to_schwab_sign_in(stack, victim, user)
    # Someone on the way takes the redirect to the callback (its code and state) and the
    # victim's browser never gets there.
    await victim.intercept(f"{stack.gateway}/v1/oauth/schwab/callback*")
    await _sign_in(victim)
    stolen = await victim.intercepted()
    assert {"code", "state"} <= set(_query(stolen))

    _, thief = await _fresh_page(stack)
    await thief.goto(stolen)
    shown = await thief.wait_for_text("#status", "[state_mismatch]")

    assert "started in another browser" in shown
    await thief.screenshot(stack.shots / "schwab-6-stolen-callback.png")
    # The state was used up by the attempt: the victim's own browser cannot finish either.
    await victim.goto(stolen)
    await victim.wait_for_text("#status", "[state_used]")
    assert await _connections(stack, user) == []


async def test_a_return_to_off_the_allow_list_never_leaves_the_frontend(stack: Stack) -> None:
    user = new_user("browser")
    _, page = await _fresh_page(stack)
    away = quote("https://evil.example/brokers/done.html", safe="")
    await page.goto(stack.page_url(f"/connect.html?return_to={away}", user))
    await page.click("#connect-schwab")
    shown = await page.wait_for_text("#status", "(invalid_return_to)")

    assert shown.startswith("Could not start connecting Schwab:")
    assert urlsplit(await page.url()).path == "/connect.html"
    assert not [u for u in page.requests if u.startswith(stack.schwab_url)]
    assert await _connections(stack, user) == []
    await page.screenshot(stack.shots / "schwab-5-return-to-refused.png")


async def test_snaptrade_connects_through_its_connection_portal(stack: Stack) -> None:
    user = new_user("browser")
    _, page = await _fresh_page(stack)
    await page.goto(stack.page_url("/connect.html", user))
    await page.click("#connect-snaptrade")
    await page.wait_for("location.pathname === '/snapTrade/redeemToken'")
    await page.wait_for("!!document.querySelector('button[type=submit]')")
    await page.screenshot(stack.shots / "snaptrade-1-portal.png")

    await page.click("button[type=submit]")
    shown = await page.wait_for_text("#status", "(active)")

    assert shown == "Connected: Schwab via SnapTrade (active)"
    landed = await page.url()
    assert landed.startswith(f"{stack.frontend}/brokers/snaptrade-done.html?"), landed
    assert _query(landed)["status"] == "SUCCESS"
    [connection] = await _connections(stack, user)
    assert (connection["broker"], connection["status"]) == ("snaptrade", "active")
    assert connection["id"] == await page.text("#connection")
    await page.screenshot(stack.shots / "snaptrade-2-connected.png")


async def test_an_order_placed_with_fetch_arrives_on_the_pages_websocket(stack: Stack) -> None:
    user = new_user("browser")
    _, page = await _fresh_page(stack)
    await page.goto(stack.page_url("/stream.html", user))
    await page.wait_for_text("#status", "Subscribed")

    await page.click("#place")
    order_id = await page.wait_for("document.querySelector('#order').innerText")
    arrived = await page.wait_for_text("#events", str(order_id))

    # The first event of the order: the gateway recorded it before asking the broker.
    assert f"order.pending_submit {order_id}" in arrived
    h = stack.harness
    got = await h.client.get(f"/v1/orders/{order_id}", headers=h.auth(user))
    assert got.status_code == 200, got.text
    assert got.json()["account_id"] == await page.text("#account")
    await page.screenshot(stack.shots / "stream-1-order-arrived.png")
