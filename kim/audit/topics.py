"""Finding and reading the topics an audit covers: committed records only, from the beginning."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from kim.messaging.topics import partition_counts
from kim.topics import DEADLETTER_TOPIC

DEFAULT_PATTERN = "kim.*"
# `kim.<agency or service>.events`, optionally under a prefix (copies, benchmarks).
_EVENT_TOPIC = re.compile(r"(?:^|\.)kim\.([a-z][a-z0-9_-]*)\.events$")


def topic_owner(topic: str) -> str | None:
    """The agency or service that writes an event topic (§5), None for other topics."""
    match = _EVENT_TOPIC.search(topic)
    return match.group(1) if match else None


def is_deadletter(topic: str) -> bool:
    return topic == DEADLETTER_TOPIC or topic.endswith("." + DEADLETTER_TOPIC)


def consumer(bootstrap: str, client_id: str = "kim-audit") -> AIOKafkaConsumer:
    """A consumer that sees committed records only and fetches in large batches."""
    return AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id=client_id, enable_auto_commit=False,
                            isolation_level="read_committed", fetch_max_bytes=32 * 1024 * 1024,
                            max_partition_fetch_bytes=4 * 1024 * 1024)


async def discover(bootstrap: str, pattern: str = DEFAULT_PATTERN) -> dict[str, int]:
    """Topics matching `pattern` (shell-style, e.g. `kim.*`) and their partition counts."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="kim-audit-discovery")
    await admin.start()
    try:
        names = sorted(t for t in await admin.list_topics() if fnmatch.fnmatchcase(t, pattern))
    finally:
        await admin.close()
    return await partition_counts(bootstrap, names) if names else {}


async def end_offsets(bootstrap: str, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
    """Where the committed part of each partition ends now: the snapshot an audit covers."""
    client = consumer(bootstrap, "kim-audit-snapshot")
    await client.start()
    try:
        return dict(await client.end_offsets(list(tps))) if tps else {}
    finally:
        await client.stop()


async def read(client: AIOKafkaConsumer, ends: Mapping[TopicPartition, int],
               max_records: int = 20_000) -> AsyncIterator[list[Any]]:
    """Every committed record of `ends`' partitions below its end offset, in batches.

    Within a partition, records come in offset order. `client` must be started.
    """
    tps = [tp for tp, end in ends.items() if end > 0]
    if not tps:
        return
    client.assign(tps)
    await client.seek_to_beginning(*tps)
    pending = set(tps)
    while pending:
        batch = await client.getmany(*pending, timeout_ms=1000, max_records=max_records)
        records: list[Any] = []
        for tp, tp_records in batch.items():
            records.extend(r for r in tp_records if r.offset < ends[tp])
        if records:
            yield records
        # Transaction markers take offsets but never arrive, so the position tells when a partition is done.
        for tp in list(pending):
            if await client.position(tp) >= ends[tp]:
                pending.discard(tp)
