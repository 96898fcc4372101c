"""`kim audit replay`: every projection rebuilt from the beginning of the topics (interfaces.md §7).

The history is read as it stands when the replay starts (end offsets taken
once), committed records only. Events count when effective by `as_of` and
recorded by `known_at`. Responsibility and gaps come from the referral
domain's fold, the figures from the reporting domain, each applied to every
person's events: the same code as the live services, fed from Kafka alone.

Memory stays within the projections: all topics share the partition count
and key (§5), so one person's events share a partition number. Partition
numbers are replayed one at a time (optionally in parallel worker processes);
only the persons of one partition number are held at once, and of each person
only the events the projections read.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing import get_context
from typing import Any

import orjson
from aiokafka import TopicPartition

from contracts import InvalidEvent, decode, parse_rfc3339, rfc3339
from kim.audit import topics as audit_topics
from kim.collector import fewer_collections
from services.referral.domain import PersonState
from services.referral.rules import RulesConfig
from services.reporting.disclosure import publish
from services.reporting.domain import KEPT_FIELDS, PersonLog, Tally, assess, month_index, month_name, record_of


class ReplayError(RuntimeError):
    """The topics cannot be replayed (missing, or not co-partitioned); the message says why."""


@dataclass
class Partial:
    """What replaying some partition numbers gives."""

    persons: dict[str, bytes] = field(default_factory=dict)
    """subject -> the person's report entry, as canonical JSON."""
    tally: Tally = field(default_factory=Tally)
    read: int = 0
    kept: int = 0
    invalid: int = 0
    latest_recorded: datetime | None = None

    def merge(self, other: Partial) -> None:
        self.persons.update(other.persons)
        self.tally.merge(other.tally)
        self.read += other.read
        self.kept += other.kept
        self.invalid += other.invalid
        if other.latest_recorded is not None and (self.latest_recorded is None
                                                  or other.latest_recorded > self.latest_recorded):
            self.latest_recorded = other.latest_recorded


@dataclass(frozen=True)
class Scope:
    """What counts: effective by `as_of` (None: now, as the live services see it), recorded by `known_at`."""

    now: datetime
    as_of: datetime | None
    known_at: datetime | None
    rules: RulesConfig
    case_managers: dict[str, float] = field(default_factory=dict)


@dataclass
class Replay:
    """The result of a replay: everything `report.json` and the summary say."""

    scope: Scope
    topics: dict[str, int]
    partial: Partial
    cells: list[dict[str, Any]]
    workers: int = 1

    @property
    def known_at(self) -> datetime | None:
        return self.scope.known_at if self.scope.known_at is not None else self.partial.latest_recorded

    def report_bytes(self) -> bytes:
        """`report.json`: sorted keys, subjects in order, no wall-clock value: the same history gives the same bytes."""
        as_of = self.scope.as_of or self.scope.now
        head = orjson.dumps({"as_of": rfc3339(as_of),
                             "known_at": rfc3339(self.known_at) if self.known_at else None,
                             "kpis": self.cells}, option=orjson.OPT_SORT_KEYS)
        persons = b",".join(orjson.dumps(subject) + b":" + entry
                            for subject, entry in sorted(self.partial.persons.items()))
        return head[:-1] + b',"persons":{' + persons + b"}}\n"

    def person(self, subject: str) -> dict[str, Any] | None:
        entry = self.partial.persons.get(subject)
        return orjson.loads(entry) if entry is not None else None


def person_entry(subject: str, state: PersonState) -> dict[str, Any]:
    """A person in the report: areas as `GET /v1/persons/{subject}/responsibility`, gaps as `GET /v1/gaps`."""
    return {
        "areas": {area: [{"agency": i.agency, "legal_domain": i.legal_domain, "from": rfc3339(i.from_),
                          "to": rfc3339(i.to) if i.to is not None else None} for i in intervals]
                  for area, intervals in sorted(state.areas.items())},
        "gaps": [{"gap_id": g.gap_id, "subject": subject, "area": g.area, "since": rfc3339(g.since),
                  "until": rfc3339(g.until) if g.until is not None else None, "last_agency": g.last_agency,
                  "reason": g.reason} for g in sorted(state.gaps, key=lambda g: (g.since, g.gap_id))],
    }


def _event_name(headers: Iterable[tuple[str, bytes]] | None) -> bytes | None:
    for key, value in headers or ():
        if key == "ce_type":
            parts = value.split(b".")
            return parts[2] if len(parts) == 4 else None
    return None


_KEPT = frozenset(name.encode() for name in KEPT_FIELDS)


class _Group:
    """One partition number of every topic: its persons' events, then their projections."""

    def __init__(self, scope: Scope, partial: Partial) -> None:
        self.scope = scope
        self.partial = partial
        self.logs: dict[str, PersonLog] = {}

    def add(self, value: bytes | None, headers: Any) -> None:
        partial = self.partial
        partial.read += 1
        name = _event_name(headers)
        if name is not None and name not in _KEPT:
            self._note_recorded(value)  # not decoded: no projection reads its type
            return
        try:
            event = decode(value or b"")
        except InvalidEvent:
            partial.invalid += 1
            return
        envelope = event.envelope
        recorded = envelope.recorded_time
        if partial.latest_recorded is None or recorded > partial.latest_recorded:
            partial.latest_recorded = recorded
        record = record_of(event.event_name, envelope.source, envelope.id, envelope.effective_time, recorded,
                           envelope.data)
        if record is None:
            return
        partial.kept += 1
        log = self.logs.get(envelope.subject)
        if log is None:
            log = self.logs[envelope.subject] = PersonLog(envelope.subject)
        log.add(record)

    def _note_recorded(self, value: bytes | None) -> None:
        try:
            recorded = parse_rfc3339(orjson.loads(value or b"{}")["recordedtime"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self.partial.invalid += 1
            return
        if self.partial.latest_recorded is None or recorded > self.partial.latest_recorded:
            self.partial.latest_recorded = recorded

    def finish(self) -> None:
        scope = self.scope
        limit = scope.as_of or scope.now
        for subject, log in self.logs.items():
            if not any(r.time <= limit and (scope.known_at is None or r.recorded <= scope.known_at)
                       for r in log.records.values()):
                continue  # nothing of this person counts yet
            assessment = assess(log, scope.rules, scope.now, as_of=scope.as_of, known_at=scope.known_at)
            self.partial.persons[subject] = orjson.dumps(person_entry(subject, assessment.state),
                                                         option=orjson.OPT_SORT_KEYS)
            self.partial.tally.add(assessment.contribution)
        self.logs.clear()


def replay_partitions(bootstrap: str, ends: dict[tuple[str, int], int], numbers: list[int], scope: Scope) -> Partial:
    """Replay the partition numbers `numbers` of every topic, up to `ends`; runs its own event loop."""
    return asyncio.run(_replay_partitions(bootstrap, ends, numbers, scope))


async def _replay_partitions(bootstrap: str, ends: dict[tuple[str, int], int], numbers: list[int],
                             scope: Scope) -> Partial:
    partial = Partial()
    client = audit_topics.consumer(bootstrap, "kim-audit-replay")
    await client.start()
    try:
        for number in numbers:
            group = _Group(scope, partial)
            wanted = {TopicPartition(t, p): end for (t, p), end in ends.items() if p == number}
            async for records in audit_topics.read(client, wanted):
                for record in records:
                    group.add(record.value, record.headers)
            group.finish()
    finally:
        await client.stop()
    return partial


async def snapshot(bootstrap: str, pattern: str) -> tuple[dict[str, int], dict[tuple[str, int], int]]:
    """The event topics matching `pattern` with their partition counts, and where each partition ends now."""
    found = await audit_topics.discover(bootstrap, pattern)
    event_topics = {t: n for t, n in found.items() if audit_topics.topic_owner(t) is not None}
    if not event_topics:
        raise ReplayError(f"no event topics (kim.<agency or service>.events) match {pattern!r} "
                          f"on {bootstrap}")
    counts = set(event_topics.values())
    if len(counts) > 1:
        raise ReplayError(f"the event topics have different partition counts {event_topics}; a person's events "
                          "must share a partition number (§5)")
    tps = [TopicPartition(t, p) for t, n in event_topics.items() for p in range(n)]
    ends = await audit_topics.end_offsets(bootstrap, tps)
    return event_topics, {(tp.topic, tp.partition): end for tp, end in ends.items()}


# Below this many records a replay takes less time than starting worker processes.
_PARALLEL_FROM = 100_000


def replay(bootstrap: str, scope: Scope, pattern: str = audit_topics.DEFAULT_PATTERN,
           workers: int | None = None) -> Replay:
    """Replay every event topic matching `pattern` as it stands now.

    `workers` processes replay partition numbers in parallel; None: one per CPU for a long history.
    """
    event_topics, ends = asyncio.run(snapshot(bootstrap, pattern))
    numbers = sorted({p for _, p in ends})
    if workers is None:
        workers = min(os.cpu_count() or 1, len(numbers)) if sum(ends.values()) >= _PARALLEL_FROM else 1
    partial = Partial()
    if workers <= 1:
        partial = replay_partitions(bootstrap, ends, numbers, scope)
    else:
        shares = [numbers[i::workers] for i in range(workers) if numbers[i::workers]]
        with ProcessPoolExecutor(len(shares), mp_context=get_context("spawn"),
                                 initializer=fewer_collections) as pool:
            for part in pool.map(replay_partitions, [bootstrap] * len(shares), [ends] * len(shares), shares,
                                 [scope] * len(shares)):
                partial.merge(part)
    limit = scope.as_of or scope.now
    cells = publish(partial.tally.cells(month_index(limit), scope.case_managers))
    return Replay(scope, event_topics, partial, cells, workers)


def report_hash(report: bytes) -> str:
    return hashlib.sha256(report).hexdigest()


def summary(result: Replay, report_sha256: str, max_gaps: int = 50) -> str:
    """A readable account of the replay; like the report, the same history gives the same text."""
    scope, partial = result.scope, result.partial
    as_of = scope.as_of or scope.now
    lines = [
        "KIM audit replay",
        f"as of (effective time): {rfc3339(as_of)}",
        f"known at (recorded by): {rfc3339(result.known_at) if result.known_at else '-'}"
        + ("" if scope.known_at else " (the latest recordedtime seen)"),
        f"topics: {', '.join(f'{t} ({n} partitions)' for t, n in sorted(result.topics.items()))}",
        f"events read: {partial.read:,}; read by the projections: {partial.kept:,}; invalid: {partial.invalid:,}",
        f"persons: {len(partial.persons):,}",
        f"report.json sha256: {report_sha256}",
        "",
        f"Responsibility at {rfc3339(as_of)} (persons per area and agency):",
    ]
    holders: dict[tuple[str, str], int] = {}
    open_gaps: list[tuple[str, str, dict[str, Any]]] = []
    for subject in sorted(partial.persons):
        entry = orjson.loads(partial.persons[subject])
        for area, intervals in entry["areas"].items():
            if intervals and intervals[-1]["to"] is None:
                key = (area, intervals[-1]["agency"])
                holders[key] = holders.get(key, 0) + 1
        open_gaps.extend((gap["since"], subject, gap) for gap in entry["gaps"] if gap["until"] is None)
    lines += [f"  {area:<16} {agency:<24} {count:>7,}" for (area, agency), count in sorted(holders.items())]
    lines += ["", f"Open gaps at {rfc3339(as_of)}: {len(open_gaps):,}"]
    for since, subject, gap in sorted(open_gaps)[:max_gaps]:
        lines.append(f"  {subject:<24} {gap['area']:<16} since {since}  last {gap['last_agency']:<22} "
                     f"{gap['reason']}")
    if len(open_gaps) > max_gaps:
        lines.append(f"  … and {len(open_gaps) - max_gaps:,} more (report.json lists them all)")
    month = month_name(month_index(as_of))
    district = [c for c in result.cells if c["dims"]["month"] == month and c["dims"]["municipality"] == "*"]
    lines += ["", f"Figures of the district in {month} (suppressed: fewer than 5 persons):"]
    for cell in district:
        rest = ", ".join(f"{k}={v}" for k, v in cell["dims"].items() if k not in ("month", "municipality"))
        value = "suppressed" if cell["suppressed"] else cell["value"]
        lines.append(f"  {cell['kpi']:<28} {rest:<44} {value}")
    return "\n".join(lines) + "\n"
