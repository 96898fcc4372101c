"""events/s with which a fresh referral service rebuilds from the topics, against a bare consumer

The topics are filled with copies of the demo district (new persons per copy) written
straight to Kafka. The bare consumer only reads and decodes (orjson) every record, first
with Python's default collector setting, then with the services' (`collect_rarely`: with
the default, the collector costs it a quarter of its CPU); the target compares against the
latter, the same footing. A validating one reads every record and validates against the
contract (`contracts.decode`) those the referral service validates, as any validating
consumer must. The referral service is started fresh and timed until `/readyz` says it
has consumed up to the end offsets and computed every person. Before it, the scratch
broker's group coordinator is warmed: a fresh broker creates its offsets topic at the
first group join (~0.5 s here), which a broker in use has long done.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson

from kim.settings import KimSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=500_000)


async def _fill(bootstrap: str, count: int) -> int:
    from aiokafka import AIOKafkaProducer

    from kim.bench._support import renumber
    from kim.demo import generate_district
    from kim.messaging import encode_event

    base = generate_district(1300, 1.0, 7)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    sent = 0
    try:
        copy = 0
        while sent < count:
            futures = []
            for event in renumber(base, copy)[: count - sent]:
                record = encode_event(event)
                topic = f"kim.{event['source'].split(':')[2]}.events"
                futures.append(await producer.send(topic, record.value, key=record.key, headers=record.headers))
            await asyncio.gather(*futures)
            sent += len(futures)
            copy += 1
    finally:
        await producer.stop()
    return sent


async def _bare_consumer(bootstrap: str, decode: Callable[[Any], Any]) -> tuple[int, float]:
    """Records read and seconds taken; `decode(record)` for each."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from kim.messaging import partition_counts
    from kim.topics import AGENCY_TOPICS

    counts = await partition_counts(bootstrap, AGENCY_TOPICS)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t, n in counts.items() for p in range(n)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        remaining = {tp for tp, end in ends.items() if end > 0}
        count = 0
        started = time.perf_counter()
        while remaining:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for tp, records in batch.items():
                for record in records:
                    decode(record)
                count += len(records)
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
            remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
        return count, time.perf_counter() - started
    finally:
        await consumer.stop()


async def _warm_group_coordinator(bootstrap: str) -> None:
    """Join a throwaway consumer group once, so that the broker has created its offsets topic."""
    import logging
    import uuid

    from aiokafka import AIOKafkaConsumer

    from kim.topics import AGENCY_TOPICS

    consumer = AIOKafkaConsumer(*AGENCY_TOPICS, bootstrap_servers=bootstrap,
                                group_id=f"kim-bench-warm-{uuid.uuid4().hex[:8]}")
    # The client logs as errors that the coordinator is not available yet: it is being created.
    coordinator_log = logging.getLogger("aiokafka.consumer.group_coordinator")
    level = coordinator_log.level
    coordinator_log.setLevel(logging.CRITICAL)
    try:
        await consumer.start()
        deadline = time.monotonic() + 60
        while not consumer.assignment():
            if time.monotonic() > deadline:
                raise RuntimeError("the broker assigned no partitions to a consumer group within 60 s")
            await asyncio.sleep(0.05)
    finally:
        await consumer.stop()
        coordinator_log.setLevel(level)


def _decoded(record: Any) -> Any:
    return orjson.loads(record.value)


def _validate_as_referral() -> Callable[[Any], Any]:
    """Validates the records of the types the referral service reads (their `ce_type` header)."""
    from contracts import decode
    from services.referral.projections import RELEVANT_EVENTS

    wanted = {f"de.kim.{name}.v1".encode() for name in RELEVANT_EVENTS}

    def validate(record: Any) -> Any:
        if dict(record.headers).get("ce_type") in wanted:
            return decode(record.value)
        return None

    return validate


def run(args: argparse.Namespace, settings: KimSettings) -> int:
    from kim.bench._support import Service, kafka, row, scratch_dir
    from kim.collector import collect_rarely

    with scratch_dir() as data_dir, kafka(settings, data_dir) as bootstrap:
        fill_started = time.perf_counter()
        filled = asyncio.run(_fill(bootstrap, args.events))
        fill_s = time.perf_counter() - fill_started
        default_count, default_s = asyncio.run(_bare_consumer(bootstrap, _decoded))
        collect_rarely()  # from here on as in the services
        bare_count, bare_s = asyncio.run(_bare_consumer(bootstrap, _decoded))
        validating_count, validating_s = asyncio.run(_bare_consumer(bootstrap, _validate_as_referral()))
        asyncio.run(_warm_group_coordinator(bootstrap))
        referral = Service("referral", bootstrap, data_dir)
        try:
            rebuild_s = referral.wait_ready(timeout_s=3600, poll_s=0.2)
        finally:
            referral.stop()
    default_rate = default_count / default_s
    bare_rate = bare_count / bare_s
    validating_rate = validating_count / validating_s
    rebuild_rate = bare_count / rebuild_s
    print(f"kim bench catchup — {filled:,} events on the agency topics (filled in {fill_s:.1f} s)")
    print(row("bare consumer (read + decode)", f"{bare_rate:,.0f} ev/s"))
    print(row("  the same with Python's default collector", f"{default_rate:,.0f} ev/s"))
    print(row("bare consumer (read + validate as referral)", f"{validating_rate:,.0f} ev/s"))
    print(row("fresh referral service to ready", f"{rebuild_rate:,.0f} ev/s", "target >= 30,000 ev/s"))
    print(row("referral / bare consumer", f"{rebuild_rate / bare_rate:.2f}", "target >= 0.50"))
    print(row("referral / default-collector bare consumer", f"{rebuild_rate / default_rate:.2f}"))
    print(row("referral / validating bare consumer", f"{rebuild_rate / validating_rate:.2f}"))
    print(row("referral rebuild time", f"{rebuild_s:.1f} s"))
    return 0
