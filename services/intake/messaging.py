"""Kafka side of intake: its events out through the outbox, consents in.

Intake publishes on the topic of the acting case manager's agency with source
`urn:kim:<agency>:intake`, one relay per agency that may emit intake's events.
Only pseudonymous facts are mapped: a `Person` aggregate event's sealed
personal data never reach an envelope.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.domain import DomainEventProtocol

from contracts import EVENT_TYPES, agency_topic, build_event, decode
from contracts.events import ConsentRecorded, ConsentWithdrawn, EventData, PersonRegistered
from kim.consent import CONSENT_EVENT_TYPES, record_consent_events
from kim.messaging import ConsumedEvent, EventProducer, OutboxRelay, TrackedConsumer
from kim.messaging.outbox import Mapper
from kim.storage import Database, Transaction
from kim.topics import AGENCY_TOPICS
from services.intake.application import PersonEvents, intake_source, outbox_name
from services.intake.domain import REGISTERING_AGENCIES, Person


def payload(event: DomainEventProtocol[Any]) -> tuple[EventData, Any] | None:
    """(catalogue payload, effective time) of an aggregate event; None if it is not published."""
    if isinstance(event, Person.Registered):
        return PersonRegistered(municipality=event.municipality, birth_year=event.birth_year,
                                arrival_date=event.arrival_date,
                                country_of_origin=event.country_of_origin), event.registered_at
    if isinstance(event, Person.ConsentRecorded):
        return ConsentRecorded(shared_with=event.shared_with, purposes=event.purposes,
                               valid_until=event.valid_until), event.time
    if isinstance(event, Person.ConsentWithdrawn):
        return ConsentWithdrawn(shared_with=event.shared_with), event.time
    if isinstance(event, Person.ProfileRecorded):
        return EVENT_TYPES[f"de.kim.{event.kind}.v1"].model_validate(event.profile), event.time
    return None  # Adopted, Erased: intake's own bookkeeping


def envelope_mapper(agency: str) -> Mapper:
    """Envelopes of `agency`'s events; the other agencies' relays publish theirs."""

    def mapper(event: DomainEventProtocol[Any], event_id: str) -> dict[str, Any] | None:
        if getattr(event, "agency", None) != agency:
            return None
        mapped = payload(event)
        if mapped is None:
            return None
        data, time = mapped
        envelope = build_event(data, id=event_id, source=intake_source(agency), subject=event.subject, time=time,
                               recordedtime=event.timestamp)
        return envelope.model_dump(mode="json", exclude_unset=True)

    return mapper


def outbox_relays(events: PersonEvents, producer: EventProducer, db: Database) -> list[OutboxRelay]:
    # The relays are woken after each save; polling only catches saves of other processes.
    return [OutboxRelay(outbox_name(agency), events, agency_topic(agency), envelope_mapper(agency), producer, db,
                        poll_interval=1.0)
            for agency in sorted(REGISTERING_AGENCIES)]


def consent_consumer(db: Database, bootstrap: str, group: str) -> TrackedConsumer:
    """Consents and registrations from every agency topic, intake's own included.

    Only these types are decoded. No seen-set: the projection is keyed by
    (source, id), so a repeat changes nothing.
    """

    def handle(tx: Transaction, events: list[ConsumedEvent]) -> None:
        record_consent_events(tx, [e.event for e in events])

    return TrackedConsumer("intake", list(AGENCY_TOPICS), db, handle, bootstrap_servers=bootstrap, decode=decode,
                           event_key=None, group_id=group, event_types=CONSENT_EVENT_TYPES)
