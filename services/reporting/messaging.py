"""Kafka side of the reporting service: which records to read, validated in bulk; the heavy work in processes.

Validating an event against the contract is the costliest step per event, and
recomputing a person the costliest step per person, so both run in worker
processes, in parallel with the consumer: batches of events go out as raw
values and come back as one compact JSON document of what the figures keep;
persons go out as their logs and come back as contributions.
"""

from __future__ import annotations

import asyncio
import gc
from datetime import datetime
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import orjson

from contracts import InvalidEvent, decode, parse_rfc3339
from services.referral.rules import RulesConfig
from services.reporting.application import Assessed, assess_logs
from services.reporting.domain import KEPT_FIELDS, PersonLog, Record, decode_records, encode_records, record_of

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


def decode_values(values: Sequence[bytes]) -> tuple[bytes, list[int], list[Invalid]]:
    """`decode_events` in a worker process: the kept records travel back as one JSON document."""
    kept, invalid = decode_events(values)
    return encode_records((subject, record) for _, subject, record in kept), [i for i, _, _ in kept], invalid


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


def assess_chunk(logs: bytes, rules: RulesConfig, now: datetime) -> list[Assessed]:
    """Contributions of the persons whose records `logs` holds (as `encode_records` writes them), in order."""
    persons: dict[str, PersonLog] = {}
    for subject, record in decode_records(logs):
        persons.setdefault(subject, PersonLog(subject)).add(record)
    return assess_logs(list(persons.values()), rules, now)


class Workers:
    """Validates batches and assesses persons in `workers` processes, or in this process with none."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                                         initializer=fewer_collections) if workers else None

    async def decode(self, values: Sequence[bytes]) -> tuple[list[Kept], list[Invalid]]:
        """`decode_events` of `values`, in the worker processes if there are any."""
        if self._pool is None:
            return decode_events(values)
        size = -(-len(values) // self.workers)
        starts = range(0, len(values), size or 1)
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(*(loop.run_in_executor(self._pool, decode_values, values[s:s + size])
                                         for s in starts))
        parts = list(zip(starts, results))
        kept: list[Kept] = []
        invalid: list[Invalid] = []
        for start, (rows, indexes, bad) in parts:
            kept.extend((start + i, subject, record) for i, (subject, record) in zip(indexes, decode_records(rows)))
            invalid.extend((start + i, reason) for i, reason in bad)
        return kept, invalid

    def assess(self, logs: list[PersonLog], rules: RulesConfig, now: datetime) -> list[Assessed]:
        """`assess_logs` spread over the processes; blocks (call it from a thread)."""
        if self._pool is None or len(logs) < 100:
            return assess_logs(logs, rules, now)
        size = -(-len(logs) // (4 * self.workers))  # several chunks per process even out their lengths
        chunks = [encode_records((log.subject, r) for log in logs[s:s + size] for r in log.records.values())
                  for s in range(0, len(logs), size)]
        results: list[Assessed] = []
        for part in self._pool.map(assess_chunk, chunks, [rules] * len(chunks), [now] * len(chunks)):
            results.extend(part)
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
