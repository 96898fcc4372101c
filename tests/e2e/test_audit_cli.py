"""`kim audit` as auditors run it: separate processes, the real broker, the real intake service."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections import defaultdict
from pathlib import Path

import httpx
import orjson
from aiokafka import AIOKafkaProducer

from kim.auth import issue_dev_token
from kim.demo import generate_district
from kim.infra.kafka import create_topics
from kim.messaging import EventProducer
from kim.topics import ALL_TOPICS, EVENT_TOPICS
from tests.e2e.processes import ROOT, intake_process
from tests.topic_records import committed

SECRET = "audit-cli-secret-of-thirty-two-bytes!!"


def environment(bootstrap: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIM_")}
    return {**env, "KIM_KAFKA_BOOTSTRAP": bootstrap, "KIM_DATA_DIR": str(data_dir), "KIM_AUTH_HS256_SECRET": SECRET}


def kim(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kim.cli", "audit", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


async def publish_chained(bootstrap: str, prefix: str, events: list[dict]) -> None:
    """As the gateway publishes: one transactional producer, records stamped with its chain."""
    by_topic: dict[str, list[dict]] = defaultdict(list)
    for event in events:
        by_topic[f"{prefix}kim.{event['source'].split(':')[2]}.events"].append(event)
    async with EventProducer(bootstrap, transactional_id=f"{prefix}gateway") as producer:
        for topic, batch in by_topic.items():
            await producer.send_batch(topic, batch)


async def copy_with_one_altered(bootstrap: str, source: str, target: str) -> tuple[int, int, str]:
    """Copy `source` to `target` record for record; alter the first event; returns where it is."""
    records = await committed(bootstrap, source, 6)
    partition = min(records)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for p, items in records.items():
            for index, record in enumerate(items):
                value = record.value
                if (p, index) == (partition, 0):
                    event = orjson.loads(value)
                    event["data"] = {**event["data"], "forged": True}
                    value, altered_id = orjson.dumps(event), event["id"]
                await producer.send_and_wait(target, value, key=record.key, partition=p)
    finally:
        await producer.stop()
    return partition, 0, altered_id


def test_replay_is_reproducible_and_verify_finds_a_tampered_copy(kafka_bootstrap, tmp_path):
    prefix = f"e2e{uuid.uuid4().hex[:8]}."
    create_topics(kafka_bootstrap, [prefix + t for t in EVENT_TOPICS], partitions=6)
    events = generate_district(25, 1.0, 5)
    asyncio.run(publish_chained(kafka_bootstrap, prefix, events))
    env = environment(kafka_bootstrap, tmp_path / "data")

    runs = []
    for name in ("one", "two"):  # two processes, nothing shared but the topics
        done = kim(env, "replay", "--as-of", "2025-09-30T22:00:00Z", "--out", str(tmp_path / name),
                   "--topics", prefix + "kim.*")
        assert done.returncode == 0, done.stderr
        assert "sha256" in done.stdout
        runs.append(((tmp_path / name / "report.json").read_bytes(), (tmp_path / name / "summary.txt").read_text()))
    assert runs[0] == runs[1]
    report = orjson.loads(runs[0][0])
    assert report["as_of"] == "2025-09-30T22:00:00Z"
    assert report["persons"] and report["kpis"]
    assert "Responsibility at 2025-09-30T22:00:00Z" in runs[0][1]

    clean = kim(env, "verify", "--topics", prefix + "*", "--no-projections")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    checked = orjson.loads(clean.stdout)
    assert checked["events_checked"] == len(events) and checked["problems"] == []

    copy = f"{prefix}copy.kim.job_center.events"
    create_topics(kafka_bootstrap, [copy], partitions=6)
    partition, offset, altered = asyncio.run(copy_with_one_altered(kafka_bootstrap, f"{prefix}kim.job_center.events",
                                                                   copy))
    tampered = kim(env, "verify", "--topics", prefix + "*", "--no-projections")
    assert tampered.returncode == 1
    problems = orjson.loads(tampered.stdout)["problems"]
    assert [(p["topic"], p["partition"], p["offset"], p["id"]) for p in problems] == [
        (copy, partition, offset, altered)]
    assert problems[0]["problem"].startswith("altered")

    wrong = kim(env, "replay", "--as-of", "yesterday", "--out", str(tmp_path / "x"))
    assert wrong.returncode == 2 and "RFC 3339" in wrong.stderr


def test_access_log_says_who_read_a_persons_data(kafka_bootstrap, tmp_path):
    create_topics(kafka_bootstrap, ALL_TOPICS, partitions=6)
    env = environment(kafka_bootstrap, tmp_path / "data")
    manager = {"authorization": "Bearer " + issue_dev_token(SECRET, sub="frau-weber", agency="integration_center",
                                                            roles=["case_manager"])}
    person = {"given_name": "Amal", "family_name": "Testfall", "birth_date": "1990-01-01",
              "municipality": "Laupheim", "arrival_date": "2023-01-01", "country_of_origin": "SY"}
    with intake_process({**env, "KIM_INTAKE_GROUP": f"intake-{uuid.uuid4().hex[:6]}"},
                        tmp_path / "intake.log") as base:
        subject = httpx.post(f"{base}/v1/persons", json=person, headers=manager).json()["subject"]
        assert httpx.get(f"{base}/v1/persons/{subject}", params={"purpose": "Hilfeplangespräch"},
                         headers=manager).status_code == 200
        shown = kim(env, "access-log", "--subject", subject, "--intake", base)
        assert shown.returncode == 0, shown.stderr
        assert "frau-weber" in shown.stdout and "integration_center" in shown.stdout
        as_json = orjson.loads(kim(env, "access-log", "--subject", subject, "--intake", base, "--json").stdout)
        assert any(entry["reader_sub"] == "frau-weber" for entry in as_json)
    gone = kim(env, "access-log", "--subject", subject, "--intake", base)
    assert gone.returncode == 1 and "cannot reach intake" in gone.stderr
