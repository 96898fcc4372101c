"""Kafka side of the gateway: each event onto its agency's topic, a request per transaction."""

from __future__ import annotations

from collections.abc import Sequence

from kim.messaging import EventProducer, KafkaRecord, event_headers
from services.gateway.domain import Publishable


def to_record(publishable: Publishable) -> KafkaRecord:
    """Key = subject; value = the envelope as the agency published it."""
    envelope = publishable.event.envelope
    headers = event_headers({"specversion": envelope.specversion, "id": envelope.id, "source": envelope.source,
                             "type": envelope.type, "subject": envelope.subject, "time": envelope.time})
    return KafkaRecord(envelope.subject.encode(), publishable.value, headers)


class KafkaPublisher:
    def __init__(self, producer: EventProducer) -> None:
        self._producer = producer

    async def publish(self, events: Sequence[Publishable]) -> None:
        await self._producer.send_many([(e.event.topic, to_record(e)) for e in events])
