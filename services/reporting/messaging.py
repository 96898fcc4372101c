"""Kafka side of the reporting service: which records to read, validated in bulk, kept as published."""

from __future__ import annotations

import gc
from collections.abc import Iterable, Sequence

import orjson

from contracts import InvalidEvent, decode, parse_rfc3339
from services.reporting.domain import KEPT_FIELDS, Record, record_of


def fewer_collections() -> None:
    """Let Python's cyclic garbage collector run far less often in this process.

    The figures hold millions of small objects (every person's events) that never
    form cycles; with the default thresholds the collector scans them again and
    again and costs as much as the work itself.
    """
    gc.set_threshold(100_000, 50, 1000)


KEPT_TYPES = frozenset(f"de.kim.{name}.v1".encode() for name in KEPT_FIELDS)


def wanted(headers: Iterable[tuple[str, bytes]] | None) -> bool:
    """Whether to decode a record: types the figures do not read are skipped by their `ce_type` header."""
    for key, value in headers or ():
        if key == "ce_type":
            return value in KEPT_TYPES
    return True


Invalid = tuple[int, str]
"""(index in the batch, why the event breaks the contract)."""

Kept = tuple[int, str, Record]
"""(index in the batch, subject, what the figures keep of the event)."""


def decode_events(values: Sequence[bytes]) -> tuple[list[Kept], list[Invalid]]:
    """Validate events against the contract and keep what the figures read."""
    kept, invalid = [], []
    for index, value in enumerate(values):
        try:
            event = decode(value)
        except InvalidEvent as exc:
            invalid.append((index, f"InvalidEvent: {exc}"))
            continue
        envelope = event.envelope
        record = record_of(event.event_name, envelope.source, envelope.id, envelope.effective_time,
                           envelope.recorded_time, envelope.data)
        if record is not None:
            kept.append((index, envelope.subject, record))
    return kept, invalid


def envelopes_value(values: Sequence[bytes]) -> bytes:
    """Events as published, as one JSON array (a changelog value)."""
    return b"[" + b",".join(values) + b"]"


def records_of_envelopes(value: bytes) -> list[tuple[str, Record]]:
    """What the figures keep of the events of `envelopes_value`, which were validated when consumed."""
    kept = []
    for envelope in orjson.loads(value):
        record = record_of(envelope["type"].split(".")[2], envelope["source"], envelope["id"],
                           parse_rfc3339(envelope["time"]), parse_rfc3339(envelope["recordedtime"]),
                           envelope.get("data") or {})
        if record is not None:
            kept.append((envelope["subject"], record))
    return kept
