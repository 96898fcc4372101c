"""Consent projection shared by the services that show person data (§6).

Every agency topic is folded into two tables: the consent events of each person
(`ConsentRecorded`, `ConsentWithdrawn`, from any emitter) and the agency that
registered the person (`PersonRegistered`). Whether a consent shares a person
with an agency at an instant is the pure fold `in_force`.

The rule of §6: an agency always sees what it emitted; the registering agency
sees the person; every other agency sees other agencies' events and the
personal data only while a consent of the person shares with it. Auditors see
everything (each read of person data recorded by the service that serves it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

import orjson

from contracts import ValidatedEvent
from contracts.events import ConsentRecorded, ConsentWithdrawn, PersonRegistered
from kim.storage import Transaction, sortable

# `valid_until` is a calendar date of the district: it ends at midnight in Germany.
DISTRICT_TZ = ZoneInfo("Europe/Berlin")

CONSENT_SCHEMA: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS kim_consents (
        source TEXT NOT NULL,
        id TEXT NOT NULL,
        subject TEXT NOT NULL,
        agency TEXT NOT NULL,
        kind TEXT NOT NULL,
        time TEXT NOT NULL,
        recorded_time TEXT NOT NULL,
        shared_with TEXT NOT NULL,
        purposes TEXT NOT NULL,
        valid_until TEXT,
        PRIMARY KEY (source, id))""",
    "CREATE INDEX IF NOT EXISTS kim_consents_subject ON kim_consents (subject)",
    """CREATE TABLE IF NOT EXISTS kim_person_registrations (
        subject TEXT PRIMARY KEY,
        registered_by TEXT NOT NULL,
        time TEXT NOT NULL,
        source TEXT NOT NULL,
        id TEXT NOT NULL)""",
)

ConsentKind = Literal["recorded", "withdrawn"]

# What `record_consent_events` uses (a consumer may decode only these: `TrackedConsumer(event_types=…)`).
CONSENT_EVENT_TYPES = frozenset(m.event_type for m in (ConsentRecorded, ConsentWithdrawn, PersonRegistered))


@dataclass(frozen=True)
class ConsentFact:
    """One ConsentRecorded or ConsentWithdrawn of a person, as published."""

    source: str
    id: str
    agency: str  # the emitter
    kind: ConsentKind
    time: datetime  # effective time, UTC
    recorded_time: datetime
    shared_with: tuple[str, ...]
    purposes: tuple[str, ...] = ()  # recorded only
    valid_until: date | None = None  # recorded only; inclusive

    @property
    def key(self) -> tuple[str, str]:
        return self.source, self.id


@dataclass(frozen=True)
class Visibility:
    registered_by: str | None  # agency of the person's PersonRegistered; None: not seen yet
    shared: bool  # a consent shares the person with the viewer now
    purposes: tuple[str, ...]  # of the consents in force for the viewer

    def personal_data_visible_to(self, agency: str) -> bool:
        return agency == self.registered_by or self.shared


# ---- the pure fold ---------------------------------------------------------------

def valid_on(fact: ConsentFact, now: datetime) -> bool:
    """`valid_until` not passed at `now` (the whole day counts, district time)."""
    return fact.valid_until is None or now.astimezone(DISTRICT_TZ).date() <= fact.valid_until


def in_force(facts: Iterable[ConsentFact], agency: str, now: datetime) -> list[ConsentFact]:
    """The consents that share the person with `agency` at `now`, by time.

    A consent counts from its effective time until a withdrawal naming the
    agency takes effect after it, or until its `valid_until` day has ended.
    """
    facts = [f for f in facts if f.time <= now and agency in f.shared_with]
    withdrawals = [f.time for f in facts if f.kind == "withdrawn"]
    return sorted(
        (f for f in facts
         if f.kind == "recorded" and valid_on(f, now) and not any(w > f.time for w in withdrawals)),
        key=lambda f: (f.time, f.source, f.id),
    )


def purposes_of(consents: Iterable[ConsentFact]) -> tuple[str, ...]:
    """Purposes of these consents, each once, in the order they were first given."""
    return tuple(dict.fromkeys(p for c in consents for p in c.purposes))


def fold(registered_by: str | None, facts: Sequence[ConsentFact], viewer_agency: str,
         now: datetime) -> Visibility:
    consents = in_force(facts, viewer_agency, now)
    return Visibility(registered_by, bool(consents), purposes_of(consents))


def fact_of(event: ValidatedEvent[Any]) -> ConsentFact | None:
    """The consent fact an event carries; None for other event types."""
    data = event.data
    if not isinstance(data, (ConsentRecorded, ConsentWithdrawn)):
        return None
    recorded = isinstance(data, ConsentRecorded)
    return ConsentFact(
        source=event.source, id=event.id, agency=event.agency.value if event.agency else "",
        kind="recorded" if recorded else "withdrawn", time=event.effective_time,
        recorded_time=event.recorded_time, shared_with=tuple(a.value for a in data.shared_with),
        purposes=tuple(data.purposes) if recorded else (), valid_until=data.valid_until if recorded else None)


# ---- the store -----------------------------------------------------------------------

def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def record_consent_events(tx: Transaction, events: Sequence[ValidatedEvent[Any]]) -> None:
    """Store the consent facts and registering agencies these events carry.

    Any emitter, any agency topic; other event types are ignored and a repeat
    changes nothing, so it can run in any consumer's transaction.
    """
    rows = []
    registrations = []
    for event in events:
        fact = fact_of(event)
        if fact is not None:
            rows.append((fact.source, fact.id, event.subject, fact.agency, fact.kind, sortable(fact.time),
                         sortable(fact.recorded_time), orjson.dumps(fact.shared_with).decode(),
                         orjson.dumps(fact.purposes).decode(),
                         fact.valid_until.isoformat() if fact.valid_until else None))
        elif isinstance(event.data, PersonRegistered) and event.agency is not None:
            registrations.append((event.subject, event.agency.value, sortable(event.effective_time),
                                  event.source, event.id))
    tx.executemany(
        "INSERT INTO kim_consents (source, id, subject, agency, kind, time, recorded_time, shared_with, "
        "purposes, valid_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (source, id) DO NOTHING",
        rows,
    )
    # Should a person be registered twice, the earliest registration counts,
    # whatever order the events arrive in.
    tx.executemany(
        "INSERT INTO kim_person_registrations (subject, registered_by, time, source, id) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (subject) DO UPDATE SET registered_by = excluded.registered_by, time = excluded.time, "
        "source = excluded.source, id = excluded.id "
        "WHERE (excluded.time, excluded.source, excluded.id) < "
        "(kim_person_registrations.time, kim_person_registrations.source, kim_person_registrations.id)",
        registrations,
    )


def consent_facts(tx: Transaction, subject: str) -> list[ConsentFact]:
    """Every consent fact of the person, by effective time."""
    tx.execute(
        "SELECT source, id, agency, kind, time, recorded_time, shared_with, purposes, valid_until "
        "FROM kim_consents WHERE subject = ? ORDER BY time, source, id", [subject])
    return [ConsentFact(source, id_, agency, kind, _instant(time), _instant(recorded),
                        tuple(orjson.loads(shared)), tuple(orjson.loads(purposes)),
                        date.fromisoformat(valid_until) if valid_until else None)
            for source, id_, agency, kind, time, recorded, shared, purposes, valid_until in tx.fetchall()]


def registered_by(tx: Transaction, subject: str) -> str | None:
    tx.execute("SELECT registered_by FROM kim_person_registrations WHERE subject = ?", [subject])
    row = tx.fetchone()
    return row[0] if row else None


def visibility(tx: Transaction, subject: str, viewer_agency: str, now: datetime) -> Visibility:
    """What the consents of `subject` allow `viewer_agency` at `now`."""
    return fold(registered_by(tx, subject), consent_facts(tx, subject), viewer_agency, now)
