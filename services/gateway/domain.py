"""What the gateway decides about a request, as pure functions.

The gateway checks only what the tables of the interface say (§3): the envelope
and payload against the contract, and who may publish what. Whether an event
fits the person's history is the referral service's business.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from contracts import ValidatedEvent, ValidationProblem, authorisation_problems, validate
from contracts.catalogue import agency_topic


@dataclass(frozen=True)
class EventError:
    """One broken rule of one event of a request."""

    index: int | None  # None: the request as a whole
    id: str | None
    path: str
    rule: str
    value: Any = None

    def to_dict(self) -> dict[str, Any]:
        out = {"index": self.index, "id": self.id, "path": self.path, "rule": self.rule}
        if self.value is not None:
            out["value"] = self.value
        return out


@dataclass(frozen=True)
class Publishable:
    """An event the caller may publish, with the envelope exactly as it was sent."""

    event: ValidatedEvent
    value: bytes
    topic: str
    """Its agency's topic (§5), the same for every event a caller may publish."""
    key: tuple[str, str] = field(init=False)
    """`(source, id)` identifies an event for ever (§2)."""

    def __post_init__(self) -> None:
        # Set once: the group commit and the store look it up many times per event.
        object.__setattr__(self, "key", (self.event.source, self.event.id))


@dataclass(frozen=True)
class Assessment:
    events: list[Publishable]
    invalid: list[EventError]  # → 422
    forbidden: list[EventError]  # → 403


def _event_id(raw: Any) -> str | None:
    if isinstance(raw, dict) and isinstance(raw.get("id"), str):
        return raw["id"]
    return None


def _errors(index: int, event_id: str | None, problems: list[ValidationProblem]) -> list[EventError]:
    return [EventError(index, event_id, p.path, p.rule, p.value) for p in problems]


def assess(raw_events: list[Any], caller_agency: str) -> Assessment:
    """Validate every event of a request and check that the caller may publish it.

    Every event is checked, so the answer lists all that is wrong at once.
    """
    events: list[Publishable] = []
    invalid: list[EventError] = []
    forbidden: list[EventError] = []
    topic: str | None = None
    for index, raw in enumerate(raw_events):
        result = validate(raw) if isinstance(raw, dict) else [
            ValidationProblem("$", "must be a JSON object (one CloudEvent)")]
        if isinstance(result, list):
            invalid.extend(_errors(index, _event_id(raw), result))
            continue
        problems = authorisation_problems(result, caller_agency)
        if problems:
            forbidden.extend(_errors(index, result.id, problems))
        else:
            topic = topic or agency_topic(caller_agency)  # the event's own: `source` names the caller's agency
            # Serialising what was sent is cheaper than the model, and keeps it as published.
            events.append(Publishable(result, orjson.dumps(raw), topic))
    return Assessment(events, invalid, forbidden)


def split_fresh(requests: Iterable[list[Publishable]],
                known: set[tuple[str, str]]) -> tuple[list[Publishable], list[int]]:
    """The events of a group of requests to publish — those neither `known` nor
    repeated earlier in the group — and how many of each request's are among them."""
    seen = set(known)
    fresh: list[Publishable] = []
    accepted: list[int] = []
    for events in requests:
        count = 0
        for event in events:
            if event.key not in seen:
                seen.add(event.key)
                fresh.append(event)
                count += 1
        accepted.append(count)
    return fresh, accepted
