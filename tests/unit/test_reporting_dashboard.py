"""The dashboard and its server-side charts, without infrastructure: suppressed cells are marked, never shown."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from fastapi import FastAPI
from fastapi.testclient import TestClient

from contracts import parse_rfc3339
from kim.auth import TokenVerifier, issue_dev_token
from kim.settings import KimSettings
from services.referral.rules import RulesConfig
from services.reporting.application import Reporting
from services.reporting.charts import bar_chart, german_number, line_chart
from services.reporting.dashboard import router
from tests.unit.test_reporting_figures import refugee

SECRET = "dashboard-test-secret-of-thirty-two-bytes"


def token(*roles: str) -> str:
    return issue_dev_token(SECRET, sub="lenkung", agency="integration_center", roles=list(roles))


def dashboard_app(persons: int) -> TestClient:
    now = parse_rfc3339("2025-06-20T12:00:00Z")
    reporting = Reporting(RulesConfig(), {"integration_center": 2.0}, clock=lambda: now)
    reporting.add((h.subject, r, None) for h in (refugee(f"P-{n}") for n in range(persons))
                  for r in h.log().records.values())
    reporting.refresh()
    app = FastAPI()
    app.include_router(router)
    app.state.reporting = reporting
    app.state.token_verifier = TokenVerifier(KimSettings(auth_hs256_secret=SECRET))
    return TestClient(app)


def test_charts_are_svg_and_never_draw_a_suppressed_value():
    line = line_chart("Test", ["2025-01", "2025-02", "2025-03"],
                      [("alle", [(10, False), (None, True), (12, False)])])
    bars = bar_chart("Test", [("A1", (7, False)), ("A2", (None, True))])
    for svg in (line, bars):
        ET.fromstring(svg)  # well-formed
        assert "unterdrückt" in svg
    assert ">7<" in bars and "None" not in bars
    assert german_number(1234) == "1.234" and german_number(12.5) == "12,5"


def test_the_dashboard_shows_figures_and_marks_suppressed_cells():
    client = dashboard_app(persons=6)
    page = client.get("/", params={"from": "2025-01", "to": "2025-06"},
                      headers={"authorization": f"Bearer {token('steering_group')}"})
    assert page.status_code == 200
    assert "Aktive Personen je Bereich" in page.text and page.text.count("<svg") >= 4
    assert 'class="suppressed"' in page.text  # e.g. the one person with a handover in a month
    assert "Laupheim" in page.text
    csv = client.get("/export.csv", params={"from": "2025-01", "to": "2025-06", "municipality": "*"},
                     headers={"authorization": f"Bearer {token('auditor')}"})
    assert csv.status_code == 200 and csv.text.startswith("kpi,month,municipality")


def test_the_dashboard_asks_who_is_there():
    client = dashboard_app(persons=1)
    assert client.get("/").status_code == 401
    assert "Anmeldung nicht möglich" in client.get("/", headers={"authorization": "Bearer nonsense"}).text
    refused = client.get("/", headers={"authorization": f"Bearer {token('case_manager')}"})
    assert refused.status_code == 403 and "steering_group" in refused.text
    bad = client.post("/anmelden", data={"token": "nonsense"})
    assert bad.status_code == 401
