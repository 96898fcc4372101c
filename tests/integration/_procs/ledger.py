"""A tiny event-sourced application whose events the relay tests publish."""

from __future__ import annotations

from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, DomainEventProtocol, event

SOURCE = "urn:kim:integration_center:test"


class Entry(Aggregate):
    @event("Recorded")
    def __init__(self, number: int) -> None:
        self.number = number
        self.bumps = 0

    @event("Bumped")
    def bump(self) -> None:
        self.bumps += 1


class Ledger(Application[Any]):
    pass


def to_envelope(domain_event: DomainEventProtocol[Any], event_id: str) -> dict[str, Any]:
    """Deterministic mapping, as the relay requires."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": SOURCE,
        "type": f"de.kim.Test{type(domain_event).__name__}.v1",
        "subject": f"p{domain_event.originator_id.int % 50}",
        "time": domain_event.timestamp.isoformat(),
        "recordedtime": domain_event.timestamp.isoformat(),
        "datacontenttype": "application/json",
        "data": {
            "originator_id": str(domain_event.originator_id),
            "originator_version": domain_event.originator_version,
        },
    }
