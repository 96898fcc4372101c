"""Caseplan end to end: the real broker, PostgreSQL, gateway, referral and caseplan services.

Agency systems publish through the gateway; the caseplan service's timeline shows
each caller exactly what §6 lets them see, its plan commands keep the plan's rules
and publish catalogue events on the acting agency's topic, and a gap that the
referral service derives reaches the case manager's caseload.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient

from contracts import rfc3339 as z
from kim.auth import issue_dev_token
from kim.infra.kafka import create_topics
from kim.topics import ALL_TOPICS
from services.caseplan.bootstrap import create_app as create_caseplan
from services.caseplan.settings import CaseplanSettings
from services.gateway.bootstrap import create_app as create_gateway
from services.gateway.settings import GatewaySettings
from services.referral.bootstrap import create_app as create_referral
from services.referral.settings import ReferralSettings
from tests import events
from tests.conftest import wait_until

SECRET = "caseplan-test-secret-of-thirty-two-bytes"
BATCH = {"content-type": "application/cloudevents-batch+json"}


def auth(agency: str, *roles: str, sub: str = "tester") -> dict[str, str]:
    return {"authorization": "Bearer " + issue_dev_token(SECRET, sub=sub, agency=agency, roles=list(roles))}


IC_CM = auth("integration_center", "case_manager", sub="cm-anna")
JC_CM = auth("job_center", "case_manager", sub="cm-jonas")
SO_CM = auth("social_welfare_office", "case_manager", sub="cm-sofia")
AUDITOR = auth("integration_center", "auditor", sub="aud-ida")


class Person(events.Person):
    def event(self, agency: str, name: str, time: str | datetime, data: dict,
              recorded: str | datetime | None = "2026-06-01T08:00:00Z") -> dict:
        return super().event(agency, name, time, data, recorded)

    def registered(self, consent_for: list[str]) -> list[dict]:
        return [self.event("integration_center", "PersonRegistered", "2026-01-05T09:00:00Z",
                           {"municipality": "Laupheim", "birth_year": 1990, "arrival_date": "2025-11-02",
                            "country_of_origin": "SY"}),
                self.event("integration_center", "ConsentRecorded", "2026-01-05T09:10:00Z",
                           {"shared_with": consent_for, "purposes": ["Fallbearbeitung"], "valid_until": None})]


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, postgres_dsn, tmp_path_factory) -> Iterator[tuple[TestClient, TestClient, TestClient]]:
    import psycopg

    create_topics(kafka_bootstrap, ALL_TOPICS, partitions=6)
    data_dir = tmp_path_factory.mktemp("caseplan-stack")
    name = "t_" + uuid.uuid4().hex[:16]
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database_url = postgres_dsn.rsplit("/", 1)[0] + f"/{name}"
    common = dict(kafka_bootstrap=kafka_bootstrap, data_dir=data_dir, auth_hs256_secret=SECRET)
    run = uuid.uuid4().hex[:6]
    gateway = create_gateway(GatewaySettings(**common), instance=f"caseplan-{run}")
    referral = create_referral(ReferralSettings(**common, referral_group=f"referral-{run}"))
    # Intake and referral run in-process here, not on ports: the screens find nobody at these URLs.
    nobody = "http://127.0.0.1:9"
    caseplan = create_caseplan(CaseplanSettings(**common, database_url=database_url, caseplan_group=f"caseplan-{run}",
                                                intake_url=nobody, referral_url=nobody))
    with TestClient(gateway) as g, TestClient(referral) as r, TestClient(caseplan) as c:
        wait_until(lambda: c.get("/readyz").status_code == 200, timeout=60, message="caseplan ready")
        yield g, r, c


def publish(stack, agency: str, events: list[dict]) -> None:
    gateway = stack[0]
    response = gateway.post("/v1/events", content=json.dumps(events), headers={**BATCH, **auth(agency, "agency_system")})
    assert response.status_code == 202, response.text


def timeline(stack, subject: str, headers) -> list[dict]:
    response = stack[2].get(f"/v1/persons/{subject}/timeline", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def ids(events: list[dict]) -> list[str]:
    return [e["id"] for e in events]


def test_the_timeline_shows_each_caller_what_section_6_allows_sorted_by_effective_time(stack):
    p = Person()
    registration = p.registered(consent_for=["job_center"])
    # Published in another order than effective time: the Jobcenter records late.
    jc = p.event("job_center", "CaseOpenedByAgency", "2026-02-01T00:00:00Z", {"area": "benefits", "legal_domain": "SGB_II"})
    so = p.event("social_welfare_office", "CaseOpenedByAgency", "2026-01-10T00:00:00Z",
                 {"area": "benefits", "legal_domain": "ASYLBLG"})
    publish(stack, "job_center", [jc])
    publish(stack, "social_welfare_office", [so])
    publish(stack, "integration_center", registration)

    everything = [registration[0], registration[1], so, jc]
    seen = wait_until(lambda: timeline(stack, p.subject, AUDITOR) if len(timeline(stack, p.subject, AUDITOR)) == 4
                      else None, timeout=20, message="all four events in the timeline")
    assert seen == everything, "auditors see every event exactly as published, sorted by time"
    # consent shares with the Jobcenter: it sees every agency's events
    assert ids(timeline(stack, p.subject, JC_CM)) == ids(everything)
    # the registering agency sees its own events, others' only under a consent naming it
    assert ids(timeline(stack, p.subject, IC_CM)) == ids(registration)
    assert ids(timeline(stack, p.subject, SO_CM)) == [so["id"]]
    assert ids(timeline(stack, p.subject, auth("job_center", "agency_system"))) == ids(everything)
    forbidden = stack[2].get(f"/v1/persons/{p.subject}/timeline", headers=auth("job_center", "steering_group"))
    assert forbidden.status_code == 403 and "case_manager" in forbidden.json()["detail"]
    assert stack[2].get(f"/v1/persons/{p.subject}/timeline").status_code == 401

    log = stack[2].get("/v1/access-log", params={"subject": p.subject}, headers=AUDITOR).json()
    assert log and {(e["reader_sub"], e["action"]) for e in log} == {("aud-ida", "timeline")}
    assert stack[2].get("/v1/access-log", headers=JC_CM).status_code == 403

    # a withdrawal takes effect within seconds
    publish(stack, "integration_center", [p.event("integration_center", "ConsentWithdrawn", z(datetime.now(timezone.utc)),
                                                  {"shared_with": ["job_center"]})])
    wait_until(lambda: ids(timeline(stack, p.subject, JC_CM)) == [jc["id"]], timeout=15,
               message="the Jobcenter sees only its own event after the withdrawal")


def test_plan_commands_keep_the_rules_and_publish_on_the_agencys_topic(stack):
    p = Person()
    publish(stack, "integration_center", p.registered(consent_for=["job_center"]))
    caseplan = stack[2]
    base = f"/v1/persons/{p.subject}/plan"
    wait_until(lambda: caseplan.post(base, headers=IC_CM).status_code == 201, timeout=20,
               message="the plan is drafted once the registration has arrived")
    second = caseplan.post(base, headers=IC_CM)
    assert second.status_code == 409 and second.json()["error"] == "plan_open"

    bad = caseplan.post(f"{base}/goals", json={"kind": "language", "target": "Deutsch B1", "due": "2026-13-01"},
                        headers=IC_CM)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "due"]
    assert caseplan.post(f"{base}/signature", headers=IC_CM).json()["error"] == "no_goals"
    due = (datetime.now(timezone.utc) - timedelta(days=3)).date().isoformat()  # already overdue
    goal = caseplan.post(f"{base}/goals", json={"kind": "language", "target": "Deutsch B1", "due": due}, headers=IC_CM)
    assert goal.status_code == 201 and goal.json()["goals"][0]["goal_id"] == "g1"
    assert caseplan.post(f"{base}/signature", headers=JC_CM).json()["error"] == "not_plan_agency"
    signed = caseplan.post(f"{base}/signature", headers=IC_CM)
    assert signed.status_code == 200 and signed.json()["status"] == "signed"

    never = caseplan.post(f"{base}/goals/g7/achievement", headers=IC_CM)
    assert never.status_code == 409 and never.json()["field"] == "goal_id" and "never set" in never.json()["rule"]
    ends_before = caseplan.post(f"{base}/measures", json={"kind": "integration_course", "provider": "VHS Laupheim",
                                                          "starts": "2026-04-01", "ends": "2026-03-01"}, headers=IC_CM)
    assert ends_before.status_code == 422 and ends_before.json()["detail"][0]["loc"] == ["body", "ends"]
    measure = caseplan.post(f"{base}/measures", json={"kind": "integration_course", "provider": "VHS Laupheim",
                                                      "starts": "2026-04-01", "ends": "2026-09-30"}, headers=JC_CM)
    assert measure.status_code == 201, measure.text
    assert measure.json()["measures"][0]["assigned_by_agency"] == "job_center"
    assert caseplan.get(base, headers=JC_CM).json()["goals"][0]["status"] == "agreed"  # shared by consent
    assert caseplan.get(base, headers=SO_CM).status_code == 403  # not shared

    # the catalogue events come back through Kafka into the timeline, each on its agency's topic
    def published() -> list[tuple[str, str]]:
        return [(e["type"].split(".")[2], e["source"]) for e in timeline(stack, p.subject, AUDITOR)
                if e["source"].endswith(":caseplan")]

    wait_until(lambda: sorted(published()) == [("IntegrationAgreementSigned", "urn:kim:integration_center:caseplan"),
                                               ("MeasureAssigned", "urn:kim:job_center:caseplan")],
               timeout=20, message="plan events published")
    # the overdue goal is an alert on the case manager's caseload, who drafted the plan
    def my_entry() -> dict | None:
        entries = caseplan.get("/v1/caseload", headers=IC_CM).json()
        return next((e for e in entries if e["subject"] == p.subject), None)

    entry = wait_until(lambda: (e := my_entry()) and e["alerts"] and e, timeout=20, message="goal alert")
    assert entry["taken_on"] and [a["kind"] for a in entry["alerts"]] == ["goal_overdue"]

    closed = caseplan.post(f"{base}/closure", json={"reason": "moved_away"}, headers=IC_CM)
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    after = caseplan.post(f"{base}/measures", json={"kind": "fim", "provider": "Stadt Laupheim", "starts": "2026-10-01"},
                          headers=IC_CM)
    assert after.status_code == 409 and after.json()["error"] == "case_closed"
    assert caseplan.post(base, headers=IC_CM).json()["error"] == "case_closed"
    assert caseplan.post(base, headers=SO_CM).status_code == 403  # may not keep plans


def test_a_gap_opened_by_an_agency_closing_its_area_reaches_the_integration_centers_caseload(stack):
    p = Person()
    publish(stack, "integration_center", p.registered(consent_for=["social_welfare_office"]))
    publish(stack, "social_welfare_office", [
        p.event("social_welfare_office", "CaseOpenedByAgency", "2026-02-01T00:00:00Z",
                {"area": "benefits", "legal_domain": "ASYLBLG"}),
        p.event("social_welfare_office", "CaseClosedByAgency", "2026-03-01T00:00:00Z",
                {"area": "benefits", "reason": "not_competent"})])

    def gap_alerts(headers) -> list[dict]:
        entries = stack[2].get("/v1/caseload", headers=headers).json()
        return [a for e in entries if e["subject"] == p.subject for a in e["alerts"] if a["kind"] == "gap"]

    alerts = wait_until(lambda: gap_alerts(IC_CM), timeout=20, message="gap alert on the caseload")
    assert [(a["area"], a["last_agency"], a["reason"], a["since"]) for a in alerts] == [
        ("benefits", "social_welfare_office", "closed_not_competent", "2026-03-01T00:00:00Z")]
    assert gap_alerts(SO_CM), "the agency that left the gap sees it too"
    assert not gap_alerts(JC_CM), "an uninvolved agency does not"
    # an agency taking the area closes the gap
    publish(stack, "job_center", [p.event("job_center", "CaseOpenedByAgency", "2026-03-05T00:00:00Z",
                                          {"area": "benefits", "legal_domain": "SGB_II"})])
    wait_until(lambda: not gap_alerts(IC_CM), timeout=20, message="gap closed")


def test_the_screens_are_read_only_for_auditors_and_work_while_intake_and_referral_are_away(stack):
    """Intake and referral do not answer at the configured URLs: the person page says so."""
    from services.caseplan.login import SESSION_COOKIE, csrf_value

    p = Person()
    publish(stack, "integration_center", p.registered(consent_for=["job_center"]))
    caseplan = stack[2]
    token = issue_dev_token(SECRET, sub="aud-ida", agency="integration_center", roles=["auditor"])
    caseplan.cookies.set(SESSION_COOKIE, token)
    try:
        page = wait_until(lambda: (r := caseplan.get(f"/persons/{p.subject}")).status_code == 200
                          and "Person registriert" in r.text and r, timeout=20, message="person page")
        assert "Der Intake-Dienst antwortet nicht" in page.text
        assert "Der Zuständigkeitsdienst antwortet nicht" in page.text
        assert 'id="draft-plan"' not in page.text, "no forms for auditors"
        refused = caseplan.post(f"/persons/{p.subject}/plan", data={"csrf": csrf_value(token)},
                                follow_redirects=False)
        assert refused.status_code == 403 and "Nur das Fallmanagement" in refused.text
        assert caseplan.get(f"/v1/persons/{p.subject}/plan", headers=IC_CM).status_code == 404
    finally:
        caseplan.cookies.clear()
