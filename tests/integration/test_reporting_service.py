"""The reporting service against the real broker: a district published through the real gateway.

The session's topics carry other tests' events too, so the figures are checked for
a municipality of our own, against the pure figures computed from the same events.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import uuid
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from contracts import decode
from kim.auth import issue_dev_token
from kim.demo import generate_district
from kim.infra.kafka import create_topics
from kim.topics import ALL_TOPICS
from services.gateway.bootstrap import create_app as create_gateway
from services.gateway.settings import GatewaySettings
from services.referral.rules import RulesConfig
from services.reporting.bootstrap import create_app as create_reporting
from services.reporting.disclosure import THRESHOLD
from services.reporting.domain import PersonLog, Tally, assess, month_index, month_name, record_of
from services.reporting.helper import holds
from services.reporting.settings import ReportingSettings
from tests.conftest import wait_until

SECRET = "reporting-test-secret-of-thirty-two-bytes"
BATCH = {"content-type": "application/cloudevents-batch+json"}


def auth(agency: str, *roles: str) -> dict[str, str]:
    return {"authorization": "Bearer " + issue_dev_token(SECRET, sub="t", agency=agency, roles=list(roles))}


STEERING = auth("integration_center", "steering_group")


def district(persons: int, municipality: str) -> list[dict]:
    """A small demo district of fresh persons, all living in `municipality`."""
    events = generate_district(persons, 1.0, random.randrange(10**9))
    for event in events:
        if event["type"] == "de.kim.PersonRegistered.v1":
            event["data"] = {**event["data"], "municipality": municipality}
    return events


def publish(gateway: TestClient, events: list[dict]) -> None:
    """Through the gateway, as the agencies' systems would: batches per agency, in order."""
    by_agency: dict[str, list[dict]] = defaultdict(list)
    for event in events:
        by_agency[event["source"].split(":")[2]].append(event)
    for agency, batch in by_agency.items():
        for start in range(0, len(batch), 500):
            response = gateway.post("/v1/events", content=json.dumps(batch[start:start + 500]),
                                    headers={**BATCH, **auth(agency, "agency_system")})
            assert response.status_code == 202, response.text


def expected_cells(events: list[dict], now: datetime) -> dict[tuple, tuple[int, int | float]]:
    """(kpi, month, dims) -> (persons, value) of the raw figures of these events."""
    logs: dict[str, PersonLog] = {}
    for envelope in events:
        event = decode(orjson.dumps(envelope))
        e = event.envelope
        record = record_of(event.event_name, e.source, e.id, e.effective_time, e.recorded_time, e.data)
        if record is not None:
            logs.setdefault(e.subject, PersonLog(e.subject)).add(record)
    tally = Tally()
    for log in logs.values():
        tally.add(assess(log, RulesConfig(), now).contribution)
    return {(c.kpi, month_name(c.month), c.dims): (c.persons, c.value) for c in tally.cells(month_index(now))}


def settings_for(bootstrap: str, data_dir: Path, app_id: str) -> ReportingSettings:
    return ReportingSettings(kafka_bootstrap=bootstrap, data_dir=data_dir, auth_hs256_secret=SECRET,
                             database_url=None, reporting_group=app_id)


def ready(client: TestClient) -> bool:
    return client.get("/readyz").status_code == 200


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, tmp_path_factory):
    create_topics(kafka_bootstrap, ALL_TOPICS, partitions=6)
    data_dir = tmp_path_factory.mktemp("reporting")
    municipality = f"Prüfstadt {uuid.uuid4().hex[:6]}"
    events = district(40, municipality)
    gateway = create_gateway(GatewaySettings(kafka_bootstrap=kafka_bootstrap, data_dir=data_dir,
                                             auth_hs256_secret=SECRET, database_url=None),
                             instance=f"reporting-{uuid.uuid4().hex[:6]}")
    app_id = f"kim-reporting-test-{uuid.uuid4().hex[:6]}"
    with TestClient(gateway) as g:
        publish(g, events)
        # Entered by hand: the restart test replaces the running service.
        reporting = TestClient(create_reporting(settings_for(kafka_bootstrap, data_dir, app_id))).__enter__()
        state = {"gateway": g, "reporting": reporting, "events": events, "municipality": municipality,
                 "app_id": app_id, "data_dir": data_dir, "bootstrap": kafka_bootstrap}
        try:
            yield state
        finally:
            state["reporting"].__exit__(None, None, None)


def my_cells(stack, client: TestClient | None = None) -> dict[tuple, dict]:
    response = (client or stack["reporting"]).get("/v1/kpis", params={"municipality": stack["municipality"]},
                                                  headers=STEERING)
    assert response.status_code == 200, response.text
    return {(c["kpi"], c["dims"]["month"], tuple(v for k, v in c["dims"].items() if k != "month")): c
            for c in response.json()["cells"]}


def figures_shown(stack) -> dict[tuple, dict]:
    """Our municipality's cells, once the service shows every one of them."""
    expected = expected_cells(stack["events"], datetime.now(timezone.utc))
    mine = {k: v for k, v in expected.items() if k[2][0] == stack["municipality"]}

    def complete() -> dict[tuple, dict] | None:
        cells = my_cells(stack)
        return cells if set(cells) == set(mine) else None

    return wait_until(complete, timeout=60, message="the district's figures")


def assert_pure_figures(stack, cells: dict[tuple, dict]) -> int:
    """Every cell as the pure figures of the events say, small counts suppressed; how many are shown."""
    expected = expected_cells(stack["events"], datetime.now(timezone.utc))
    shown = 0
    for key, cell in cells.items():
        persons, value = expected[key]
        if persons < THRESHOLD:
            assert cell["suppressed"] and cell["value"] is None, key
        elif not cell["suppressed"]:
            assert cell["value"] == value, key
            shown += 1
    return shown


def test_the_districts_figures_equal_the_pure_figures_with_small_counts_suppressed(stack):
    wait_until(lambda: ready(stack["reporting"]), timeout=60, message="reporting ready")
    cells = figures_shown(stack)
    # Gaps and overdue handovers are rare in a district this small; these figures always occur.
    assert {c["kpi"] for c in cells.values()} >= {
        "persons_active", "caseload", "handovers_completed", "handover_days_median", "course_demand",
        "language_level_reached", "measures_started", "employment_started"}
    assert assert_pure_figures(stack, cells) > 50


def test_only_the_steering_group_and_auditors_read_figures(stack):
    client = stack["reporting"]
    assert client.get("/v1/kpis").status_code == 401
    response = client.get("/v1/kpis", headers=auth("job_center", "case_manager"))
    assert response.status_code == 403
    assert "steering_group" in response.json()["detail"]
    assert client.get("/v1/kpis", headers=auth("integration_center", "auditor")).status_code == 200
    assert client.get("/", headers=auth("job_center", "agency_system")).status_code == 403
    assert client.get("/").status_code == 401  # the sign-in page


def test_bad_months_are_refused_naming_the_parameter(stack):
    response = stack["reporting"].get("/v1/kpis", params={"from": "2025-13"}, headers=STEERING)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "from"]
    response = stack["reporting"].get("/v1/kpis", params={"from": "2025-05", "to": "2025-01"}, headers=STEERING)
    assert response.status_code == 422 and "to must not be before from" in response.text


def test_csv_and_the_dashboard_show_the_same_cells(stack):
    figures_shown(stack)
    client = stack["reporting"]
    params = {"from": "2025-06", "to": "2025-12", "municipality": stack["municipality"]}
    cells = client.get("/v1/kpis", params=params, headers=STEERING).json()
    assert cells["from"] == "2025-06" and cells["to"] == "2025-12"
    csv = client.get("/v1/kpis.csv", params=params, headers=STEERING)
    assert csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.splitlines()
    assert lines[0] == "kpi,month,municipality,area,agency,route,level,kind,value,suppressed"
    assert len(lines) == 1 + len(cells["cells"])
    page = client.get("/", params=params, headers=STEERING)
    assert page.status_code == 200
    assert "Aktive Personen je Bereich" in page.text and "<svg" in page.text
    assert "unterdrückt" in page.text  # the legend; small counts are marked, never shown


def test_the_dashboard_signs_in_with_a_cookie(stack):
    client = stack["reporting"]
    token = STEERING["authorization"].removeprefix("Bearer ")
    response = client.post("/anmelden", data={"token": token}, follow_redirects=False)
    assert response.status_code == 303
    assert client.get("/").status_code == 200
    assert client.get("/export.csv").text.startswith("kpi,month")
    client.post("/abmelden")
    client.cookies.clear()
    assert client.get("/").status_code == 401


def test_an_invalid_event_goes_to_the_dead_letter_topic(stack):
    from aiokafka import AIOKafkaProducer

    from kim.messaging import event_headers
    from tests.integration._procs.support import read_topic

    subject = f"P-dead-{uuid.uuid4().hex[:8]}"
    bad = {"specversion": "1.0", "id": f"{subject}-1", "source": "urn:kim:job_center:direct",
           "type": "de.kim.EmploymentStarted.v1", "subject": subject, "time": "2025-05-01T00:00:00Z",
           "recordedtime": "2025-05-01T00:00:00Z", "datacontenttype": "application/json",
           "data": {"kind": "astronaut", "hours_per_week": 20.0}}

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=stack["bootstrap"])
        await producer.start()
        try:
            await producer.send_and_wait("kim.job_center.events", orjson.dumps(bad), key=subject.encode(),
                                         headers=event_headers(bad))
        finally:
            await producer.stop()

    asyncio.run(produce())

    def dead_lettered() -> list:
        records = asyncio.run(read_topic(stack["bootstrap"], "kim.deadletter"))
        return [r for r in records if r.key == subject.encode()
                and ("kim_dlq_consumer", b"reporting") in list(r.headers)]

    (record,) = wait_until(dead_lettered, timeout=30, message="the dead letter")
    headers = dict(record.headers)
    assert b"data.kind" in headers["kim_dlq_reason"] and headers["kim_dlq_topic"] == b"kim.job_center.events"


def test_the_figures_stay_right_when_the_helper_process_dies(stack):
    helper = stack["reporting"].app.state.helper
    if helper.pid is None:
        pytest.skip("a single CPU: the service runs without a helper process")
    figures_shown(stack)
    os.kill(helper.pid, signal.SIGKILL)
    # New persons, and a new event for each person the dead helper computed: the service must take
    # those persons back from the helper's tally, or it counts them twice.
    more = district(15, stack["municipality"])
    held = {e["subject"]: e for e in stack["events"] if holds(e["subject"]) and e["type"] in (
        "de.kim.MeasureAssigned.v1", "de.kim.LanguageLevelReached.v1", "de.kim.EmploymentStarted.v1")}
    assert held
    more += [{**e, "id": f"{e['id']}-again"} for e in held.values()]
    publish(stack["gateway"], more)
    stack["events"] = stack["events"] + more
    expected = expected_cells(stack["events"], datetime.now(timezone.utc))

    def recomputed() -> dict[tuple, dict] | None:
        cells = figures_shown(stack)
        return cells if all(c["suppressed"] or c["value"] == expected[k][1] for k, c in cells.items()) else None

    cells = wait_until(recomputed, timeout=60, message="the figures with the new persons")
    assert helper.pid is None  # the service noticed, and took the helper's persons back
    assert assert_pure_figures(stack, cells) > 50


def test_a_restarted_service_restores_its_table_and_shows_the_same_figures(stack):
    before = figures_shown(stack)
    stack["reporting"].__exit__(None, None, None)
    settings = settings_for(stack["bootstrap"], stack["data_dir"], stack["app_id"])
    stack["reporting"] = again = TestClient(create_reporting(settings)).__enter__()
    wait_until(lambda: ready(again), timeout=60, message="the restarted service ready")
    # Its consumer group resumes after the committed offsets: the figures come from the restored table.
    assert my_cells(stack, again) == before
