"""Kafka side of the referral service: agency topics in, derived events out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

import anyio

import orjson

from contracts import decode
from kim.messaging import LARGE_POLLS, EventProducer, KafkaRecord, TrackedConsumer, event_headers
from kim.storage import Database
from kim.topics import AGENCY_TOPICS, service_topic
from services.referral.application import Referral
from contracts import rfc3339
from services.referral.domain import DerivedEvent
from services.referral.projections import RELEVANT_EVENTS, FactRow, ReferralStore, fact_row

log = logging.getLogger(__name__)

SOURCE = "urn:kim:service:referral"
TOPIC = service_topic("referral")


def encode_derived(event: DerivedEvent, recorded: datetime) -> bytes:
    """The envelope of a derived event; its id is the domain's stable id, so a
    recomputation or restart never yields a second copy. The domain writes `data`
    in the contract's form (a unit test validates it), so no model is built here."""
    return orjson.dumps({
        "specversion": "1.0", "id": event.event_id, "source": SOURCE, "type": f"de.kim.{event.type}.v1",
        "subject": event.subject, "time": rfc3339(event.time), "recordedtime": rfc3339(recorded),
        "datacontenttype": "application/json", "data": event.data,
    })


def decode_fact(value: bytes) -> FactRow:
    """A record validated against the contract (else InvalidEvent: dead-lettered), as the row of its fact:
    small to send back from a decoding process."""
    return fact_row(decode(value))


def agency_consumer(referral: Referral, bootstrap: str, group: str,
                    after_commit: Callable[[], None] | None = None) -> TrackedConsumer:
    # Only the types that change responsibility are decoded; the other services validate the rest.
    # No separate seen-set: the facts table is keyed by (source, id), so a repeat changes nothing.
    return TrackedConsumer("referral", list(AGENCY_TOPICS), referral.db, referral.apply, bootstrap_servers=bootstrap,
                           decode=decode_fact, event_key=None, group_id=group, after_commit=after_commit,
                           event_types=[f"de.kim.{name}.v1" for name in RELEVANT_EVENTS], max_records=LARGE_POLLS)


async def publish_derived(db: Database, producer: EventProducer, stopping: asyncio.Event,
                          quiet: Callable[[], Awaitable[bool]], interval_s: float = 0.1) -> None:
    """Drain the outbox onto kim.referral.events, at least once (ids are stable), while `quiet()` says
    no persons are being computed: a recomputation under way (thousands of persons after a catch-up)
    goes first, since readiness waits for it and its writes would otherwise queue behind ours."""
    def fetch() -> list[tuple[str, bytes]]:
        with db.transaction(readonly=True) as tx:
            return ReferralStore.unpublished(tx)

    def mark(ids: list[str]) -> None:
        with db.transaction() as tx:
            ReferralStore.mark_published(tx, ids)

    while not stopping.is_set():
        try:
            if not await quiet():
                await _pause(stopping, interval_s)
                continue
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
        await _pause(stopping, interval_s)


async def _pause(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)
