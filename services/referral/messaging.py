"""Kafka side of the referral service: agency topics in, derived events out."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

import anyio

from contracts import EVENT_TYPES, build_event, decode, to_json_bytes
from kim.messaging import EventProducer, KafkaRecord, TrackedConsumer, event_headers
from kim.storage import Database
from kim.topics import AGENCY_TOPICS, service_topic
from services.referral.application import Referral
from services.referral.domain import DerivedEvent
from services.referral.projections import ReferralStore

log = logging.getLogger(__name__)

SOURCE = "urn:kim:service:referral"
TOPIC = service_topic("referral")


def encode_derived(event: DerivedEvent, recorded: datetime) -> bytes:
    """The envelope of a derived event; its id is the domain's stable id, so a
    recomputation or restart never yields a second copy."""
    data = EVENT_TYPES[f"de.kim.{event.type}.v1"].model_validate(event.data)
    return to_json_bytes(build_event(data, id=event.event_id, source=SOURCE, subject=event.subject,
                                     time=event.time, recordedtime=recorded))


def agency_consumer(referral: Referral, db: Database, bootstrap: str, group: str) -> TrackedConsumer:
    return TrackedConsumer("referral", list(AGENCY_TOPICS), db, referral.apply, bootstrap_servers=bootstrap,
                           decode=decode, event_key=lambda e: (e.source, e.id), group_id=group)


async def publish_derived(db: Database, producer: EventProducer, stopping: asyncio.Event,
                          interval_s: float = 0.1) -> None:
    """Drain the outbox onto kim.referral.events, at least once (ids are stable)."""
    import orjson

    def fetch() -> list[tuple[str, bytes]]:
        with db.transaction(readonly=True) as tx:
            return ReferralStore.unpublished(tx)

    def mark(ids: list[str]) -> None:
        with db.transaction() as tx:
            ReferralStore.mark_published(tx, ids)

    while not stopping.is_set():
        try:
            pending = await anyio.to_thread.run_sync(fetch)
            if pending:
                records = []
                for _, envelope in pending:
                    parsed = orjson.loads(envelope)
                    records.append(KafkaRecord(parsed["subject"].encode(), envelope, event_headers(parsed)))
                await producer.send_records(TOPIC, records)
                await anyio.to_thread.run_sync(mark, [event_id for event_id, _ in pending])
                continue
        except Exception:  # Kafka or the database briefly away: try again shortly
            log.exception("publishing derived events failed; retrying")
        try:
            await asyncio.wait_for(stopping.wait(), interval_s)
        except TimeoutError:
            pass
