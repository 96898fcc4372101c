"""Hash chains end to end: stamped by the producer, continued across restarts, unharmed by aborted
transactions, and every tampering with a copy of a topic found by the verifier."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import replace

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from kim.audit.verify import run_chains
from kim.infra.kafka import create_topics
from kim.messaging import EventProducer, PublishFailed, event_headers
from tests.topic_records import committed


def envelope(n: int, subject: str, agency: str = "job_center") -> dict:
    return {"specversion": "1.0", "id": f"e{n}", "source": f"urn:kim:{agency}:test", "type": "de.kim.GoalAchieved.v1",
            "subject": subject, "time": "2025-01-02T03:04:05Z", "recordedtime": "2025-01-02T03:04:06Z",
            "datacontenttype": "application/json", "data": {"plan_id": "p", "goal_id": f"g{n}"}}


def batch(first: int, count: int) -> list[dict]:
    return [envelope(n, f"P-{n % 7}") for n in range(first, first + count)]


async def write_copy(bootstrap: str, topic: str, partitions: dict[int, list]) -> None:
    """Records onto the same partitions of another topic, values as given."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for partition, records in partitions.items():
            for record in records:
                await producer.send_and_wait(topic, record.value, key=record.key, partition=partition,
                                             headers=list(record.headers))
    finally:
        await producer.stop()


@pytest.fixture
def chained_topic(kafka_bootstrap, topic_prefix):
    """A topic written by a transactional producer (restarted once, one aborted batch) and a second producer."""
    topic = f"{topic_prefix}.kim.job_center.events"
    create_topics(kafka_bootstrap, [topic], partitions=3)

    async def write() -> None:
        async with EventProducer(kafka_bootstrap, transactional_id=f"{topic_prefix}-gateway") as gateway, \
                EventProducer(kafka_bootstrap, client_id=f"{topic_prefix}-relay") as relay:
            await gateway.send_batch(topic, batch(0, 20))
            await relay.send_batch(topic, batch(100, 10))
            too_large = envelope(50, "P-1")
            too_large["data"]["goal_id"] = "x" * 2_000_000
            with pytest.raises(PublishFailed):
                await gateway.send_batch(topic, batch(40, 3) + [too_large])  # aborted: none of it visible
            await gateway.send_batch(topic, batch(20, 10))
        async with EventProducer(kafka_bootstrap, transactional_id=f"{topic_prefix}-gateway") as restarted:
            await restarted.send_batch(topic, batch(30, 10))

    asyncio.run(write())
    return topic


def test_chains_continue_across_restarts_and_aborted_transactions(kafka_bootstrap, topic_prefix, chained_topic):
    report = run_chains(kafka_bootstrap, f"{topic_prefix}.*", [])
    assert report.problems == []
    assert report.events_checked == 50 and report.unchained == 0
    records = asyncio.run(committed(kafka_bootstrap, chained_topic, 3))
    seqs = defaultdict(list)
    for partition, items in records.items():
        for record in items:
            event = orjson.loads(record.value)
            seqs[(event["chainproducer"], partition)].append(event["chainseq"])
    assert {name for name, _ in seqs} == {f"{topic_prefix}-gateway", f"{topic_prefix}-relay"}
    for numbers in seqs.values():
        assert numbers == list(range(1, len(numbers) + 1))


def test_every_tampering_with_a_copy_is_found_where_it_happened(kafka_bootstrap, topic_prefix, chained_topic):
    original = asyncio.run(committed(kafka_bootstrap, chained_topic, 3))
    partition = max(original, key=lambda p: len(original[p]))
    records = original[partition]

    def chain(index: int) -> str:
        return orjson.loads(records[index].value)["chainproducer"]

    # Three events of one producer in a row, after a first one of it: tamper with the middle ones.
    at = next(i for i in range(1, len(records) - 2) if chain(i - 1) == chain(i) == chain(i + 1) == chain(i + 2))
    event = orjson.loads(records[at].value)
    event["data"]["goal_id"] = "forged"
    altered = {**original, partition: records[:at] + [replace(records[at], value=orjson.dumps(event))]
               + records[at + 1:]}
    removed = {**original, partition: records[:at] + records[at + 1:]}
    swapped = {**original, partition: records[:at] + [records[at + 1], records[at]] + records[at + 2:]}
    copies = {"altered": altered, "removed": removed, "swapped": swapped}
    for name, partitions in copies.items():
        topic = f"{topic_prefix}.{name}.kim.job_center.events"
        create_topics(kafka_bootstrap, [topic], partitions=3)
        asyncio.run(write_copy(kafka_bootstrap, topic, partitions))

    report = run_chains(kafka_bootstrap, f"{topic_prefix}.*", [])
    found = {(p.topic.split(".")[1], p.partition, p.offset, p.problem.split(":")[0]) for p in report.problems}
    # The copies have no transaction markers: a record's offset is its index. The removed event is missing
    # before its successor; of a swapped pair, the one that came late is out of order.
    assert found == {("altered", partition, at, "altered"),
                     ("removed", partition, at, "missing"),
                     ("swapped", partition, at + 1, "out of order")}
    problem = next(p for p in report.problems if p.problem.startswith("altered"))
    assert problem.id == event["id"]


def test_unchained_and_misplaced_events_are_problems_except_for_agencies_writing_directly(kafka_bootstrap,
                                                                                         topic_prefix):
    topic = f"{topic_prefix}.kim.youth_office.events"
    create_topics(kafka_bootstrap, [topic], partitions=3)
    event = envelope(1, "P-3", agency="youth_office")

    async def write() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topic, orjson.dumps(event), key=b"P-3", headers=event_headers(event))
            await producer.send_and_wait(topic, orjson.dumps(envelope(2, "P-4", "youth_office")), key=b"other")
            await producer.send_and_wait(topic, b"not json", key=b"P-5")
        finally:
            await producer.stop()

    bootstrap = kafka_bootstrap
    asyncio.run(write())
    strict = run_chains(kafka_bootstrap, f"{topic_prefix}.*", [])
    kinds = sorted(p.problem.split(":")[0] for p in strict.problems)
    assert kinds == ["forged", "misplaced", "unchained", "unchained"]
    direct = run_chains(kafka_bootstrap, f"{topic_prefix}.*", ["youth_office"])
    assert sorted(p.problem.split(":")[0] for p in direct.problems) == ["forged", "misplaced"]
    assert direct.unchained == 2 and direct.events_checked == 3
