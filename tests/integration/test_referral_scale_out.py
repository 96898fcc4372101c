"""Scale-out of the referral service: a consumer group of two instances gives the
same responsibility and gaps as one instance, and a survivor takes over when the
other is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from kafka.partitioner.default import murmur2

from kim.auth import issue_dev_token
from kim.demo import generate_district
from kim.infra.kafka import create_topics, free_port
from kim.topics import ALL_TOPICS
from services.gateway.bootstrap import create_app as create_gateway
from services.gateway.settings import GatewaySettings
from tests.conftest import wait_until

SECRET = "scale-out-test-secret-of-thirty-two-bytes"
PARTITIONS = 6
AUDITOR = {"authorization": "Bearer " + issue_dev_token(SECRET, sub="a", agency="integration_center",
                                                         roles=["auditor"], ttl_s=3600)}


def partition_of(subject: str) -> int:
    # Kafka's default partitioner, as the producers use it.
    return (murmur2(subject.encode()) & 0x7FFFFFFF) % PARTITIONS


class Referral:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "services.referral", "--port", str(self.port)],
                                            env=env, stdout=out, stderr=subprocess.STDOUT)

    def get(self, path: str, **params) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", params=params, headers=AUDITOR, timeout=10)

    def ready(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            assert self.process.poll() is None, self.log.read_text()
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()


def publish(gateway: TestClient, events: list[dict]) -> None:
    by_agency: dict[str, list[dict]] = {}
    for event in events:
        by_agency.setdefault(event["source"].split(":")[2], []).append(event)
    for agency, batch in by_agency.items():
        token = issue_dev_token(SECRET, sub="s", agency=agency, roles=["agency_system"])
        for start in range(0, len(batch), 500):
            response = gateway.post("/v1/events", content=json.dumps(batch[start:start + 500]),
                                    headers={"content-type": "application/cloudevents-batch+json",
                                             "authorization": f"Bearer {token}"})
            assert response.status_code == 202, response.text


def gapped_person(subject: str) -> list[dict]:
    """An area closed as not competent: an open gap the new owner must show."""
    def event(n: int, name: str, time: str, data: dict) -> dict:
        return {"specversion": "1.0", "id": f"{subject}-{n}", "source": "urn:kim:integration_center:test",
                "type": f"de.kim.{name}.v1", "subject": subject, "time": time, "recordedtime": time,
                "datacontenttype": "application/json", "data": data}
    return [event(1, "CaseOpenedByAgency", "2026-02-01T08:00:00Z", {"area": "labour_market", "legal_domain": "NONE"}),
            event(2, "CaseClosedByAgency", "2026-03-01T08:00:00Z", {"area": "labour_market", "reason": "not_competent"})]


def subjects_on_every_partition() -> list[str]:
    found: dict[int, str] = {}
    while len(found) < PARTITIONS:
        subject = f"P-{uuid.uuid4().hex[:10]}"
        found.setdefault(partition_of(subject), subject)
    return [found[p] for p in range(PARTITIONS)]


@pytest.mark.slow
def test_two_instances_equal_one_and_a_survivor_takes_over(kafka_bootstrap, fresh_database_url, tmp_path):
    create_topics(kafka_bootstrap, ALL_TOPICS, partitions=PARTITIONS)
    # a small district, plus persons with a gap for sure (a district of 40 may have none)
    events = generate_district(40, 1.0, seed=int.from_bytes(os.urandom(2), "big"))
    events += [e for s in subjects_on_every_partition() for e in gapped_person(s)]
    subjects = sorted({e["subject"] for e in events})
    base = {k: v for k, v in os.environ.items() if not k.startswith("KIM_")}
    base.update(KIM_KAFKA_BOOTSTRAP=kafka_bootstrap, KIM_AUTH_HS256_SECRET=SECRET, KIM_REFERRAL_TICK_S="0.2")
    group = f"scale-{uuid.uuid4().hex[:6]}"
    single = Referral({**base, "KIM_DATA_DIR": str(tmp_path / "single"), "KIM_REFERRAL_GROUP": f"{group}-single"},
                      tmp_path / "single.log")
    shared = {**base, "KIM_DATA_DIR": str(tmp_path / "pair"), "KIM_DATABASE_URL": fresh_database_url,
              "KIM_REFERRAL_GROUP": f"{group}-pair"}
    pair = [Referral(shared, tmp_path / "pair-1.log"), Referral(shared, tmp_path / "pair-2.log")]
    gateway = create_gateway(GatewaySettings(kafka_bootstrap=kafka_bootstrap, data_dir=tmp_path / "gateway",
                                             auth_hs256_secret=SECRET), instance=group)
    try:
        with TestClient(gateway) as client:
            publish(client, events)
            for instance in [single, *pair]:
                wait_until(instance.ready, timeout=120, message="referral ready")

            def same_view() -> bool:
                one, two = single.get("/v1/gaps", status="all"), pair[0].get("/v1/gaps", status="all")
                mine = [g for g in one.json() if g["subject"] in subjects]
                return bool(mine) and mine == [g for g in two.json() if g["subject"] in subjects]

            # every instance reads the whole history of the session's topics first: generous deadlines
            try:
                wait_until(same_view, timeout=120, message="the pair shows the single instance's gaps")
            except AssertionError:
                one = {g["gap_id"]: g for g in single.get("/v1/gaps", status="all").json() if g["subject"] in subjects}
                two = {g["gap_id"]: g for g in pair[0].get("/v1/gaps", status="all").json() if g["subject"] in subjects}
                pytest.fail(f"single {len(one)} gaps, pair {len(two)}; only single: "
                            f"{[one[k] for k in one.keys() - two.keys()][:3]}; only pair: "
                            f"{[two[k] for k in two.keys() - one.keys()][:3]}; differing: "
                            f"{[(one[k], two[k]) for k in one.keys() & two.keys() if one[k] != two[k]][:3]}")
            for subject in subjects:
                path = f"/v1/persons/{subject}/responsibility"
                assert single.get(path).json() == pair[1].get(path).json(), subject
            handovers = [h for h in single.get("/v1/handovers").json() if h["subject"] in subjects]
            assert handovers == [h for h in pair[0].get("/v1/handovers").json() if h["subject"] in subjects]

            # kill one member; persons on every partition number must still be projected
            pair[0].process.send_signal(signal.SIGKILL)
            pair[0].process.wait()
            newcomers = subjects_on_every_partition()
            publish(client, [e for s in newcomers for e in gapped_person(s)])

            def survivor_sees_all() -> bool:
                gaps = {g["subject"] for g in pair[1].get("/v1/gaps", status="open").json()}
                return gaps.issuperset(newcomers)

            wait_until(survivor_sees_all, timeout=90, message="the survivor projects every partition")
    finally:
        for instance in [single, *pair]:
            instance.stop()
