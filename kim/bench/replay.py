"""Events/s of a full audit replay against a bare consumer of the same topics, and the replay's peak memory.

The benchmark fills its own topics (`bench<id>.kim.<agency>.events`) with copies
of the demo district, pre-encoded and produced directly, then reads them twice
in child processes: a bare consumer that only reads and decodes every event
(`contracts.decode`, as every service does; and, for comparison, only its
JSON), and `kim audit replay` as of the end of the history. Targets (issue 5): at least 30,000 events/s, at least half
the bare consumer's rate, at most 1 GiB peak memory.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from datetime import time as clock
from multiprocessing import get_context
from typing import Any

import orjson

from kim.settings import KimSettings

TARGET_RATE = 30_000
TARGET_RATIO = 0.5
TARGET_RSS_MIB = 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the history (default 1,000,000)")
    parser.add_argument("--workers", type=int, default=None,
                        help="replay worker processes, each taking whole partition numbers (default: as "
                             "`kim audit replay`, one per CPU)")


def district_events(count: int) -> Iterator[dict[str, Any]]:
    """`count` events: the demo district, copied for new persons as often as needed."""
    from kim.bench._support import renumber
    from kim.demo import generate_district

    base = generate_district(1300, 1.0, 7)
    copy = 0
    while count > 0:
        for event in renumber(base[:count], copy) if copy else base[:count]:
            yield event
        count -= len(base)
        copy += 1


async def fill(bootstrap: str, prefix: str, events: Iterator[dict[str, Any]]) -> int:
    """Produce `events` onto `<prefix>kim.<agency>.events` as the gateway would (key, headers), fast."""
    from aiokafka import AIOKafkaProducer

    from kim.messaging import event_headers

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=50,
                                max_batch_size=1024 * 1024, max_request_size=16 * 1024 * 1024)
    await producer.start()
    sent, pending = 0, []
    try:
        for event in events:
            topic = f"{prefix}kim.{event['source'].split(':')[2]}.events"
            pending.append(await producer.send(topic, orjson.dumps(event), key=event["subject"].encode(),
                                               headers=event_headers(event)))
            sent += 1
            if len(pending) >= 50_000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


def _bare(bootstrap: str, pattern: str, validate: bool) -> tuple[int, float]:
    """Child process: read every event and decode it (`contracts.decode`, or only its JSON); (events, seconds)."""
    from aiokafka import TopicPartition

    from contracts import decode
    from kim.audit import topics as audit_topics
    from kim.audit.replay import snapshot
    from kim.collector import fewer_collections

    fewer_collections()  # as in the replay, so that both pay the same for garbage collection
    parse = decode if validate else orjson.loads

    async def consume() -> int:
        _, ends = await snapshot(bootstrap, pattern)
        client = audit_topics.consumer(bootstrap, "kim-bench-bare")
        await client.start()
        count = 0
        try:
            async for records in audit_topics.read(client, {TopicPartition(t, p): e for (t, p), e in ends.items()}):
                for record in records:
                    parse(record.value)
                    count += 1
        finally:
            await client.stop()
        return count

    started = time.perf_counter()
    count = asyncio.run(consume())
    return count, time.perf_counter() - started


def _replay(bootstrap: str, pattern: str, workers: int | None) -> tuple[int, float, int, int, int]:
    """Child process: a full audit replay; (events, seconds, peak RSS in KiB of it and its workers, persons,
    workers)."""
    from kim.audit.replay import Scope, replay
    from kim.collector import fewer_collections
    from kim.demo import DEFAULT_END
    from services.referral.rules import RulesConfig

    fewer_collections()  # as `kim audit replay` does

    as_of = datetime.combine(DEFAULT_END, clock(), timezone.utc)
    started = time.perf_counter()
    result = replay(bootstrap, Scope(now=as_of, as_of=as_of, known_at=None, rules=RulesConfig()), pattern,
                    workers=workers)
    result.report_bytes()
    seconds = time.perf_counter() - started
    # The workers ran at the same time: at most the largest one's peak each.
    processes = result.workers
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if processes > 1:
        rss += processes * resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return result.partial.read, seconds, rss, len(result.partial.persons), processes


def _in_child(function: Any, *args: Any) -> Any:
    # A fresh process each, so that the peak memory is the measured run's own.
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def create_topics(bootstrap: str, prefix: str, partitions: int) -> list[str]:
    from kim.infra.kafka import create_topics as create
    from kim.topics import EVENT_TOPICS

    names = [prefix + topic for topic in EVENT_TOPICS]
    create(bootstrap, names, partitions)
    return names


def delete_topics(bootstrap: str, names: Sequence[str]) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics(list(names))
    finally:
        admin.close()


def run(args: argparse.Namespace, settings: KimSettings) -> int:
    from kim.bench._support import kafka, row, scratch_dir

    with scratch_dir() as data_dir, kafka(settings, data_dir) as bootstrap:
        prefix = f"bench{uuid.uuid4().hex[:8]}."
        names = create_topics(bootstrap, prefix, settings.partitions)
        try:
            started = time.perf_counter()
            sent = asyncio.run(fill(bootstrap, prefix, district_events(args.events)))
            print(f"filled {len(names)} topics with {sent:,} events in {time.perf_counter() - started:.1f} s")
            pattern = prefix + "kim.*"
            json_events, json_s = _in_child(_bare, bootstrap, pattern, False)
            bare_events, bare_s = _in_child(_bare, bootstrap, pattern, True)
            events, replay_s, rss_kib, persons, workers = _in_child(_replay, bootstrap, pattern, args.workers)
        finally:
            delete_topics(bootstrap, names)
    json_rate, bare_rate, rate = json_events / json_s, bare_events / bare_s, events / replay_s
    print(f"kim bench replay: {events:,} events of {persons:,} persons, {workers} replay process(es)")
    print(row("bare consumer: read + JSON (orjson)", f"{json_rate:,.0f} ev/s"))
    print(row("bare consumer: read + contracts.decode", f"{bare_rate:,.0f} ev/s"))
    print(row("audit replay (contracts.decode, projections)", f"{rate:,.0f} ev/s", f"target >= {TARGET_RATE:,}"))
    print(row("replay / bare consumer (contracts.decode)", f"{rate / bare_rate:.2f}", f"target >= {TARGET_RATIO}"))
    print(row("replay / bare consumer (orjson)", f"{rate / json_rate:.2f}"))
    print(row("peak memory of the replay", f"{rss_kib / 1024:,.0f} MiB", f"target <= {TARGET_RSS_MIB:,} MiB"))
    return 0
