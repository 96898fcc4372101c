"""Reading back what a test wrote to Kafka, as the auditor's tools read it."""

from __future__ import annotations

from collections import defaultdict

from aiokafka import TopicPartition

from kim.audit import topics as audit_topics


async def committed(bootstrap: str, topic: str, partitions: int) -> dict[int, list]:
    """The committed records of `topic` per partition, in offset order."""
    ends = await audit_topics.end_offsets(bootstrap, [TopicPartition(topic, p) for p in range(partitions)])
    client = audit_topics.consumer(bootstrap)
    await client.start()
    out: dict[int, list] = defaultdict(list)
    try:
        async for records in audit_topics.read(client, ends):
            for record in records:
                out[record.partition].append(record)
    finally:
        await client.stop()
    return out
