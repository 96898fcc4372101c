"""Kafka side of the reporting service: which records to read, validated in bulk, kept as published."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import orjson

from contracts import InvalidEvent, decode, parse_rfc3339
from contracts.upcasting import upcast
from services.reporting.domain import KEPT_FIELDS, Record, record_of


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


def contract_problems(values: Sequence[bytes]) -> list[Invalid]:
    """The events that break the contract, and why. Module-level: the helper process runs it."""
    invalid = []
    for index, value in enumerate(values):
        try:
            decode(value)
        except InvalidEvent as exc:
            invalid.append((index, f"InvalidEvent: {exc}"))
    return invalid


def kept_records(values: Sequence[bytes], invalid: Sequence[Invalid]) -> list[Kept]:
    """What the figures keep of the events that are not `invalid`. They were validated already, so they are
    read as plain JSON: a quarter of the cost of validating them again."""
    skip = {index for index, _ in invalid}
    return [(index, *kept) for index, value in enumerate(values)
            if index not in skip and (kept := _kept_of(orjson.loads(value))) is not None]


def _kept_of(envelope: dict) -> tuple[str, Record] | None:
    """(subject, record) of a validated envelope as JSON, brought to its current version; None for a
    type the figures do not read."""
    envelope = upcast(envelope)
    record = record_of(envelope["type"].split(".")[2], envelope["source"], envelope["id"],
                       parse_rfc3339(envelope["time"]), parse_rfc3339(envelope["recordedtime"]),
                       envelope.get("data") or {})
    return None if record is None else (envelope["subject"], record)


def envelopes_value(values: Sequence[bytes]) -> bytes:
    """Events as published, as one JSON array (a changelog value)."""
    return b"[" + b",".join(values) + b"]"


def records_of_envelopes(value: bytes) -> list[tuple[str, Record]]:
    """What the figures keep of the events of `envelopes_value`, which were validated when consumed."""
    return [kept for envelope in orjson.loads(value) if (kept := _kept_of(envelope)) is not None]
