"""Kafka side of the caseplan service: every agency topic and the derived events in,
the plans' catalogue events out onto the acting agency's topic."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contracts import EVENT_TYPES, build_event, decode, parse_rfc3339
from contracts.events import MEASURE_AGENCIES
from kim.messaging import LARGE_POLLS, EventProducer, OutboxRelay, TrackedConsumer
from kim.storage import Database
from kim.topics import AGENCY_TOPICS, agency_topic, service_topic
from services.caseplan.application import CasePlans
from services.caseplan.domain import catalogue_event
from services.caseplan.projections import CaseplanStore

TOPICS = (*AGENCY_TOPICS, service_topic("referral"))
# Agencies whose case managers may publish plan events (measures included).
PUBLISHING_AGENCIES = tuple(sorted(MEASURE_AGENCIES))


def timeline_consumer(db: Database, bootstrap: str, group: str) -> TrackedConsumer:
    return TrackedConsumer("caseplan", list(TOPICS), db, CaseplanStore.apply, bootstrap_servers=bootstrap,
                           decode=decode, event_key=lambda e: (e.source, e.id), group_id=group,
                           max_records=LARGE_POLLS)


def envelope_for(agency: str):
    """Relay mapper: the catalogue envelope of a plan event of `agency`; None for other
    agencies' events and for internal drafting steps."""

    def mapper(domain_event: Any, event_id: str) -> Mapping[str, Any] | None:
        if domain_event.agency != agency:
            return None
        mapped = catalogue_event(domain_event)
        if mapped is None:
            return None
        name, data = mapped
        payload = EVENT_TYPES[f"de.kim.{name}.v1"].model_validate(data)
        envelope = build_event(payload, id=event_id, source=f"urn:kim:{agency}:caseplan",
                               subject=domain_event.subject, time=parse_rfc3339(domain_event.effective),
                               recordedtime=domain_event.timestamp)
        return envelope.model_dump(exclude_unset=True)

    return mapper


def plan_relays(plans: CasePlans, producer: EventProducer, db: Database) -> list[OutboxRelay]:
    """One relay per agency topic; each publishes only its agency's events, with stable ids."""
    return [OutboxRelay(f"caseplan-{agency}", plans, agency_topic(agency), envelope_for(agency), producer, db)
            for agency in PUBLISHING_AGENCIES]
