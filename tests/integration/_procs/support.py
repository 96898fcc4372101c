"""Helpers shared by the messaging integration tests."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from kim.messaging import partition_counts


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.02) -> None:
    """Poll ``predicate`` until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)  # polling interval, not synchronisation


def unique_topic(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:12]}"


def envelope(event_id: str, subject: str = "p1", source: str = "urn:kim:job_center") -> dict:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": "de.kim.GoalAchieved.v1",
        "subject": subject,
        "time": "2025-01-02T03:04:05Z",
        "recordedtime": "2025-01-02T03:04:06Z",
        "datacontenttype": "application/json",
        "data": {"plan_id": "plan-1", "goal_id": event_id},
    }


async def read_topic(bootstrap: str, topic: str) -> list:
    """Every record currently in ``topic`` (read_uncommitted), in partition order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        count = (await partition_counts(bootstrap, [topic]))[topic]
        tps = [TopicPartition(topic, p) for p in range(count)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records = []
        for tp in tps:
            while await consumer.position(tp) < ends[tp]:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                records += batch.get(tp, [])
        return records
    finally:
        await consumer.stop()


async def async_wait_until(
    predicate: Callable[[], object], timeout: float, interval: float = 0.02
) -> None:
    """``wait_until`` for code running in an event loop."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        await asyncio.sleep(interval)  # polling interval, not synchronisation
