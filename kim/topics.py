"""Kafka topic names of §5 of the interface specification."""

from __future__ import annotations

from contracts import Agency, agency_topic, service_topic
from kim.messaging.consumer import DEADLETTER_TOPIC

# Services that publish derived events on a topic of their own.
PUBLISHING_SERVICES = ("intake", "caseplan", "referral")

AGENCY_TOPICS = tuple(agency_topic(a) for a in Agency)
SERVICE_TOPICS = tuple(service_topic(s) for s in PUBLISHING_SERVICES)
EVENT_TOPICS = AGENCY_TOPICS + SERVICE_TOPICS
ALL_TOPICS = EVENT_TOPICS + (DEADLETTER_TOPIC,)
__all__ = ["AGENCY_TOPICS", "ALL_TOPICS", "DEADLETTER_TOPIC", "EVENT_TOPICS", "SERVICE_TOPICS"]
