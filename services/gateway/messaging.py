"""Kafka side of the gateway: each event onto its agency's topic, a request per transaction."""

from __future__ import annotations

from collections.abc import Sequence

from contracts import ValidatedEvent
from kim.messaging import EventProducer, KafkaRecord, event_headers


def to_record(event: ValidatedEvent) -> KafkaRecord:
    """Key = subject; value = the envelope as the agency published it."""
    envelope = event.envelope
    headers = event_headers({"specversion": envelope.specversion, "id": envelope.id, "source": envelope.source,
                             "type": envelope.type, "subject": envelope.subject, "time": envelope.time})
    return KafkaRecord(envelope.subject.encode(), event.to_json_bytes(), headers)


class KafkaPublisher:
    def __init__(self, producer: EventProducer) -> None:
        self._producer = producer

    async def publish(self, events: Sequence[ValidatedEvent]) -> None:
        await self._producer.send_many([(event.topic, to_record(event)) for event in events])
