"""Topic metadata the consumers need (creating topics: `kim.infra.kafka.create_topics`)."""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient


async def partition_counts(bootstrap_servers: str, topics: Iterable[str]) -> dict[str, int]:
    """Partition count of each topic; 0 for a topic that does not exist."""
    topics = list(topics)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    counts = dict.fromkeys(topics, 0)
    for topic in described:
        if not topic["error_code"]:
            counts[topic["topic"]] = len(topic["partitions"])
    return counts
