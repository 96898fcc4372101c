"""The KIM event contract: catalogue, envelope, payload models and validation.

Services import from here; `python -m contracts.generate` writes the JSON
Schemas and the AsyncAPI document under `contracts/schemas/`.
"""

from contracts.catalogue import (
    AGENCY_LEGAL_DOMAINS,
    AREA_AGENCIES,
    AREA_HOLDERS,
    AREA_LEGAL_DOMAINS,
    CONTINUOUS_AREAS,
    Agency,
    Area,
    Cefr,
    LegalDomain,
    agencies_that_can_hold,
    agency_topic,
    can_hold,
    legal_domains_for,
    service_topic,
)
from contracts.envelope import CloudEvent, build_event, to_json_bytes
from contracts.events import CATALOGUE, DERIVED, EVENT_TYPES, DerivedEventData, EventData
from contracts.fields import parse_rfc3339, rfc3339
from contracts.upcasting import UPCASTERS, Upcaster, upcast
from contracts.validation import (
    InvalidEvent,
    ValidatedEvent,
    ValidationProblem,
    authorisation_problems,
    decode,
    validate,
    validate_batch,
)

__all__ = [
    "AGENCY_LEGAL_DOMAINS",
    "AREA_AGENCIES",
    "AREA_HOLDERS",
    "AREA_LEGAL_DOMAINS",
    "CATALOGUE",
    "CONTINUOUS_AREAS",
    "DERIVED",
    "EVENT_TYPES",
    "UPCASTERS",
    "Agency",
    "Area",
    "Cefr",
    "CloudEvent",
    "DerivedEventData",
    "EventData",
    "InvalidEvent",
    "LegalDomain",
    "Upcaster",
    "ValidatedEvent",
    "ValidationProblem",
    "agencies_that_can_hold",
    "agency_topic",
    "authorisation_problems",
    "build_event",
    "can_hold",
    "decode",
    "legal_domains_for",
    "parse_rfc3339",
    "rfc3339",
    "service_topic",
    "to_json_bytes",
    "upcast",
    "validate",
    "validate_batch",
]
