"""events/s with which a fresh referral service rebuilds from the topics, against a bare consumer

The topics are filled with copies of the demo district (new persons per copy) written
straight to Kafka. The bare consumer only reads and decodes (orjson) every record;
the referral service is started fresh and timed until `/readyz` says it has consumed
up to the end offsets and computed every person.
"""

from __future__ import annotations

import argparse
import asyncio
import time

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


async def _bare_consumer(bootstrap: str) -> tuple[int, float]:
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
                    orjson.loads(record.value)
                count += len(records)
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
            remaining = {tp for tp in remaining if await consumer.position(tp) < ends[tp]}
        return count, time.perf_counter() - started
    finally:
        await consumer.stop()


def run(args: argparse.Namespace, settings: KimSettings) -> int:
    from kim.bench._support import Service, kafka, row, scratch_dir

    with scratch_dir() as data_dir, kafka(settings, data_dir) as bootstrap:
        fill_started = time.perf_counter()
        filled = asyncio.run(_fill(bootstrap, args.events))
        fill_s = time.perf_counter() - fill_started
        bare_count, bare_s = asyncio.run(_bare_consumer(bootstrap))
        referral = Service("referral", bootstrap, data_dir)
        try:
            rebuild_s = referral.wait_ready(timeout_s=3600, poll_s=0.2)
        finally:
            referral.stop()
    bare_rate = bare_count / bare_s
    rebuild_rate = bare_count / rebuild_s
    print(f"kim bench catchup — {filled:,} events on the agency topics (filled in {fill_s:.1f} s)")
    print(row("bare consumer (read + decode)", f"{bare_rate:,.0f} ev/s"))
    print(row("fresh referral service to ready", f"{rebuild_rate:,.0f} ev/s", "target >= 30,000 ev/s"))
    print(row("referral / bare consumer", f"{rebuild_rate / bare_rate:.2f}", "target >= 0.50"))
    print(row("referral rebuild time", f"{rebuild_s:.1f} s"))
    return 0
