"""Shared Kafka building blocks: producer, tracked consumer, outbox relay."""

from kim.messaging.consumer import (
    DEADLETTER_TOPIC,
    LARGE_POLLS,
    ConsumedEvent,
    InvalidEvent,
    TrackedConsumer,
    decode_envelope,
    envelope_key,
    member_partitions,
)
from kim.messaging.outbox import OutboxRelay, RelayGroup, derive_event_id
from kim.messaging.producer import (
    EventProducer,
    KafkaRecord,
    PublishFailed,
    encode_event,
    event_headers,
)
from kim.messaging.topics import partition_counts

__all__ = [
    "DEADLETTER_TOPIC",
    "LARGE_POLLS",
    "ConsumedEvent",
    "EventProducer",
    "InvalidEvent",
    "KafkaRecord",
    "OutboxRelay",
    "RelayGroup",
    "PublishFailed",
    "TrackedConsumer",
    "decode_envelope",
    "derive_event_id",
    "encode_event",
    "envelope_key",
    "event_headers",
    "member_partitions",
    "partition_counts",
]
