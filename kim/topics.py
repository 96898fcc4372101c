"""Kafka topic names of §5 of the interface specification."""

from __future__ import annotations

AGENCIES = (
    "integration_center",
    "job_center",
    "employment_agency",
    "foreigners_office",
    "youth_office",
    "social_welfare_office",
)
# Services that publish derived events on a topic of their own.
PUBLISHING_SERVICES = ("intake", "caseplan", "referral")
DEADLETTER_TOPIC = "kim.deadletter"


def agency_topic(agency: str) -> str:
    return f"kim.{agency}.events"


def service_topic(service: str) -> str:
    return f"kim.{service}.events"


AGENCY_TOPICS = tuple(agency_topic(a) for a in AGENCIES)
SERVICE_TOPICS = tuple(service_topic(s) for s in PUBLISHING_SERVICES)
EVENT_TOPICS = AGENCY_TOPICS + SERVICE_TOPICS
ALL_TOPICS = EVENT_TOPICS + (DEADLETTER_TOPIC,)
