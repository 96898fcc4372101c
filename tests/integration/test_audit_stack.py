"""The auditor against the live system: gateway, referral and reporting on the real broker.

- A replay as of a past date (and known at that date) gives the responsibility the referral
  service showed on that date.
- Replays of the same history give byte-identical reports.
- The live projections equal a fresh replay; the events the services published carry chains.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import orjson
import pytest
from fastapi.testclient import TestClient

from contracts import parse_rfc3339, rfc3339
from kim.audit.replay import Scope, replay
from kim.audit.verify import Services, compare_projections, run_chains
from kim.infra.kafka import create_topics
from kim.topics import ALL_TOPICS
from services.gateway.bootstrap import create_app as create_gateway
from services.gateway.settings import GatewaySettings
from services.referral.bootstrap import create_app as create_referral
from services.referral.rules import RulesConfig
from services.referral.settings import ReferralSettings
from services.reporting.bootstrap import create_app as create_reporting
from services.reporting.domain import KEPT_FIELDS
from tests.conftest import wait_until
from tests.integration.test_reporting_service import SECRET, auth, district, publish, settings_for

AUDITOR = auth("integration_center", "auditor")
DATES = ("2025-03-01T00:00:00Z", "2025-06-15T12:00:00Z", "2025-10-01T00:00:00Z")


@pytest.fixture(scope="module")
def system(kafka_bootstrap, tmp_path_factory):
    create_topics(kafka_bootstrap, ALL_TOPICS, partitions=6)
    data_dir = tmp_path_factory.mktemp("audit")
    events = district(30, f"Auditstadt {uuid.uuid4().hex[:6]}")
    common = dict(kafka_bootstrap=kafka_bootstrap, data_dir=data_dir, auth_hs256_secret=SECRET, database_url=None)
    gateway = create_gateway(GatewaySettings(**common), instance=f"audit-{uuid.uuid4().hex[:6]}")
    referral = create_referral(ReferralSettings(**common, referral_group=f"referral-{uuid.uuid4().hex[:6]}"))
    reporting = create_reporting(settings_for(kafka_bootstrap, data_dir, f"kim-reporting-{uuid.uuid4().hex[:6]}"))
    with TestClient(gateway) as g:
        publish(g, events)
        # Started after the events are on the topics, so that "caught up" includes them.
        with TestClient(referral) as r, TestClient(reporting) as rep:
            wait_until(lambda: r.get("/readyz").status_code == 200 and rep.get("/readyz").status_code == 200,
                       timeout=90, message="referral and reporting caught up")
            yield {"referral": r, "reporting": rep, "events": events,
                   "subjects": sorted({e["subject"] for e in events}), "bootstrap": kafka_bootstrap}


def at(text: str) -> datetime:
    return parse_rfc3339(text)


def test_a_replay_as_of_a_past_date_shows_what_the_referral_service_showed_then(system):
    for date in DATES:
        moment = at(date)
        result = replay(system["bootstrap"], Scope(now=moment, as_of=moment, known_at=moment, rules=RulesConfig()))
        for subject in system["subjects"]:
            shown = system["referral"].get(f"/v1/persons/{subject}/responsibility",
                                           params={"as_of": date, "known_at": date}, headers=AUDITOR).json()
            replayed = result.person(subject)
            assert (replayed["areas"] if replayed else {}) == shown["areas"], (subject, date)


def test_replays_of_the_same_history_are_byte_identical(system):
    moment = at(DATES[1])
    scope = Scope(now=moment, as_of=moment, known_at=None, rules=RulesConfig())
    first = replay(system["bootstrap"], scope).report_bytes()
    second = replay(system["bootstrap"], scope, workers=2).report_bytes()
    assert first == second
    report = orjson.loads(first)
    assert report["as_of"] == rfc3339(moment)
    effective = {e["subject"] for e in system["events"] if parse_rfc3339(e["time"]) <= moment
                 and e["type"].split(".")[2] in KEPT_FIELDS}
    assert effective and effective <= set(report["persons"])
    assert report["kpis"] and all(not c["suppressed"] or c["value"] is None for c in report["kpis"])


def test_the_live_projections_equal_a_fresh_replay(system):
    referral, reporting = system["referral"], system["reporting"]
    for client in (referral, reporting):
        client.headers.update(AUDITOR)
    found = compare_projections(system["bootstrap"], "kim.*",
                                lambda: Scope(now=datetime.now(timezone.utc), as_of=None, known_at=None,
                                              rules=RulesConfig()),
                                Services(referral, reporting), attempts=5)
    assert found == []


def test_the_services_events_carry_intact_chains(system):
    report = run_chains(system["bootstrap"], "kim.*", [])
    ids = {e["id"] for e in system["events"]}
    assert not [p for p in report.problems if p.id in ids], "a problem with an event of this test"
    assert report.events_checked >= len(ids)
    derived = [p for p in report.problems if p.topic == "kim.referral.events"
               and any(p.id and s in p.id for s in system["subjects"])]
    assert derived == []
