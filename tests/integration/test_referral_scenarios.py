"""Gap-free jurisdiction end to end: the real gateway, Kafka and referral service.

Each test publishes a person's events through the gateway and polls the referral
service's endpoints until they show what the events describe.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from contracts import rfc3339 as z
from kim.auth import issue_dev_token
from kim.infra.kafka import create_topics
from kim.topics import ALL_TOPICS
from services.gateway.bootstrap import create_app as create_gateway
from services.gateway.settings import GatewaySettings
from services.referral.bootstrap import _helper_status
from services.referral.bootstrap import create_app as create_referral
from services.referral.settings import ReferralSettings
from tests.conftest import wait_until
from tests.events import Person

EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "examples"
SECRET = "referral-test-secret-of-thirty-two-bytes"
BATCH = {"content-type": "application/cloudevents-batch+json"}


def auth(agency: str, *roles: str) -> dict[str, str]:
    return {"authorization": "Bearer " + issue_dev_token(SECRET, sub="t", agency=agency, roles=list(roles))}


AUDITOR = auth("integration_center", "auditor")


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, tmp_path_factory):
    create_topics(kafka_bootstrap, ALL_TOPICS, partitions=6)
    data_dir = tmp_path_factory.mktemp("referral-stack")
    gateway = create_gateway(GatewaySettings(**_common(kafka_bootstrap, data_dir)),
                             instance=f"scenario-{uuid.uuid4().hex[:6]}")
    with TestClient(gateway) as g, referral_client(kafka_bootstrap, data_dir) as r:
        yield g, r


def _common(bootstrap: str, data_dir: Path) -> dict:
    return dict(kafka_bootstrap=bootstrap, data_dir=data_dir, auth_hs256_secret=SECRET, database_url=None)


def referral_client(bootstrap: str, data_dir: Path, rules_toml: str | None = None) -> TestClient:
    rules_file = None
    if rules_toml is not None:
        rules_file = data_dir / "rules.toml"
        rules_file.write_text(rules_toml)
    settings = ReferralSettings(**_common(bootstrap, data_dir), rules_file=rules_file,
                                referral_group=f"referral-{uuid.uuid4().hex[:6]}")
    return TestClient(create_referral(settings))


def publish(stack, agency: str, events: list[dict]) -> dict:
    gateway, _ = stack
    response = gateway.post("/v1/events", content=json.dumps(events), headers={**BATCH, **auth(agency, "agency_system")})
    assert response.status_code == 202, response.text
    return response.json()


def responsibility(stack, subject: str, **params) -> dict:
    _, referral = stack
    response = referral.get(f"/v1/persons/{subject}/responsibility", params=params, headers=AUDITOR)
    assert response.status_code == 200, response.text
    return response.json()


def gaps_of(stack, subject: str, status: str = "all") -> list[dict]:
    _, referral = stack
    response = referral.get("/v1/gaps", params={"status": status}, headers=AUDITOR)
    assert response.status_code == 200, response.text
    return [g for g in response.json() if g["subject"] == subject]


def handovers_of(stack, subject: str, status: str | None = None, headers=AUDITOR) -> list[dict]:
    _, referral = stack
    response = referral.get("/v1/handovers", params={"status": status} if status else {}, headers=headers)
    assert response.status_code == 200, response.text
    return [h for h in response.json() if h["subject"] == subject]


def test_the_helper_process_is_a_group_member_owning_partition_numbers_of_its_own(stack):
    _, referral = stack
    member, helper = referral.app.state.members
    if helper is None:
        pytest.skip("a helper process needs a second CPU")

    def owned() -> tuple[list[int], list[int]] | None:
        mine, theirs = member.status().owned, helper.submit(_helper_status).result(10).owned
        return (mine, theirs) if mine and theirs else None

    mine, theirs = wait_until(owned, timeout=30, message="both members own partitions")
    assert not set(mine) & set(theirs)
    assert sorted(mine + theirs) == list(range(6))


def test_r1_accepted_in_time_leaves_no_gap(stack):
    """The spec's example path: Sozialamt → Jobcenter exactly at the legal end."""
    p = Person()
    publish(stack, "social_welfare_office", [
        p.event("social_welfare_office", "CaseOpenedByAgency", "2026-05-20T00:00:00Z",
                {"area": "benefits", "legal_domain": "ASYLBLG"}),
        p.event("social_welfare_office", "HandedOverToAgency", "2026-07-10T08:00:00Z",
                {"handover_id": f"ho-{p.subject}", "area": "benefits", "to_agency": "job_center",
                 "to_legal_domain": "SGB_II", "reason": "recognised"}),
    ])
    publish(stack, "foreigners_office", [p.event("foreigners_office", "ResidenceTitleGranted", "2026-07-02T10:00:00Z",
                                                 {"title": "§ 25 Abs. 2 AufenthG", "category": "protection",
                                                  "valid_until": "2029-07-01"})])
    publish(stack, "job_center", [p.event("job_center", "HandoverAccepted", "2026-08-01T00:00:00+02:00",
                                          {"handover_id": f"ho-{p.subject}"}, recorded="2026-07-20T09:00:00Z")])
    expected = {"benefits": [
        {"agency": "social_welfare_office", "legal_domain": "ASYLBLG", "from": "2026-05-20T00:00:00Z",
         "to": "2026-07-31T22:00:00Z"},
        {"agency": "job_center", "legal_domain": "SGB_II", "from": "2026-07-31T22:00:00Z", "to": None}]}
    wait_until(lambda: responsibility(stack, p.subject)["areas"] == expected, timeout=10, message="handover applied")
    wait_until(lambda: [h["status"] for h in handovers_of(stack, p.subject)] == ["accepted"], timeout=10,
               message="the actual offer replaced the expected handover and was accepted")
    assert gaps_of(stack, p.subject) == []
    # as_of before the acceptance: the Sozialamt still held benefits, its interval open then
    before = responsibility(stack, p.subject, as_of="2026-07-15T00:00:00Z")["areas"]["benefits"]
    assert before == [{"agency": "social_welfare_office", "legal_domain": "ASYLBLG",
                       "from": "2026-05-20T00:00:00Z", "to": None}]


def test_r1_never_handled_opens_a_gap_at_the_legal_end_and_an_overdue_handover(stack):
    p = Person()
    publish(stack, "social_welfare_office", [p.event("social_welfare_office", "CaseOpenedByAgency",
                                                     "2026-03-01T00:00:00Z", {"area": "benefits", "legal_domain": "ASYLBLG"})])
    publish(stack, "foreigners_office", [p.event("foreigners_office", "ResidenceTitleGranted", "2026-03-10T10:00:00Z",
                                                 {"title": "§ 25 Abs. 2 AufenthG", "category": "protection",
                                                  "valid_until": None})])
    gaps = wait_until(lambda: gaps_of(stack, p.subject, "open"), timeout=10, message="legal-end gap")
    assert [(g["area"], g["since"], g["until"], g["last_agency"], g["reason"]) for g in gaps] == [
        ("benefits", "2026-03-31T22:00:00Z", None, "social_welfare_office", "legal_end")]
    overdue = handovers_of(stack, p.subject, "overdue")
    assert [(h["kind"], h["area"], h["from_agency"], h["to_agency"], h["deadline"]) for h in overdue] == [
        ("expected", "benefits", "social_welfare_office", "job_center", "2026-03-31T22:00:00Z")]
    # the Jobcenter accepts the expected handover by its id, late: the gap closes then
    publish(stack, "job_center", [p.event("job_center", "HandoverAccepted", "2026-04-15T00:00:00Z",
                                          {"handover_id": overdue[0]["handover_id"]})])
    closed = wait_until(lambda: gaps_of(stack, p.subject, "closed"), timeout=10, message="gap closed")
    assert [(g["since"], g["until"]) for g in closed] == [("2026-03-31T22:00:00Z", "2026-04-15T00:00:00Z")]


def test_a_legal_end_passing_in_real_time_opens_the_gap_without_another_event(stack, kafka_bootstrap, tmp_path):
    """R1 with a legal end three seconds after the title: the gap and the overdue
    handover must appear within 5 s of that instant, with no further event (§4)."""
    gateway, _ = stack
    p = Person()
    now = datetime.now(timezone.utc)
    with referral_client(kafka_bootstrap, tmp_path, '[rules.r1]\nlegal_end = "PT3S"\n') as referral:
        publish(stack, "social_welfare_office", [p.event("social_welfare_office", "CaseOpenedByAgency",
                                                         now - timedelta(days=30),
                                                         {"area": "benefits", "legal_domain": "ASYLBLG"})])
        publish(stack, "foreigners_office", [p.event("foreigners_office", "ResidenceTitleGranted", now,
                                                     {"title": "§ 25 Abs. 2 AufenthG", "category": "protection",
                                                      "valid_until": None})])
        legal_end = now + timedelta(seconds=3)

        def listed(path: str, status: str) -> list[dict]:
            response = referral.get(path, params={"status": status}, headers=AUDITOR)
            return [x for x in response.json() if x["subject"] == p.subject]

        pending = wait_until(lambda: listed("/v1/handovers", "pending"), timeout=10, message="expected handover")
        assert pending[0]["kind"] == "expected" and listed("/v1/gaps", "all") == []
        remaining = (legal_end - datetime.now(timezone.utc)).total_seconds()
        gap = wait_until(lambda: listed("/v1/gaps", "open"), timeout=remaining + 5, message="gap at the legal end")
        assert gap[0]["reason"] == "legal_end" and gap[0]["since"] == z(legal_end)
        assert listed("/v1/handovers", "overdue")[0]["handover_id"] == pending[0]["handover_id"]


def test_closure_not_competent_then_reopening_gives_a_closed_gap_with_both_ends(stack):
    p = Person()
    publish(stack, "integration_center", [
        p.event("integration_center", "CaseOpenedByAgency", "2026-01-05T09:00:00Z",
                {"area": "labour_market", "legal_domain": "NONE"}),
        p.event("integration_center", "CaseClosedByAgency", "2026-02-01T09:00:00Z",
                {"area": "labour_market", "reason": "not_competent"}),
    ])
    publish(stack, "employment_agency", [p.event("employment_agency", "CaseOpenedByAgency", "2026-02-10T09:00:00Z",
                                                 {"area": "labour_market", "legal_domain": "SGB_III"})])
    closed = wait_until(lambda: gaps_of(stack, p.subject, "closed"), timeout=10, message="closed gap")
    assert [(g["area"], g["since"], g["until"], g["last_agency"], g["reason"]) for g in closed] == [
        ("labour_market", "2026-02-01T09:00:00Z", "2026-02-10T09:00:00Z", "integration_center", "closed_not_competent")]
    assert gaps_of(stack, p.subject, "open") == []


def test_r2_acceptance_arriving_before_the_offer(stack):
    p = Person()
    publish(stack, "integration_center", [p.event("integration_center", "CaseOpenedByAgency", "2026-01-05T09:00:00Z",
                                                  {"area": "labour_market", "legal_domain": "NONE"})])
    publish(stack, "employment_agency", [p.event("employment_agency", "HandoverAccepted", "2026-05-12T09:00:00Z",
                                                 {"handover_id": f"r2-{p.subject}"})])
    publish(stack, "integration_center", [
        p.event("integration_center", "LanguageLevelReached", "2026-05-01T09:00:00Z",
                {"language": "de", "level": "B1", "certificate": "DTZ", "per_skill": None}),
        p.event("integration_center", "HandedOverToAgency", "2026-05-05T09:00:00Z",
                {"handover_id": f"r2-{p.subject}", "area": "labour_market", "to_agency": "employment_agency",
                 "to_legal_domain": "SGB_III", "reason": "B1 reached"}),
    ])
    expected = [{"agency": "integration_center", "legal_domain": "NONE", "from": "2026-01-05T09:00:00Z",
                 "to": "2026-05-12T09:00:00Z"},
                {"agency": "employment_agency", "legal_domain": "SGB_III", "from": "2026-05-12T09:00:00Z", "to": None}]
    wait_until(lambda: responsibility(stack, p.subject)["areas"].get("labour_market") == expected, timeout=10,
               message="R2 handover applied")
    # Responsibility is computed from the facts when asked; handovers and gaps are stored by the
    # recomputation that follows (within the 5 s of §4), as in the R1 test.
    wait_until(lambda: [(h["kind"], h["status"], h["deadline"]) for h in handovers_of(stack, p.subject)] == [
        ("actual", "accepted", "2026-05-21T09:00:00Z")], timeout=10, message="R2 handover listed")
    assert gaps_of(stack, p.subject) == []


def test_a_rejected_handover_leaves_the_sender_responsible(stack):
    p = Person()
    publish(stack, "integration_center", [
        p.event("integration_center", "CaseOpenedByAgency", "2026-01-05T09:00:00Z",
                {"area": "case_management", "legal_domain": "NONE"}),
        p.event("integration_center", "HandedOverToAgency", "2026-02-05T09:00:00Z",
                {"handover_id": f"cm-{p.subject}", "area": "case_management", "to_agency": "job_center",
                 "to_legal_domain": "SGB_II", "reason": "SGB II benefits"}),
    ])
    publish(stack, "job_center", [p.event("job_center", "HandoverRejected", "2026-02-07T09:00:00Z",
                                          {"handover_id": f"cm-{p.subject}", "reason": "no SGB II entitlement"})])
    wait_until(lambda: [h["status"] for h in handovers_of(stack, p.subject)] == ["rejected"], timeout=10,
               message="rejection")
    assert responsibility(stack, p.subject)["areas"]["case_management"] == [
        {"agency": "integration_center", "legal_domain": "NONE", "from": "2026-01-05T09:00:00Z", "to": None}]


def test_case_closed_before_the_agency_closed_its_area_is_no_gap_and_duplicates_change_nothing(stack):
    p = Person()
    events = [
        p.event("integration_center", "CaseOpenedByAgency", "2026-01-05T09:00:00Z",
                {"area": "case_management", "legal_domain": "NONE"}),
        p.event("integration_center", "CaseClosed", "2026-06-01T09:00:00Z", {"reason": "regular_services_reached"}),
        p.event("integration_center", "CaseClosedByAgency", "2026-06-03T09:00:00Z",
                {"area": "case_management", "reason": "other"}),
    ]
    assert publish(stack, "integration_center", events) == {"accepted": 3, "duplicates": 0}
    assert publish(stack, "integration_center", events) == {"accepted": 0, "duplicates": 3}
    expected = [{"agency": "integration_center", "legal_domain": "NONE", "from": "2026-01-05T09:00:00Z",
                 "to": "2026-06-03T09:00:00Z"}]
    wait_until(lambda: responsibility(stack, p.subject)["areas"].get("case_management") == expected, timeout=10,
               message="closure applied")
    assert gaps_of(stack, p.subject) == []


def test_visibility_of_other_agencies_case_managers_and_agency_systems(stack):
    p = Person()
    publish(stack, "social_welfare_office", [
        p.event("social_welfare_office", "CaseOpenedByAgency", "2026-01-01T00:00:00Z",
                {"area": "benefits", "legal_domain": "ASYLBLG"}),
        p.event("social_welfare_office", "HandedOverToAgency", "2026-02-01T00:00:00Z",
                {"handover_id": f"v-{p.subject}", "area": "benefits", "to_agency": "job_center",
                 "to_legal_domain": "SGB_II", "reason": "x"}),
    ])
    wait_until(lambda: handovers_of(stack, p.subject), timeout=10, message="handover listed")
    _, referral = stack
    # the receiver's case manager sees the person; the youth office's does not
    assert referral.get(f"/v1/persons/{p.subject}/responsibility",
                        headers=auth("job_center", "case_manager")).status_code == 200
    assert referral.get(f"/v1/persons/{p.subject}/responsibility",
                        headers=auth("youth_office", "case_manager")).status_code == 404
    assert handovers_of(stack, p.subject, headers=auth("youth_office", "case_manager")) == []
    assert len(handovers_of(stack, p.subject, headers=auth("job_center", "agency_system"))) == 1
    assert handovers_of(stack, p.subject, headers=auth("employment_agency", "agency_system")) == []
    # the steering group reads figures, not persons; no token, no answer
    assert referral.get("/v1/gaps", headers=auth("integration_center", "steering_group")).status_code == 403
    assert referral.get("/v1/gaps").status_code == 401


def test_an_agency_writing_straight_to_kafka_gets_invalid_events_dead_lettered(stack, kafka_bootstrap):
    """Agencies that run Kafka themselves bypass the gateway: the referral service
    validates what it reads, and a bad event goes to kim.deadletter with the reason."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    p = Person()
    bad = p.event("job_center", "CaseOpenedByAgency", "2026-01-05T09:00:00Z",
                  {"area": "benefits", "legal_domain": "SGB_II"})
    bad["data"]["legal_domain"] = "SGB_99"
    good = p.event("job_center", "CaseOpenedByAgency", "2026-01-05T09:00:00Z",
                   {"area": "labour_market", "legal_domain": "SGB_II"})
    deadletter = KafkaConsumer(bootstrap_servers=kafka_bootstrap, consumer_timeout_ms=1000)
    partitions = [TopicPartition("kim.deadletter", n) for n in range(6)]
    start = deadletter.end_offsets(partitions)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for event in (bad, good):
        producer.send("kim.job_center.events", key=p.subject.encode(), value=json.dumps(event).encode())
    producer.flush()
    producer.close()

    wait_until(lambda: "labour_market" in responsibility(stack, p.subject)["areas"], timeout=10,
               message="the valid event after the bad one is applied")
    assert "benefits" not in responsibility(stack, p.subject)["areas"]
    deadletter.assign(partitions)
    for tp, offset in start.items():
        deadletter.seek(tp, offset)
    found = [dict(r.headers) for r in deadletter if r.key == p.subject.encode()]
    deadletter.close()
    reasons = [h["kim_dlq_reason"].decode() for h in found if h.get("kim_dlq_consumer") == b"referral"]
    assert len(reasons) == 1 and "$.data.legal_domain" in reasons[0]
