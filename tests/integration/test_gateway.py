"""The gateway against the real broker: what agency systems see (§6, POST /v1/events)."""

from __future__ import annotations

import copy
import json
import multiprocessing
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer, TopicPartition

from kim.auth import issue_dev_token
from kim.helper import has_second_cpu
from kim.infra.kafka import create_topics, free_port
from kim.messaging.chain import CHAIN_ATTRIBUTES
from kim.topics import ALL_TOPICS
from services.gateway.bootstrap import create_app
from services.gateway.settings import GatewaySettings

EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "examples"
SECRET = "gateway-test-secret-of-thirty-two-bytes"
SINGLE = {"content-type": "application/cloudevents+json"}
BATCH = {"content-type": "application/cloudevents-batch+json"}


def example(name: str, **changes) -> dict:
    event = json.loads((EXAMPLES / f"{name}.json").read_text())
    event["id"] = f"{event['id']}-{uuid.uuid4().hex[:8]}"
    event.update(changes)
    return event


def token(agency: str, roles: tuple[str, ...] = ("agency_system",), ttl: int = 600) -> dict:
    return {"authorization": f"Bearer {issue_dev_token(SECRET, sub='test', agency=agency, roles=list(roles), ttl_s=ttl)}"}


@pytest.fixture(scope="module")
def topics(kafka_bootstrap):
    create_topics(kafka_bootstrap, ALL_TOPICS, partitions=6)


def _settings(tmp_path: Path, bootstrap: str, **extra) -> GatewaySettings:
    return GatewaySettings(kafka_bootstrap=bootstrap, data_dir=tmp_path, auth_hs256_secret=SECRET,
                           database_url=None, **extra)


@pytest.fixture
def gateway(tmp_path, kafka_bootstrap, topics):
    app = create_app(_settings(tmp_path, kafka_bootstrap), instance=f"test-{uuid.uuid4().hex[:6]}")
    with TestClient(app) as client:
        yield client


@pytest.fixture(params=["producer in a helper process", "producer in the service process"])
def any_gateway(request, monkeypatch, tmp_path, kafka_bootstrap, topics):
    """The gateway as it runs with a second CPU, and as on a single one."""
    if request.param == "producer in the service process":
        monkeypatch.setattr("services.gateway.bootstrap.has_second_cpu", lambda: False)
    app = create_app(_settings(tmp_path, kafka_bootstrap), instance=f"test-{uuid.uuid4().hex[:6]}")
    with TestClient(app) as client:
        yield client


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    partitions = [TopicPartition(topic, p) for p in range(6)]
    offsets = consumer.end_offsets(partitions)
    consumer.close()
    return {tp.partition: offset for tp, offset in offsets.items()}


def committed_events(bootstrap: str, topic: str, subject: str) -> list[dict]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_committed",
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)
    consumer.assign([TopicPartition(topic, p) for p in range(6)])
    events = [json.loads(r.value) for r in consumer if r.key == subject.encode()]
    consumer.close()
    return events


def test_one_event_is_published_on_the_agency_topic_keyed_by_subject(any_gateway, kafka_bootstrap):
    subject = f"P-{uuid.uuid4().hex[:10]}"
    event = example("LanguageLevelReached", subject=subject)
    event["traceparent"] = "00-abc-def-01"  # unknown extensions pass through
    response = any_gateway.post("/v1/events", content=json.dumps(event), headers={**SINGLE, **token("integration_center")})
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 1, "duplicates": 0}
    published = committed_events(kafka_bootstrap, "kim.integration_center.events", subject)
    # as sent, plus the gateway's hash-chain link
    assert [{k: v for k, v in e.items() if k not in CHAIN_ATTRIBUTES} for e in published] == [event]
    assert all(set(CHAIN_ATTRIBUTES) <= set(e) for e in published)


def test_a_batch_is_accepted_and_repeats_are_duplicates_for_ever(tmp_path, kafka_bootstrap, topics):
    subject = f"P-{uuid.uuid4().hex[:10]}"
    batch = [example("CaseOpenedByAgency", subject=subject), example("HandedOverToAgency", subject=subject)]
    settings = _settings(tmp_path, kafka_bootstrap)
    with TestClient(create_app(settings, instance="dedup-a")) as client:
        first = client.post("/v1/events", content=json.dumps(batch), headers={**BATCH, **token("social_welfare_office")})
        assert first.status_code == 202 and first.json() == {"accepted": 2, "duplicates": 0}
        again = client.post("/v1/events", content=json.dumps(batch[:1] + batch[:1]),
                            headers={**BATCH, **token("social_welfare_office")})
        assert again.json() == {"accepted": 0, "duplicates": 2}
    # a restarted gateway still knows them
    with TestClient(create_app(settings, instance="dedup-a")) as client:
        later = client.post("/v1/events", content=json.dumps(batch[1]), headers={**SINGLE, **token("social_welfare_office")})
        assert later.json() == {"accepted": 0, "duplicates": 1}
    assert len(committed_events(kafka_bootstrap, "kim.social_welfare_office.events", subject)) == 2


@pytest.mark.parametrize("headers, detail", [
    ({}, "Authorization"),
    ({"authorization": "Bearer not-a-jwt"}, "not valid"),
    ({"authorization": f"Bearer {issue_dev_token('another-secret-of-thirty-two-bytes', sub='x', agency='job_center', roles=['agency_system'])}"},
     "not valid"),
    ({"authorization": f"Bearer {issue_dev_token(SECRET, sub='x', agency='job_center', roles=['agency_system'], ttl_s=-10)}"},
     "expired"),
])
def test_requests_without_a_valid_token_get_401(gateway, headers, detail):
    response = gateway.post("/v1/events", content=json.dumps(example("PersonRegistered")), headers={**SINGLE, **headers})
    assert response.status_code == 401
    assert detail in response.json()["detail"]
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("agency, event, path", [
    # source names another agency than the token's
    ("job_center", example("PersonRegistered"), "$.source"),
    # the foreigners office may not emit a profile
    ("foreigners_office", example("ProfileCompleted", source="urn:kim:foreigners_office"), "$.type"),
    # the Jobcenter cannot hold benefits under AsylbLG
    ("job_center", example("CaseOpenedByAgency", source="urn:kim:job_center",
                           data={"area": "benefits", "legal_domain": "ASYLBLG"}), "$.data.legal_domain"),
    # a handover to the Jobcenter under SGB III
    ("social_welfare_office", example("HandedOverToAgency", data={
        "handover_id": "h1", "area": "benefits", "to_agency": "job_center", "to_legal_domain": "SGB_III",
        "reason": "x"}), "$.data.to_legal_domain"),
])
def test_what_the_tables_forbid_gets_403_naming_the_field(gateway, kafka_bootstrap, agency, event, path):
    before = end_offsets(kafka_bootstrap, f"kim.{agency}.events")
    response = gateway.post("/v1/events", content=json.dumps(event), headers={**SINGLE, **token(agency)})
    assert response.status_code == 403, response.text
    errors = response.json()["errors"]
    assert [(e["index"], e["id"], e["path"]) for e in errors] == [(0, event["id"], path)]
    assert errors[0]["rule"]
    assert end_offsets(kafka_bootstrap, f"kim.{agency}.events") == before


def test_a_token_without_the_agency_system_role_gets_403(gateway):
    response = gateway.post("/v1/events", content=json.dumps(example("PersonRegistered")),
                            headers={**SINGLE, **token("integration_center", roles=("case_manager",))})
    assert response.status_code == 403
    assert "agency_system" in response.json()["detail"]


def test_a_batch_with_one_bad_event_is_refused_whole_with_each_error(gateway, kafka_bootstrap):
    subject = f"P-{uuid.uuid4().hex[:10]}"
    good = example("PersonRegistered", subject=subject)
    bad = example("ProfileCompleted", subject=subject)
    bad["data"] = copy.deepcopy(bad["data"])
    bad["data"]["work_experience_years"] = "six"
    del bad["recordedtime"]
    before = end_offsets(kafka_bootstrap, "kim.integration_center.events")
    response = gateway.post("/v1/events", content=json.dumps([good, bad]),
                            headers={**BATCH, **token("integration_center")})
    assert response.status_code == 422, response.text
    body = response.json()
    assert "nothing was accepted" in body["detail"]
    found = {(e["index"], e["id"], e["path"]) for e in body["errors"]}
    assert found == {(1, bad["id"], "$.recordedtime"), (1, bad["id"], "$.data.work_experience_years")}
    assert all(e["rule"] for e in body["errors"])
    assert end_offsets(kafka_bootstrap, "kim.integration_center.events") == before


@pytest.mark.parametrize("content_type, body, status, path", [
    ("application/cloudevents+json", b"{not json", 422, "$"),
    ("application/cloudevents-batch+json", b"{}", 422, "$"),
    ("application/cloudevents-batch+json", b"[]", 422, "$"),
    ("text/plain", b"{}", 415, "Content-Type"),
])
def test_unreadable_requests_say_what_is_wrong(gateway, content_type, body, status, path):
    response = gateway.post("/v1/events", content=body,
                            headers={"content-type": content_type, **token("integration_center")})
    assert response.status_code == status
    assert response.json()["errors"][0]["path"] == path


def test_kafka_unreachable_gives_503_with_retry_after_and_publishes_nothing(tmp_path, kafka_bootstrap, topics):
    dead = f"localhost:{free_port()}"
    app = create_app(_settings(tmp_path, dead, publish_timeout_s=2.0), instance="unreachable")
    event = example("PersonRegistered", subject=f"P-{uuid.uuid4().hex[:10]}")
    with TestClient(app) as client:
        response = client.post("/v1/events", content=json.dumps(event),
                               headers={**SINGLE, **token("integration_center")})
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0
    # nothing was recorded as accepted: the same event goes through once Kafka is back
    with TestClient(create_app(_settings(tmp_path, kafka_bootstrap), instance="unreachable")) as client:
        again = client.post("/v1/events", content=json.dumps(event),
                            headers={**SINGLE, **token("integration_center")})
    assert again.json()["accepted"] == 1


@pytest.mark.skipif(not has_second_cpu(), reason="on a single CPU the gateway publishes from its own process")
def test_a_killed_publishing_process_costs_one_503_and_is_replaced(gateway, kafka_bootstrap):
    helpers = [p for p in multiprocessing.active_children() if p.name.startswith("publisher kim-gateway-test-")]
    assert len(helpers) == 1
    helpers[0].kill()
    helpers[0].join(10)
    subject = f"P-{uuid.uuid4().hex[:10]}"
    lost, kept = example("PersonRegistered", subject=subject), example("ConsentRecorded", subject=subject)
    refused = gateway.post("/v1/events", content=json.dumps(lost), headers={**SINGLE, **token("integration_center")})
    assert refused.status_code == 503 and int(refused.headers["retry-after"]) > 0
    accepted = gateway.post("/v1/events", content=json.dumps([lost, kept]),
                            headers={**BATCH, **token("integration_center")})
    assert accepted.status_code == 202 and accepted.json() == {"accepted": 2, "duplicates": 0}
    published = committed_events(kafka_bootstrap, "kim.integration_center.events", subject)
    assert sorted(e["id"] for e in published) == sorted([lost["id"], kept["id"]])


@pytest.mark.skipif(not has_second_cpu(), reason="on a single CPU the gateway publishes from its own process")
def test_groups_handed_to_the_publishing_process_at_once_are_all_published(kafka_bootstrap, topics):
    """Groups in flight side by side (the process starts the next while Kafka takes one), one of
    them larger than the pipe holds at once; each call returns once its group is on Kafka."""
    import asyncio

    from services.gateway.domain import assess
    from services.gateway.messaging import HelperPublisher

    subject = f"P-{uuid.uuid4().hex[:10]}"
    sizes = [1, 3000, 2, 40, 1]
    groups = [assess([example("MeasureAssigned", subject=subject) for _ in range(size)], "integration_center").events
              for size in sizes]

    async def scenario() -> None:
        publisher = HelperPublisher(kafka_bootstrap, 10.0, f"kim-gateway-test-{uuid.uuid4().hex[:6]}")
        try:
            await asyncio.gather(*(publisher.publish(group) for group in groups))
        finally:
            await publisher.stop()

    asyncio.run(scenario())
    published = committed_events(kafka_bootstrap, "kim.integration_center.events", subject)
    assert sorted(e["id"] for e in published) == sorted(e.event.id for group in groups for e in group)
    assert sorted(e["chainseq"] for e in published) == list(range(1, sum(sizes) + 1))  # one chain, no gap


def test_openapi_document_has_an_example_of_every_event_type_that_the_gateway_accepts(gateway):
    from contracts import CATALOGUE

    document = gateway.get("/openapi.json").json()
    content = document["paths"]["/v1/events"]["post"]["requestBody"]["content"]
    examples = content["application/cloudevents+json"]["examples"]
    assert set(examples) == {model.event_name for model in CATALOGUE}
    for example in examples.values():
        event = dict(example["value"], id=f"openapi-{uuid.uuid4().hex}")
        agency = event["source"].split(":")[2]
        response = gateway.post("/v1/events", content=json.dumps(event), headers={**SINGLE, **token(agency)})
        assert response.status_code == 202, (event["type"], response.text)
    assert content["application/cloudevents-batch+json"]["examples"]["batch"]["value"]
