"""Producer, tracked consumer and outbox relay against a real broker and databases."""

from __future__ import annotations

import asyncio
import time

import pytest

from kim.infra.kafka import create_topics
from kim.messaging import (
    EventProducer,
    KafkaRecord,
    OutboxRelay,
    PublishFailed,
    TrackedConsumer,
    derive_event_id,
    encode_event,
)
from kim.storage import Database, eventsourcing_env
from tests.integration._procs.ledger import Entry, Ledger, to_envelope
from tests.integration._procs.support import (
    async_wait_until,
    envelope,
    read_topic,
    unique_topic,
)

PROJECTION = """CREATE TABLE IF NOT EXISTS applied (
    source TEXT NOT NULL,
    event_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (source, event_id))"""


def count_applications(tx, events) -> None:
    tx.executemany(
        "INSERT INTO applied (source, event_id, n) VALUES (?, ?, 1) "
        "ON CONFLICT (source, event_id) DO UPDATE SET n = applied.n + 1",
        [(e.event["source"], e.event["id"]) for e in events],
    )


def applied(database: Database) -> dict[tuple[str, str], int]:
    with database.transaction(readonly=True) as tx:
        rows = tx.execute("SELECT source, event_id, n FROM applied").fetchall()
    return {(s, i): n for s, i, n in rows}


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/kim.db"
    else:
        url = request.getfixturevalue("fresh_database_url")
    db = Database.from_url(url)
    db.ensure_schema([PROJECTION])
    yield db
    db.close()


def consumer_for(database, bootstrap, topics, **options) -> TrackedConsumer:
    options.setdefault("deadletter_topic", unique_topic("kim.test.deadletter"))
    return TrackedConsumer(
        options.pop("name", "projection"),
        topics,
        database,
        count_applications,
        bootstrap_servers=bootstrap,
        **options,
    )


async def run_until(consumer: TrackedConsumer, predicate, timeout: float = 30) -> None:
    """Run ``consumer`` until ``predicate()`` holds or it stops by itself."""
    task = asyncio.create_task(consumer.run())
    try:
        await async_wait_until(lambda: task.done() or predicate(), timeout)
    finally:
        consumer.stop()
        await task


def test_consumer_applies_every_event_once_across_restart(kafka_bootstrap, database):
    topic = unique_topic("kim.test.restart")

    async def scenario() -> None:
        create_topics(kafka_bootstrap, [topic], partitions=3)
        async with EventProducer(kafka_bootstrap) as producer:
            await producer.send_batch(
                topic, [envelope(f"a{i}", subject=f"p{i % 17}") for i in range(600)]
            )
            # No deduplication: the stored positions alone must prevent
            # re-application after the restart.
            handled = 0

            def stop_midway(tx, events) -> None:
                nonlocal handled
                count_applications(tx, events)
                handled += len(events)
                if handled >= 150:
                    first.stop()  # takes effect after this batch commits

            first = TrackedConsumer(
                "projection", [topic], database, stop_midway,
                bootstrap_servers=kafka_bootstrap, max_records=50, event_key=None,
            )
            await run_until(first, lambda: False)
            await producer.send_batch(
                topic, [envelope(f"b{i}", subject=f"p{i % 17}") for i in range(400)]
            )
            second = consumer_for(database, kafka_bootstrap, [topic], event_key=None)
            await run_until(second, second.caught_up)
        assert 150 <= first.applied < 600
        assert first.applied + second.applied == 1000

    asyncio.run(scenario())
    counts = applied(database)
    assert len(counts) == 1000
    assert set(counts.values()) == {1}


def test_invalid_records_are_dead_lettered_and_consumption_goes_on(kafka_bootstrap, database):
    topic = unique_topic("kim.test.invalid")
    deadletter = unique_topic("kim.test.deadletter")
    records = [
        KafkaRecord(b"p1", b'{"id": "v1", "source": "urn:kim:job_center", "subject": "p1"}', []),
        KafkaRecord(b"p1", b"not json at all", [("x-trace", b"t-1")]),
        KafkaRecord(b"p1", b'{"id": "v2", "source": "urn:kim:job_center"}', []),
        KafkaRecord(b"p1", b'{"id": "v3", "source": "urn:kim:job_center", "subject": "p1"}', []),
    ]

    async def scenario() -> tuple[TrackedConsumer, list]:
        create_topics(kafka_bootstrap, [topic, deadletter], partitions=1)
        async with EventProducer(kafka_bootstrap) as producer:
            await producer.send_records(topic, records)
            consumer = consumer_for(database, kafka_bootstrap, [topic], deadletter_topic=deadletter)
            task = asyncio.create_task(consumer.run())
            try:
                await async_wait_until(consumer.caught_up, 30)
                await producer.send_batch(topic, [envelope("v4")])
                await async_wait_until(lambda: consumer.applied == 3, 30)
            finally:
                consumer.stop()
                await task
        return consumer, await read_topic(kafka_bootstrap, deadletter)

    consumer, dead = asyncio.run(scenario())
    assert consumer.dead_lettered == 2
    assert set(applied(database)) == {("urn:kim:job_center", i) for i in ("v1", "v3", "v4")}
    assert [r.value for r in dead] == [records[1].value, records[2].value]
    assert [r.key for r in dead] == [b"p1", b"p1"]
    first, second = (dict(r.headers) for r in dead)
    assert first["x-trace"] == b"t-1"
    assert first["kim_dlq_topic"] == topic.encode()
    assert first["kim_dlq_partition"] == b"0"
    assert (first["kim_dlq_offset"], second["kim_dlq_offset"]) == (b"1", b"2")
    assert first["kim_dlq_reason"].startswith(b"JSONDecodeError")
    assert b"subject" in second["kim_dlq_reason"]
    with database.transaction(readonly=True) as tx:
        (next_offset,) = tx.execute(
            "SELECT next_offset FROM kim_consumer_positions WHERE topic = ?", [topic]
        ).fetchone()
    assert next_offset == 5


def test_duplicate_event_id_at_another_offset_is_dropped(kafka_bootstrap, database):
    topic = unique_topic("kim.test.duplicate")
    events = [
        envelope("d1"),
        envelope("d2"),
        envelope("d1"),  # republished, e.g. by an at-least-once relay
        envelope("d1", source="urn:kim:employment_agency"),  # same id, other producer
    ]

    async def scenario() -> TrackedConsumer:
        create_topics(kafka_bootstrap, [topic], partitions=1)
        async with EventProducer(kafka_bootstrap) as producer:
            await producer.send_batch(topic, events[:1])
            first = consumer_for(database, kafka_bootstrap, [topic])
            await run_until(first, first.caught_up)
            # The repeat arrives in a later batch and a later process.
            await producer.send_batch(topic, events[1:])
        second = consumer_for(database, kafka_bootstrap, [topic])
        await run_until(second, second.caught_up)
        return second

    second = asyncio.run(scenario())
    assert (second.applied, second.duplicates) == (2, 1)
    assert applied(database) == {
        ("urn:kim:job_center", "d1"): 1,
        ("urn:kim:job_center", "d2"): 1,
        ("urn:kim:employment_agency", "d1"): 1,
    }


def test_group_members_split_partitions_and_apply_each_event_once(
    kafka_bootstrap, fresh_database_url
):
    topic = unique_topic("kim.test.group")
    group = unique_topic("kim.test.group")
    database = Database.from_url(fresh_database_url)
    database.ensure_schema([PROJECTION])

    async def scenario() -> tuple[TrackedConsumer, TrackedConsumer]:
        create_topics(kafka_bootstrap, [topic], partitions=4)
        async with EventProducer(kafka_bootstrap) as producer:
            await producer.send_batch(
                topic, [envelope(f"g{i}", subject=f"p{i % 31}") for i in range(1000)]
            )
            a = consumer_for(database, kafka_bootstrap, [topic], group_id=group, max_records=20)
            b = consumer_for(database, kafka_bootstrap, [topic], group_id=group, max_records=20)
            task_a = asyncio.create_task(a.run())
            try:
                await async_wait_until(lambda: a.applied >= 100, 30)
                # B joins mid-stream: a rebalance while A is applying batches.
                task_b = asyncio.create_task(b.run())
                try:
                    await async_wait_until(lambda: b.caught_up() and a.caught_up(), 60)
                    await producer.send_batch(
                        topic, [envelope(f"h{i}", subject=f"p{i % 31}") for i in range(1000)]
                    )
                    await async_wait_until(lambda: a.applied + b.applied >= 2000, 60)
                finally:
                    b.stop()
                    await task_b
            finally:
                a.stop()
                await task_a
        return a, b

    try:
        a, b = asyncio.run(scenario())
        counts = applied(database)
    finally:
        database.close()
    assert a.applied > 0 and b.applied > 0
    assert a.applied + b.applied == 2000
    assert len(counts) == 2000 and set(counts.values()) == {1}


def test_member_assignment_owns_every_nth_partition(kafka_bootstrap, tmp_path):
    topics = [unique_topic("kim.test.members"), unique_topic("kim.test.members")]
    database = Database.from_url(f"sqlite:///{tmp_path}/kim.db")
    database.ensure_schema([PROJECTION])

    async def scenario() -> list[tuple[str, int]]:
        create_topics(kafka_bootstrap, topics, partitions=4)
        async with EventProducer(kafka_bootstrap) as producer:
            for topic in topics:
                await producer.send_batch(
                    topic, [envelope(f"{topic}-{i}", subject=f"p{i}") for i in range(40)]
                )
        seen: list[tuple[str, int]] = []

        def record(tx, events) -> None:
            seen.extend((e.topic, e.partition) for e in events)

        consumer = TrackedConsumer(
            "member-1-of-2", topics, database, record,
            bootstrap_servers=kafka_bootstrap, member=(1, 2),
        )
        await run_until(consumer, consumer.caught_up)
        return seen

    seen = asyncio.run(scenario())
    database.close()
    assert seen
    assert {p for _, p in seen} == {1, 3}
    assert {t for t, _ in seen} == set(topics)


def test_transactional_batches_are_consumed_and_caught_up(kafka_bootstrap, tmp_path):
    topic = unique_topic("kim.test.txn")
    database = Database.from_url(f"sqlite:///{tmp_path}/kim.db")
    database.ensure_schema([PROJECTION])

    async def scenario() -> TrackedConsumer:
        create_topics(kafka_bootstrap, [topic], partitions=2)
        async with EventProducer(kafka_bootstrap, transactional_id=f"{topic}-gw") as producer:
            # Concurrent calls, as from concurrent HTTP requests (group commit).
            await asyncio.gather(
                *(
                    producer.send_batch(
                        topic, [envelope(f"t{batch}-{i}", subject=f"p{i}") for i in range(10)]
                    )
                    for batch in range(20)
                )
            )
        consumer = consumer_for(database, kafka_bootstrap, [topic])
        # Transaction markers sit after the last record: caught_up() must
        # still become true.
        await run_until(consumer, consumer.caught_up)
        return consumer

    consumer = asyncio.run(scenario())
    database.close()
    assert consumer.applied == 200


def test_send_many_commits_records_of_several_topics_together(kafka_bootstrap):
    topics = [unique_topic("kim.test.many"), unique_topic("kim.test.many")]

    async def scenario() -> list[list]:
        create_topics(kafka_bootstrap, topics, partitions=1)
        async with EventProducer(kafka_bootstrap, transactional_id=f"{topics[0]}-gw") as producer:
            await producer.send_many(
                [(topics[0], encode_event(envelope("m1"))), (topics[1], encode_event(envelope("m2")))]
            )
        return [await read_topic(kafka_bootstrap, t) for t in topics]

    first, second = asyncio.run(scenario())
    assert [dict(r.headers)["ce_id"] for r in first + second] == [b"m1", b"m2"]


def test_failed_transactional_batch_is_invisible_to_consumers(kafka_bootstrap, tmp_path):
    topic = unique_topic("kim.test.txnfail")
    database = Database.from_url(f"sqlite:///{tmp_path}/kim.db")
    database.ensure_schema([PROJECTION])
    too_large = dict(envelope("b2"), data={"blob": "x" * 2_000_000})

    async def scenario() -> tuple[list, TrackedConsumer]:
        create_topics(kafka_bootstrap, [topic], partitions=1)
        async with EventProducer(
            kafka_bootstrap, transactional_id=f"{topic}-gw", timeout=5
        ) as producer:
            # Both calls share one transaction; the second one's last record
            # fails after the other records went into the transaction.
            results = await asyncio.gather(
                producer.send_batch(topic, [envelope("a1"), envelope("a2")]),
                producer.send_batch(topic, [envelope("b1"), too_large]),
                return_exceptions=True,
            )
            await producer.send_batch(topic, [envelope("c1")])
        consumer = consumer_for(database, kafka_bootstrap, [topic])
        await run_until(consumer, consumer.caught_up)
        return results, consumer

    try:
        results, consumer = asyncio.run(scenario())
        assert set(applied(database)) == {("urn:kim:job_center", "c1")}
    finally:
        database.close()
    assert [type(r) for r in results] == [PublishFailed, PublishFailed]
    assert consumer.applied == 1


def test_records_carry_subject_key_and_cloudevents_headers(kafka_bootstrap):
    topic = unique_topic("kim.test.headers")

    async def scenario() -> list:
        create_topics(kafka_bootstrap, [topic], partitions=1)
        async with EventProducer(kafka_bootstrap) as producer:
            await producer.send_batch(topic, [envelope("h1", subject="person-7")])
        return await read_topic(kafka_bootstrap, topic)

    (record,) = asyncio.run(scenario())
    headers = dict(record.headers)
    assert record.key == b"person-7"
    assert headers["content-type"] == b"application/cloudevents+json"
    assert headers["ce_id"] == b"h1"
    assert headers["ce_source"] == b"urn:kim:job_center"
    assert headers["ce_type"] == b"de.kim.GoalAchieved.v1"
    assert headers["ce_subject"] == b"person-7"
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_time"] == b"2025-01-02T03:04:05Z"


@pytest.mark.parametrize("transactional_id", [None, "kim-test-unreachable"])
def test_publish_fails_fast_when_kafka_is_unreachable(transactional_id):
    async def scenario() -> None:
        producer = EventProducer("127.0.0.1:9", timeout=1.0, transactional_id=transactional_id)
        try:
            with pytest.raises(PublishFailed):
                await producer.send_batch("kim.test.nowhere", [envelope("u1")])
        finally:
            await producer.stop()

    started = time.monotonic()
    asyncio.run(scenario())
    assert time.monotonic() - started < 5


def test_relay_republishes_with_the_same_ids_after_losing_its_position(kafka_bootstrap, tmp_path):
    topic = unique_topic("kim.test.relay")
    url = f"sqlite:///{tmp_path}/ledger.db"
    app = Ledger(env=eventsourcing_env(url))
    entries = [Entry(n) for n in range(12)]
    for entry in entries[:4]:
        entry.bump()
    app.save(*entries)
    positions = Database.from_url(url)

    async def relay_all() -> None:
        async with EventProducer(kafka_bootstrap) as producer:
            relay = OutboxRelay("ledger", app, topic, to_envelope, producer, positions, batch_size=5)
            while await relay.relay_once():
                pass

    async def scenario() -> list:
        create_topics(kafka_bootstrap, [topic], partitions=2)
        await relay_all()
        await relay_all()  # a restarted relay resumes from its stored position
        with positions.transaction() as tx:
            tx.execute("DELETE FROM kim_relay_positions")  # as if it crashed before storing
        await relay_all()
        return await read_topic(kafka_bootstrap, topic)

    try:
        records = asyncio.run(scenario())
        expected = {
            derive_event_id("ledger", n.originator_id, n.originator_version)
            for n in app.recorder.select_notifications(start=None, limit=100)
        }
    finally:
        positions.close()
        app.close()
    ids = [dict(r.headers)["ce_id"].decode() for r in records]
    assert len(expected) == 16
    assert len(ids) == 32
    assert set(ids) == expected
