"""`kim audit verify`: the hash chains on every topic, and the live projections against a fresh replay (§7).

Every committed record of every `kim.*` topic (but the dead-letter topic, which
holds copies of rejected records) is read from the beginning. A record must be
a CloudEvent keyed by its subject on the partition its subject hashes to (§5,
what the replay relies on) and carry an intact link of its producer's chain;
only agencies that the district lets write to Kafka directly may publish
events without a chain (they are counted as unchained).

Then the referral service's responsibility and gaps and the reporting
service's figures are compared with a replay of the same topics as of now.
A difference may be lag (the services still consuming), so a comparison that
fails is repeated with a fresh replay a few times before it counts.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from aiokafka import TopicPartition

from contracts import parse_rfc3339
from kim.audit import topics as audit_topics
from kim.audit.replay import Replay, Scope, replay
from kim.messaging.chain import ChainProblem, ChainVerifier, link_of, partition_for


@dataclass
class ChainReport:
    events_checked: int = 0
    unchained: int = 0
    problems: list[ChainProblem] = field(default_factory=list)


class _Partition:
    """The checks of one topic-partition, fed in offset order."""

    def __init__(self, topic: str, partition: int, partitions: int, unchained_allowed: bool,
                 report: ChainReport) -> None:
        self.chains = ChainVerifier(topic, partition)
        self.topic, self.partition, self.partitions = topic, partition, partitions
        self.unchained_allowed = unchained_allowed
        self.report = report

    def problem(self, offset: int, event_id: str | None, text: str) -> None:
        self.report.problems.append(ChainProblem(self.topic, self.partition, offset, event_id, text))

    def feed(self, offset: int, key: bytes | None, value: bytes | None) -> None:
        self.report.events_checked += 1
        try:
            envelope = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            envelope = None
        if not isinstance(envelope, dict):
            self.problem(offset, None, "forged: not a CloudEvent (the value is not a JSON object)")
            return
        event_id = envelope.get("id") if isinstance(envelope.get("id"), str) else None
        subject = envelope.get("subject")
        if not isinstance(subject, str) or key != subject.encode():
            self.problem(offset, event_id, "misplaced: the record's key is not the event's subject (§5)")
        elif partition_for(key, self.partitions) != self.partition:
            self.problem(offset, event_id, f"misplaced: its subject belongs on partition "
                                           f"{partition_for(key, self.partitions)} (§5)")
        link = link_of(envelope)
        if link is None:
            if self.unchained_allowed:
                self.report.unchained += 1
            else:
                self.problem(offset, event_id, "unchained: the event carries no hash chain, and its topic is not "
                                               "one of an agency configured as writing to Kafka directly")
        elif isinstance(link, str):
            self.problem(offset, event_id, f"forged: {link}")
        else:
            self.chains.feed(offset, event_id, link)


async def check_chains(bootstrap: str, pattern: str, direct_agencies: Iterable[str]) -> ChainReport:
    """Read every topic matching `pattern` (the dead-letter topic aside) and check every record."""
    direct = frozenset(direct_agencies)
    found = {t: n for t, n in (await audit_topics.discover(bootstrap, pattern)).items()
             if not audit_topics.is_deadletter(t)}
    report = ChainReport()
    tps = [TopicPartition(t, p) for t, n in found.items() for p in range(n)]
    ends = await audit_topics.end_offsets(bootstrap, tps)
    checks = {tp: _Partition(tp.topic, tp.partition, found[tp.topic],
                             audit_topics.topic_owner(tp.topic) in direct, report) for tp in tps}
    client = audit_topics.consumer(bootstrap, "kim-audit-verify")
    await client.start()
    try:
        async for records in audit_topics.read(client, ends):
            for record in records:
                checks[TopicPartition(record.topic, record.partition)].feed(record.offset, record.key, record.value)
    finally:
        await client.stop()
    for check in checks.values():
        report.problems.extend(check.chains.finish())
    report.problems.sort(key=lambda p: (p.topic, p.partition, p.offset, p.problem))
    return report


# --- the live projections against a replay ---------------------------------------------------------


@dataclass(frozen=True)
class Services:
    """The live services: clients with their base URL and an auditor's `Authorization` header."""

    referral: httpx.Client
    reporting: httpx.Client


def _get(client: httpx.Client, path: str, params: dict[str, str] | None = None) -> Any:
    response = client.get(path, params=params)
    response.raise_for_status()
    return response.json()


def _live_referral(client: httpx.Client, subjects: Iterable[str]) -> dict[str, dict[str, Any]]:
    """subject -> {"areas", "gaps"} as the referral service shows them now."""
    gaps: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for gap in _get(client, "/v1/gaps", {"status": "all"}):
        gaps[gap["subject"]].append(gap)
    persons = {}
    for subject in sorted(set(subjects) | set(gaps)):
        areas = _get(client, f"/v1/persons/{subject}/responsibility")["areas"]
        persons[subject] = {"areas": areas, "gaps": sorted(gaps.get(subject, []),
                                                            key=lambda g: (parse_rfc3339(g["since"]), g["gap_id"]))}
    return persons


def _cell_key(cell: dict[str, Any]) -> tuple[str, tuple[tuple[str, str], ...]]:
    return cell["kpi"], tuple(sorted(cell["dims"].items()))


def differences(result: Replay, live_persons: dict[str, dict[str, Any]],
                live_cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Everything the live projections show differently from the replay."""
    found: list[dict[str, Any]] = []
    empty: dict[str, Any] = {"areas": {}, "gaps": []}
    for subject in sorted(set(live_persons) | set(result.partial.persons)):
        replayed = result.person(subject) or empty
        live = live_persons.get(subject, empty)
        for part in ("areas", "gaps"):
            if live[part] != replayed[part]:
                found.append({"projection": "referral", "subject": subject, "what": part,
                              "live": live[part], "replay": replayed[part]})
    replay_cells = {_cell_key(c): c for c in result.cells}
    live_by_key = {_cell_key(c): c for c in live_cells}
    for key in sorted(set(replay_cells) | set(live_by_key)):
        live_cell, replay_cell = live_by_key.get(key), replay_cells.get(key)
        if live_cell != replay_cell:
            found.append({"projection": "reporting", "kpi": key[0], "dims": dict(key[1]),
                          "live": live_cell and {"value": live_cell["value"], "suppressed": live_cell["suppressed"]},
                          "replay": replay_cell and {"value": replay_cell["value"],
                                                     "suppressed": replay_cell["suppressed"]}})
    return found


def compare_projections(bootstrap: str, pattern: str, scope_at: Callable[[], Scope], services: Services,
                        attempts: int = 3, pause_s: float = 2.0) -> list[dict[str, Any]]:
    """Differences between the live projections and a replay as of now; [] when they agree.

    Each attempt replays anew, so a service that was still catching up gets another chance.
    """
    found: list[dict[str, Any]] = []
    for attempt in range(attempts):
        if attempt:
            time.sleep(pause_s)
        result = replay(bootstrap, scope_at(), pattern)
        try:
            live_persons = _live_referral(services.referral, result.partial.persons)
            live_cells = _get(services.reporting, "/v1/kpis")["cells"]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            found = [{"projection": "live services", "problem": f"cannot read the live projections: {exc}"}]
            continue
        found = differences(result, live_persons, live_cells)
        if not found:
            return []
    return found


def run_chains(bootstrap: str, pattern: str, direct_agencies: Iterable[str]) -> ChainReport:
    return asyncio.run(check_chains(bootstrap, pattern, direct_agencies))
