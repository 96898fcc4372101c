"""Read models of the caseplan service and their SQL.

- `caseplan_events`: every event about a person from every agency topic and the
  referral service's derived events, stored as published (the timeline's source).
- `caseplan_summaries`: per person, the `caseload.PersonSummary` of those events,
  recomputed in the consumer's transaction whenever the person's events change.
- `caseplan_caseload`: persons a case manager took on (registered, drafted or signed
  a plan for) through this service.
- `caseplan_access_log`: auditors' reads of timelines (§6: every read recorded).
- the shared consent tables of `kim.consent`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson

from contracts import ValidatedEvent
from kim.consent import CONSENT_SCHEMA, record_consent_events
from kim.messaging import ConsumedEvent
from kim.storage import Transaction, sortable
from services.caseplan.caseload import PersonSummary, summarise

SCHEMA: tuple[str, ...] = (
    *CONSENT_SCHEMA,
    """CREATE TABLE IF NOT EXISTS caseplan_events (
        source TEXT NOT NULL, id TEXT NOT NULL, subject TEXT NOT NULL, agency TEXT,
        time_key TEXT NOT NULL, recorded_key TEXT NOT NULL, envelope TEXT NOT NULL,
        PRIMARY KEY (source, id))""",
    "CREATE INDEX IF NOT EXISTS caseplan_events_subject ON caseplan_events (subject, time_key)",
    """CREATE TABLE IF NOT EXISTS caseplan_summaries (
        subject TEXT PRIMARY KEY, summary TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS caseplan_caseload (
        sub TEXT NOT NULL, agency TEXT NOT NULL, subject TEXT NOT NULL, since TEXT NOT NULL, reason TEXT NOT NULL,
        PRIMARY KEY (sub, subject))""",
    """CREATE TABLE IF NOT EXISTS caseplan_access_log (
        at TEXT NOT NULL, reader_sub TEXT NOT NULL, reader_agency TEXT NOT NULL, roles TEXT NOT NULL,
        subject TEXT NOT NULL, action TEXT NOT NULL, purpose TEXT)""",
    "CREATE INDEX IF NOT EXISTS caseplan_access_log_subject ON caseplan_access_log (subject, at)",
)

# Stays below SQLite's limit of host parameters per statement.
_CHUNK = 400


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]


def _marks(items: Sequence[object]) -> str:
    return ", ".join("?" for _ in items)


class CaseplanStore:
    """SQL side of the read models; every method runs inside a caller's transaction."""

    @staticmethod
    def apply(tx: Transaction, consumed: Sequence[ConsumedEvent[ValidatedEvent[Any]]]) -> None:
        """Handler of the tracked consumer: store the events, the consents, and re-summarise their persons."""
        events = [c.event for c in consumed]
        tx.executemany(
            "INSERT INTO caseplan_events (source, id, subject, agency, time_key, recorded_key, envelope) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, id) DO NOTHING",
            [(e.source, e.id, e.subject, e.agency.value if e.agency else None, sortable(e.effective_time),
              sortable(e.recorded_time), e.to_json_bytes().decode()) for e in events])
        record_consent_events(tx, [e for e in events if e.agency is not None])
        subjects = sorted({e.subject for e in events})
        envelopes = CaseplanStore.envelopes_of(tx, subjects)
        tx.upsert("caseplan_summaries", ["subject"],
                  [{"subject": s, "summary": summarise(envelopes[s]).to_json()}
                   for s in subjects])

    @staticmethod
    def envelopes_of(tx: Transaction, subjects: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """The persons' events as published, in timeline order (effective, recorded time, id)."""
        found: dict[str, list[dict[str, Any]]] = {s: [] for s in subjects}
        for chunk in _chunks(list(subjects)):
            tx.execute(f"SELECT subject, envelope FROM caseplan_events WHERE subject IN ({_marks(chunk)}) "
                       "ORDER BY subject, time_key, recorded_key, id", chunk)
            for subject, envelope in tx.fetchall():
                found[subject].append(orjson.loads(envelope))
        return found

    @staticmethod
    def summaries(tx: Transaction, subjects: Sequence[str] | None = None) -> dict[str, PersonSummary]:
        """Summaries of these persons (those known), or of every person."""
        rows: list[tuple[str, str]] = []
        if subjects is None:
            rows = tx.execute("SELECT subject, summary FROM caseplan_summaries").fetchall()
        else:
            for chunk in _chunks(list(subjects)):
                rows += tx.execute(f"SELECT subject, summary FROM caseplan_summaries WHERE subject IN "
                                   f"({_marks(chunk)})", chunk).fetchall()
        return {subject: PersonSummary.from_json(summary) for subject, summary in rows}

    @staticmethod
    def take_on(tx: Transaction, sub: str, agency: str, subject: str, reason: str, at: datetime) -> None:
        """Put a person on a case manager's caseload (kept if already there)."""
        tx.execute("INSERT INTO caseplan_caseload (sub, agency, subject, since, reason) VALUES (?, ?, ?, ?, ?) "
                   "ON CONFLICT (sub, subject) DO NOTHING", [sub, agency, subject, sortable(at), reason])

    @staticmethod
    def taken_on_by(tx: Transaction, sub: str, agency: str) -> list[str]:
        tx.execute("SELECT subject FROM caseplan_caseload WHERE sub = ? AND agency = ? ORDER BY since",
                   [sub, agency])
        return [row[0] for row in tx.fetchall()]

    @staticmethod
    def record_access(tx: Transaction, at: datetime, sub: str, agency: str, roles: Iterable[str], subject: str,
                      action: str, purpose: str | None) -> None:
        tx.execute("INSERT INTO caseplan_access_log (at, reader_sub, reader_agency, roles, subject, action, purpose) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)",
                   [sortable(at), sub, agency, " ".join(sorted(roles)), subject, action, purpose])

    @staticmethod
    def access_log(tx: Transaction, subject: str | None) -> list[tuple]:
        sql = "SELECT at, reader_sub, reader_agency, roles, subject, action, purpose FROM caseplan_access_log"
        params: list[str] = []
        if subject is not None:
            sql += " WHERE subject = ?"
            params.append(subject)
        return tx.execute(sql + " ORDER BY at", params).fetchall()
