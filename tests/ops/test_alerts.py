"""The operators' view against a running service: the alerting rules and the dashboard.

A gateway on a real socket (Postgres, Schwab's fake) is scraped twice over HTTP: once
healthy, once after real incidents made through its API and the fake: an order whose answer
timed out (``unknown``) left for 25 minutes, three Schwab grants revoked and found broken by
the token refresher, Schwab answering 5xx, a tampered audit chain found by the admin
verification, a kill-switch turned on, and the LISTEN connection killed in Postgres.

``promtool test rules`` then runs every rule of ``ops/prometheus/alerts.yml`` over series
built from those two scrapes (the healthy values, then the incident's values: gauges held,
counters growing each minute by what they grew between the scrapes) and checks that no
alert fires while healthy and that each fires, with its labels, when it should. The
dashboard's queries must parse (``promtool check rules``) and name metrics the service
exposes. Skipped, with a message, when promtool (Debian package ``prometheus``) is missing.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, text, update

from app.db.models import AuditEntry
from app.paper.clock import ManualClock
from app.services.clock import utcnow
from tests.brokers.schwab.support import gateway
from tests.conftest import new_user, own_database
from tests.fakes.runner import serve_asgi

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "brokerage-dashboard.json"
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (apt-get install prometheus): alerting rules unchecked",
)

HEALTHY_MINUTES = 15  # samples 0..14 carry the healthy scrape, 15.. the incident's
INCIDENT_MINUTES = 300
METRIC = re.compile(r"\bbrokerage_[a-z0-9_]+")
# Inside the token refresher's 300 s window before Schwab's 30-minute access token expires.
AHEAD_OF_EXPIRY = timedelta(minutes=30) - timedelta(seconds=299)


@dataclass
class Scrapes:
    healthy: str
    incident: str


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(  # noqa: S603 - our own arguments
        [PROMTOOL, *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )


@pytest_asyncio.fixture(scope="module")
async def scrapes(
    postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Scrapes]:
    clock = ManualClock(utcnow().replace(microsecond=0))
    with pytest.MonkeyPatch.context() as env:
        # A killed LISTEN connection stays down long enough to be scraped.
        env.setenv("BROKERAGE_STREAM_RECONNECT_MIN_SECONDS", "600")
        env.delenv("BYOB_BROKER_SCHWAB_DISABLED", raising=False)
        env.delenv("BYOB_LIVE_DISABLED", raising=False)
        async with (
            own_database(postgres_url, tmp_path_factory.mktemp("ops")) as url,
            gateway(url, clock=clock) as gw,
            serve_asgi(gw.harness.app) as base,
            httpx.AsyncClient(base_url=base) as http,
        ):
            h, fake = gw.harness, gw.schwab.fake
            trader = new_user("ops-trader")
            connection = await gw.connect(trader)
            [account_id, *_] = connection["accounts"]
            await gw.place_limit(trader, account_id)
            others = []
            for _ in range(3):
                login = fake.add_login()
                fake.login_as = login
                others.append(login)
                await gw.connect(new_user("ops-user"))
            admin = {"Authorization": f"Bearer {h.token('ops-admin', admin=True)}"}
            verified = await http.get("/v1/admin/audit/verify", headers=admin)
            assert verified.json()["ok"] is True, verified.text
            healthy = (await http.get("/metrics")).text

            # An order whose answer never came: unknown, then left for 25 minutes.
            fake.faults.timeout_after_accept, fake.faults.hang_seconds = 1, 3.0
            unknown = await h.place(
                trader, account_id, order_type="limit", limit_price="100.00", time_in_force="gtc"
            )
            assert unknown.json()["status"] == "unknown", unknown.text
            clock.advance(AHEAD_OF_EXPIRY)
            # Three customers remove our app at Schwab; the refresher finds them broken.
            for login in others:
                fake.revoke(login)
            report = await h.state.tokens.run_once()
            assert report.broken == 3, report
            # Schwab answers 5xx to every read for a while.
            fake.faults.server_errors = 1000
            for _ in range(5):
                read = await http.get(f"/v1/accounts/{account_id}/balances", headers=h.auth(trader))
                assert read.status_code == 503, read.text
            fake.faults.server_errors = 0
            # An edited audit entry, found by the admin verification.
            async with h.state.ctx.sessionmaker() as session:
                last = (await session.execute(select(func.max(AuditEntry.seq)))).scalar_one()
                await session.execute(
                    update(AuditEntry).where(AuditEntry.seq == last).values(outcome="rejected")
                )
                await session.commit()
            verified = await http.get("/v1/admin/audit/verify", headers=admin)
            assert verified.json()["ok"] is False, verified.text
            env.setenv("BYOB_BROKER_SCHWAB_DISABLED", "1")
            listener = h.state.stream.listener
            assert listener is not None
            assert listener.backend_pid is not None
            async with h.state.engine.connect() as db:
                pid = listener.backend_pid
                await db.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            await asyncio.wait_for(listener.wait_disconnected(), timeout=10)
            incident = (await http.get("/metrics")).text
            yield Scrapes(healthy=healthy, incident=incident)


def _samples(exposition: str) -> dict[str, tuple[str, float]]:
    """``series selector -> (metric type, value)`` of the brokerage_ samples."""
    found: dict[str, tuple[str, float]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if not sample.name.startswith("brokerage_") or sample.name.endswith("_created"):
                continue
            if not math.isfinite(sample.value):
                continue
            labels = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}"] = (family.type, sample.value)
    return found


def input_series(scrapes: Scrapes) -> list[dict[str, str]]:
    """One promtool input series per sample: the healthy value (or none) for
    ``HEALTHY_MINUTES``, then the incident's: a gauge held, a counter growing each minute
    by what it grew between the two scrapes (the incident goes on at the same pace)."""
    before, after = _samples(scrapes.healthy), _samples(scrapes.incident)
    series = []
    for selector in sorted(before.keys() | after.keys()):
        kind, _ = after.get(selector) or before[selector]
        first = before.get(selector, (kind, None))[1]
        last = after.get(selector, (kind, None))[1]
        values = ["_" if first is None else repr(first)] * HEALTHY_MINUTES
        if last is None:
            values += ["_"] * INCIDENT_MINUTES
        elif kind in ("counter", "histogram", "summary"):
            step = last - (first or 0.0)
            values += [repr(last + step * n) for n in range(INCIDENT_MINUTES)]
        else:
            values += [repr(last)] * INCIDENT_MINUTES
        series.append({"series": selector, "values": " ".join(values)})
    return series


def _rules() -> dict[str, dict[str, Any]]:
    loaded = yaml.safe_load(ALERTS.read_text())
    return {r["alert"]: r for group in loaded["groups"] for r in group["rules"]}


# When each alert must fire (minutes from the start) and the labels it carries.
EXPECTED: dict[str, tuple[int, dict[str, str]]] = {
    "BrokerageUnknownOrdersOlderThan5m": (25, {"broker": "schwab", "status": "unknown"}),
    "BrokerageBrokenConnectionsRising": (25, {"broker": "schwab"}),
    "BrokerageBrokerErrorRate": (25, {"broker": "schwab"}),
    "BrokerageAuditVerificationFailed": (25, {}),
    "BrokerageKillSwitchInForceTooLong": (
        HEALTHY_MINUTES + 4 * 60 + 5,
        {"variable": "BYOB_BROKER_SCHWAB_DISABLED", "broker": "schwab"},
    ),
    "BrokerageEventListenerDown": (25, {}),
}


def test_the_rules_pass_promtool_check() -> None:
    checked = promtool("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert set(_rules()) == set(EXPECTED)


def test_each_alert_fires_on_the_incident_scrape_and_not_before(
    scrapes: Scrapes, tmp_path: Path
) -> None:
    rules = _rules()
    tests = []
    for name, (minute, labels) in EXPECTED.items():
        rule = rules[name]
        fired = {
            "exp_labels": {**rule.get("labels", {}), **labels},
            "exp_annotations": rule["annotations"],
        }
        tests += [
            {"eval_time": f"{HEALTHY_MINUTES - 5}m", "alertname": name, "exp_alerts": []},
            {"eval_time": f"{minute}m", "alertname": name, "exp_alerts": [fired]},
        ]
    # The kill-switch is in force but not yet for longer than planned.
    tests.append(
        {"eval_time": "25m", "alertname": "BrokerageKillSwitchInForceTooLong", "exp_alerts": []}
    )
    suite = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [
            {"interval": "1m", "input_series": input_series(scrapes), "alert_rule_test": tests}
        ],
    }
    (tmp_path / "alerts_test.json").write_text(json.dumps(suite))

    ran = promtool("test", "rules", "alerts_test.json", cwd=tmp_path)

    assert ran.returncode == 0, ran.stdout[-6000:] + ran.stderr[-6000:]
    assert "SUCCESS" in ran.stdout


def _exposed(exposition: str) -> set[str]:
    """Every sample name the service can expose (families without samples included)."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.MULTILINE):
        base = name.removesuffix("_total")
        if kind == "counter":
            names |= {base + "_total"}
        elif kind == "histogram":
            names |= {name + "_bucket", name + "_sum", name + "_count"}
        else:
            names.add(name)
    return names


def test_every_query_names_metrics_the_service_exposes(scrapes: Scrapes, tmp_path: Path) -> None:
    exposed = _exposed(scrapes.incident)
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [
        t["expr"]
        for p in dashboard["panels"]
        for t in p.get("targets", [])
        if p.get("type") != "row"
    ]
    alerts = [r["expr"] for r in _rules().values()]
    titles = {p["title"] for p in dashboard["panels"]}

    for query in queries + alerts:
        assert set(METRIC.findall(query)) <= exposed, (query, set(METRIC.findall(query)) - exposed)
    # What the dashboard is for, each with a panel.
    for title in (
        "Orders by broker and outcome",
        "Unknown orders",
        "Oldest unknown order age",
        "Reconciliation lag",
        "Connections by status",
        "Kill-switches in force",
        "Upstream order stream reconnects",
        "Rate-limit waits",
        "WebSocket subscribers",
        "Event deliveries",
    ):
        assert title in titles
    # The dashboard's queries parse as PromQL: checked as recording rules by promtool.
    recording = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{n}", "expr": q.replace("$__rate_interval", "5m")}
                    for n, q in enumerate(queries)
                ],
            }
        ]
    }
    (tmp_path / "dashboard_rules.json").write_text(json.dumps(recording))
    checked = promtool("check", "rules", str(tmp_path / "dashboard_rules.json"))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_scrape_shows_the_incident(scrapes: Scrapes) -> None:
    """The sampled gauges say what happened (the rule test relies on these values)."""
    before, after = _samples(scrapes.healthy), _samples(scrapes.incident)
    unknown_age = 'brokerage_orders_unresolved_oldest_age_seconds{broker="schwab",status="unknown"}'
    broken = 'brokerage_connections{broker="schwab",status="broken"}'
    active = 'brokerage_connections{broker="schwab",status="active"}'
    switch = (
        "brokerage_kill_switch_in_force{"
        + 'broker="schwab",variable="BYOB_BROKER_SCHWAB_DISABLED"}'
    )
    assert unknown_age not in before
    # Left since it was placed (on the wall clock, a moment after the manual clock's start).
    assert after[unknown_age][1] > (AHEAD_OF_EXPIRY - timedelta(minutes=1)).total_seconds()
    assert (before[broken][1], after[broken][1]) == (0, 3)
    assert (before[active][1], after[active][1]) == (4, 1)
    assert switch not in before
    assert after[switch][1] == 1
    assert before["brokerage_stream_listener_connected{}"][1] == 1
    assert after["brokerage_stream_listener_connected{}"][1] == 0
    # Counters are per process: other tests in this process may have verified broken
    # chains before, so the incident is the increase between the two scrapes.
    broken_audits = 'brokerage_audit_verifications_total{outcome="broken"}'
    assert after[broken_audits][1] - before.get(broken_audits, ("counter", 0.0))[1] == 1
    assert after[unknown_age][1] < timedelta(hours=1).total_seconds()
