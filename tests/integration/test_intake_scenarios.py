"""Intake end to end: the real broker, PostgreSQL, gateway and intake service.

Registration publishes PersonRegistered without personal data; consents decide
who reads the personal data and withdrawals take effect within seconds (also
when an agency's own system publishes them); erasure leaves nothing readable
in the database or on any topic; the access log records every read.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone

import psycopg
import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, TopicPartition

from contracts import agency_topic, rfc3339
from kim.auth import issue_dev_token
from kim.infra.kafka import create_topics
from kim.topics import ALL_TOPICS
from services.gateway.bootstrap import create_app as create_gateway
from services.gateway.settings import GatewaySettings
from services.intake.bootstrap import create_app as create_intake
from services.intake.settings import IntakeSettings
from tests.conftest import wait_until

SECRET = "intake-test-secret-of-thirty-two-bytes!"
BATCH = {"content-type": "application/cloudevents-batch+json"}


def auth(agency: str, *roles: str, sub: str = "tester") -> dict[str, str]:
    return {"authorization": "Bearer " + issue_dev_token(SECRET, sub=sub, agency=agency, roles=list(roles))}


CM = auth("integration_center", "case_manager", sub="cm-anna")
JC_CM = auth("job_center", "case_manager", sub="cm-jonas")
EA_CM = auth("employment_agency", "case_manager", sub="cm-emil")
AUDITOR = auth("integration_center", "auditor", sub="aud-ida")
ADMIN = auth("integration_center", "admin", sub="adm-otto")


def person(given: str = "Amira", family: str = "Haddad", birth: str = "1991-04-17", **more) -> dict:
    return {"given_name": given, "family_name": family, "birth_date": birth, "municipality": "Laupheim",
            "arrival_date": "2024-03-01", "country_of_origin": "SY", **more}


def new_database(postgres_dsn: str) -> str:
    name = "t_" + uuid.uuid4().hex[:16]
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return postgres_dsn.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, postgres_dsn, tmp_path_factory) -> Iterator[tuple[TestClient, TestClient, str]]:
    create_topics(kafka_bootstrap, ALL_TOPICS, partitions=6)
    data_dir = tmp_path_factory.mktemp("intake-stack")
    database_url = new_database(postgres_dsn)
    common = dict(kafka_bootstrap=kafka_bootstrap, data_dir=data_dir, auth_hs256_secret=SECRET)
    gateway = create_gateway(GatewaySettings(**common, database_url=None), instance=f"intake-{uuid.uuid4().hex[:6]}")
    intake = create_intake(IntakeSettings(**common, database_url=database_url,
                                          intake_group=f"intake-{uuid.uuid4().hex[:6]}"))
    with TestClient(gateway) as g, TestClient(intake) as i:
        wait_until(lambda: i.get("/readyz").status_code == 200, timeout=30, message="intake ready")
        yield g, i, database_url


def register(stack, body: dict, headers=CM) -> dict:
    _, intake, _ = stack
    response = intake.post("/v1/persons", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def read(stack, subject: str, headers, purpose: str | None = None) -> int:
    _, intake, _ = stack
    return intake.get(f"/v1/persons/{subject}", params={"purpose": purpose} if purpose else {},
                      headers=headers).status_code


def agency_event(agency: str, name: str, subject: str, data: dict) -> dict:
    now = rfc3339(datetime.now(timezone.utc))
    return {"specversion": "1.0", "id": uuid.uuid4().hex, "source": f"urn:kim:{agency}:system",
            "type": f"de.kim.{name}.v1", "subject": subject, "time": now, "recordedtime": now,
            "datacontenttype": "application/json", "data": data}


def publish(stack, agency: str, events: list[dict]) -> None:
    gateway, _, _ = stack
    response = gateway.post("/v1/events", content=json.dumps(events),
                            headers={**BATCH, **auth(agency, "agency_system")})
    assert response.status_code == 202, response.text


def topic_records(bootstrap: str, topics: list[str] | None = None) -> list:
    """Every record of these topics (default: every topic on the broker), committed or not."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_uncommitted",
                             enable_auto_commit=False)
    try:
        names = topics or sorted(consumer.topics())
        tps = [TopicPartition(t, p) for t in names for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        records = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, "reading the topics took too long"
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def published(bootstrap: str, agency: str, subject: str) -> list[dict]:
    return [json.loads(r.value) for r in topic_records(bootstrap, [agency_topic(agency)])
            if r.key == subject.encode()]


def test_registration_publishes_person_registered_without_personal_data(stack, kafka_bootstrap):
    answer = register(stack, person(given="Layla", family="Nasser", birth="1994-08-09", phone="+49 7392 1234",
                                    notes="braucht Kinderbetreuung", registered_at="2026-01-05T08:30:00+01:00",
                                    residence_permit_number="X7392Y"))
    subject = answer["subject"]
    assert subject.startswith("P-") and answer["possible_duplicates"] == []
    events = wait_until(lambda: published(kafka_bootstrap, "integration_center", subject), timeout=15,
                        message="PersonRegistered on the integration center's topic")
    assert [(e["type"], e["source"], e["time"], e["data"]) for e in events] == [(
        "de.kim.PersonRegistered.v1", "urn:kim:integration_center:intake", "2026-01-05T07:30:00Z",
        {"municipality": "Laupheim", "birth_year": 1994, "arrival_date": "2024-03-01", "country_of_origin": "SY"})]
    text = json.dumps(events)
    assert all(word not in text for word in ("Layla", "Nasser", "1994-08-09", "7392", "Kinderbetreuung"))
    _, intake, _ = stack
    data = intake.get(f"/v1/persons/{subject}", headers=CM).json()
    assert (data["given_name"], data["birth_date"], data["registered_by"], data["registered_at"], data["erased"]) == (
        "Layla", "1994-08-09", "integration_center", "2026-01-05T07:30:00Z", False)
    assert (data["notes"], data["residence_permit_number"]) == ("braucht Kinderbetreuung", "X7392Y")


def test_consent_decides_who_reads_and_withdrawal_takes_effect_within_seconds(stack):
    subject = register(stack, person(given="Samir", family="Aziz"))["subject"]
    _, intake, _ = stack
    refused = intake.get(f"/v1/persons/{subject}", headers=JC_CM)
    assert refused.status_code == 403 and "consent" in refused.json()["detail"]
    assert read(stack, subject, AUDITOR, "audit sample") == 200, "auditors see everything"

    # consent recorded through intake: the job center reads at once
    response = intake.post(f"/v1/persons/{subject}/consents", headers=CM, json={
        "shared_with": ["job_center"], "purposes": ["placement"], "valid_until": str(date.today() + timedelta(90))})
    assert response.status_code == 201, response.text
    consent_id = response.json()["consent_id"]
    assert read(stack, subject, JC_CM, "first appointment") == 200
    assert read(stack, subject, EA_CM) == 403, "the consent names the job center only"
    withdrawal = intake.post(f"/v1/persons/{subject}/consents/withdrawal", headers=CM,
                             json={"shared_with": ["job_center"]})
    assert withdrawal.status_code == 202, withdrawal.text
    wait_until(lambda: read(stack, subject, JC_CM) == 403, timeout=15, message="withdrawal in force")

    # consent published by the integration center's own system through the gateway
    publish(stack, "integration_center", [agency_event("integration_center", "ConsentRecorded", subject, {
        "shared_with": ["employment_agency"], "purposes": ["recognition"], "valid_until": None})])
    wait_until(lambda: read(stack, subject, EA_CM, "recognition counselling") == 200, timeout=15,
               message="consent from the gateway in force")
    publish(stack, "integration_center", [agency_event("integration_center", "ConsentWithdrawn", subject, {
        "shared_with": ["employment_agency"]})])
    wait_until(lambda: read(stack, subject, EA_CM) == 403, timeout=15, message="withdrawal from the gateway")

    consents = intake.get(f"/v1/persons/{subject}/consents", headers=CM).json()
    assert [(c["kind"], c["shared_with"]) for c in consents] == [
        ("recorded", ["job_center"]), ("withdrawn", ["job_center"]),
        ("recorded", ["employment_agency"]), ("withdrawn", ["employment_agency"])]
    assert consents[0]["consent_id"] == consent_id and consents[0]["withdrawn_for"] == ["job_center"]
    assert all(c.get("in_force_for", []) == [] for c in consents)

    log = intake.get("/v1/access-log", params={"subject": subject}, headers=AUDITOR).json()
    # (the polling reads while the withdrawal was on its way were reads too)
    assert [(e["reader_sub"], e["reader_agency"], e["action"], e["purpose"], e["consent_purposes"])
            for e in log][:3] == [("aud-ida", "integration_center", "read", "audit sample", []),
                              ("cm-jonas", "job_center", "read", "first appointment", ["placement"]),
                              ("cm-emil", "employment_agency", "read", "recognition counselling", ["recognition"])]
    assert {(e["reader_sub"], e["purpose"]) for e in log[3:]} <= {("cm-emil", None)}
    assert log == sorted(log, key=lambda e: e["at"]) and all(e["at"].endswith("Z") for e in log)


def test_erasure_leaves_no_personal_data_in_the_database_or_on_any_topic(stack, kafka_bootstrap):
    canary = person(given="Quilvanthe", family="Zorbeckmayr", birth="1979-12-03", phone="+49 7351 424242",
                    email="zorbeck@example.org", address="Kanarienstraße 9, 88400 Biberach",
                    notes="Kanariennotiz vertraulich")
    needles = ["Quilvanthe", "Zorbeckmayr", "1979-12-03", "zorbeck@example.org", "Kanarien", "424242"]
    _, intake, database_url = stack
    subject = register(stack, canary)["subject"]
    wait_until(lambda: published(kafka_bootstrap, "integration_center", subject), timeout=15,
               message="PersonRegistered published")
    assert read(stack, subject, CM) == 200
    assert database_hits(database_url, needles) == [], "personal data are encrypted at rest"

    assert intake.delete(f"/v1/persons/{subject}", headers=CM).status_code == 403, "erasure needs the role admin"
    assert intake.delete(f"/v1/persons/{subject}", headers=ADMIN).status_code == 204
    assert read(stack, subject, CM) == 410
    assert read(stack, subject, AUDITOR) == 410
    assert intake.delete(f"/v1/persons/{subject}", headers=ADMIN).status_code == 410
    consent = intake.post(f"/v1/persons/{subject}/consents", headers=CM,
                          json={"shared_with": ["job_center"], "purposes": ["x"]})
    assert consent.status_code == 410

    assert database_hits(database_url, needles) == []
    records = topic_records(kafka_bootstrap)
    assert records, "the topics were read"
    for record in records:
        raw = b" ".join([record.key or b"", record.value or b"", *(v for _, v in record.headers or ())])
        assert not any(n.encode() in raw for n in needles), (record.topic, record.offset)
    # the pseudonymous event stays
    assert [e["type"] for e in published(kafka_bootstrap, "integration_center", subject)] == [
        "de.kim.PersonRegistered.v1"]
    log = intake.get("/v1/access-log", params={"subject": subject}, headers=AUDITOR).json()
    assert [e["action"] for e in log] == ["read", "erase"]


def database_hits(url: str, needles: list[str]) -> list[str]:
    found = []
    with psycopg.connect(url) as conn:
        tables = [t for (t,) in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")]
        for table in tables:
            for (row,) in conn.execute(f'SELECT t::text FROM "{table}" t'):
                found += [f"{table}: {n}" for n in needles if n in row or n.encode().hex() in row]
    return found


def test_a_second_registration_of_a_person_is_flagged_not_refused(stack):
    first = register(stack, person(given="Mohammed", family="Al-Hassan", birth="1988-02-29"))["subject"]
    second = register(stack, person(given="Muhammad", family="Alhassan", birth="1988-02-29"))
    assert second["possible_duplicates"] == [first] and second["subject"] != first
    other = register(stack, person(given="Muhammad", family="Alhassan", birth="1988-03-01"))
    assert other["possible_duplicates"] == []
    _, intake, _ = stack
    assert intake.get(f"/v1/persons/{first}", headers=CM).json()["possible_duplicates"] == [second["subject"]]


def test_profiles_are_published_on_the_acting_agencys_topic(stack, kafka_bootstrap):
    subject = register(stack, person(given="Dawit", family="Tesfaye"), headers=JC_CM)["subject"]
    _, intake, _ = stack
    profile = {"language_levels": {"de": "A2", "ti": "C2"}, "qualifications": [
        {"kind": "vocational", "field": "welder", "country": "ER", "recognition": "not_started"}],
        "work_experience_years": 4, "inclinations": ["metal work"], "support_needs": ["childcare"]}
    assert intake.post(f"/v1/persons/{subject}/profile", headers=JC_CM, json=profile).status_code == 201
    reassessment = intake.post(f"/v1/persons/{subject}/reassessment", headers=JC_CM,
                               json={**profile, "work_experience_years": 5})
    assert reassessment.status_code == 201
    events = wait_until(lambda: (lambda e: e if len(e) == 3 else None)(
        published(kafka_bootstrap, "job_center", subject)), timeout=15, message="three events published")
    assert [(e["type"], e["source"]) for e in events] == [
        ("de.kim.PersonRegistered.v1", "urn:kim:job_center:intake"),
        ("de.kim.ProfileCompleted.v1", "urn:kim:job_center:intake"),
        ("de.kim.ReAssessmentCompleted.v1", "urn:kim:job_center:intake")]
    assert events[2]["data"]["work_experience_years"] == 5
    assert events[2]["id"] == reassessment.json()["event_id"]


def test_a_person_registered_by_an_agency_system_gets_consents_here_but_has_no_personal_data(stack):
    subject = f"P-{uuid.uuid4().hex[:10].upper()}"
    publish(stack, "job_center", [agency_event("job_center", "PersonRegistered", subject, {
        "municipality": "Riedlingen", "birth_year": 1990, "arrival_date": "2023-10-01", "country_of_origin": "AF"})])
    _, intake, _ = stack

    def consent() -> int:
        return intake.post(f"/v1/persons/{subject}/consents", headers=JC_CM,
                           json={"shared_with": ["integration_center"], "purposes": ["case management"]}).status_code

    wait_until(lambda: consent() == 201, timeout=15, message="the registration arrived and a consent was recorded")
    assert read(stack, subject, JC_CM) == 404
    listed = intake.get(f"/v1/persons/{subject}/consents", headers=CM).json()
    assert [(c["recorded_by"], c["in_force_for"]) for c in listed] == [("job_center", ["integration_center"])]


@pytest.mark.parametrize("change, field", [
    ({"birth_date": "17.04.1991"}, "birth_date"),
    ({"birth_date": "2999-01-01"}, "birth_date"),
    ({"country_of_origin": "Syria"}, "country_of_origin"),
    ({"given_name": "  "}, "given_name"),
    ({"arrival_date": "1980-01-01"}, "arrival_date"),
    ({"email": "not-an-address"}, "email"),
    ({"nickname": {"first": "Sami"}}, "nickname"),
    ({"bad name": "x"}, "bad name"),
])
def test_bad_registrations_name_the_field_and_rule_and_change_nothing(stack, change, field):
    _, intake, database_url = stack
    before = key_rows(database_url)
    response = intake.post("/v1/persons", json={**person(given="Xenophila"), **change}, headers=CM)
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert [e["loc"][-1] for e in errors] == [field] and errors[0]["msg"]
    assert "Xenophila" not in response.text, "the answer does not echo personal data"
    assert key_rows(database_url) == before


def key_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM intake_person_keys").fetchone()[0]


def test_who_may_do_what(stack):
    _, intake, _ = stack
    subject = register(stack, person(given="Rania", family="Saleh"))["subject"]
    assert intake.post("/v1/persons", json=person(), headers=EA_CM).status_code == 403, "only case agencies"
    assert intake.post("/v1/persons", json=person(), headers=auth("integration_center", "agency_system")
                       ).status_code == 403
    assert intake.post("/v1/persons", json=person()).status_code == 401
    assert read(stack, subject, auth("integration_center", "steering_group")) == 403
    assert read(stack, "P-UNKNOWN000", CM) == 404
    assert intake.get("/v1/access-log", headers=CM).status_code == 403
    assert intake.delete(f"/v1/persons/{subject}", headers=auth("job_center", "admin")).status_code == 403
    # the access log has no way to change it
    for method in ("post", "put", "patch", "delete"):
        assert getattr(intake, method)("/v1/access-log", headers=AUDITOR).status_code == 405
