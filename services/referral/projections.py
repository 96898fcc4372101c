"""Read models of the referral service and their store.

The facts of every person are kept (the fold's input); whenever a person's facts
change or one of their deadlines passes, the person is recomputed with the pure
fold of `domain.compute` and their rows in the read models are replaced. The
derived events the state implies go into an outbox in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson

from contracts import ValidatedEvent
from kim.storage import Transaction, sortable
from contracts import parse_rfc3339, rfc3339
from services.referral.domain import DerivedEvent, Fact, PersonState

# Only these event types change responsibility; the fold ignores all others.
RELEVANT_EVENTS = frozenset({
    "CaseOpenedByAgency", "HandedOverToAgency", "HandoverAccepted", "HandoverRejected",
    "CaseClosedByAgency", "CaseClosed", "ResidenceTitleGranted", "LanguageLevelReached",
})

SCHEMA = (
    # Keyed by subject first: one index serves both the dedup and the per-person reads
    # ((source, id) never names two persons: the gateway dedups on it for ever). Not WITHOUT ROWID:
    # rows kept in key order would be read back faster, but each batch of facts, spread over all
    # persons, would dirty far more pages (measured: 35 % more CPU to store and checkpoint them).
    """CREATE TABLE IF NOT EXISTS referral_facts (
        subject TEXT NOT NULL, source TEXT NOT NULL, id TEXT NOT NULL, event_name TEXT NOT NULL,
        agency TEXT NOT NULL, time TEXT NOT NULL, recorded_time TEXT NOT NULL, data TEXT NOT NULL,
        PRIMARY KEY (subject, source, id))""",
    # `stale`: a version that every batch of new facts raises in magnitude, positive while the person waits
    # for a computation and negated by it (0: never had a version), so that a computation is stored only
    # if the version it read is still there; `next_deadline`: when time alone changes the state.
    """CREATE TABLE IF NOT EXISTS referral_persons (
        subject TEXT PRIMARY KEY, partition INTEGER NOT NULL, stale INTEGER NOT NULL, next_deadline TEXT,
        computed_at TEXT)""",
    "CREATE INDEX IF NOT EXISTS referral_persons_stale ON referral_persons (stale)",
    "CREATE INDEX IF NOT EXISTS referral_persons_deadline ON referral_persons (next_deadline)",
    """CREATE TABLE IF NOT EXISTS referral_involvement (
        subject TEXT NOT NULL, agency TEXT NOT NULL, PRIMARY KEY (subject, agency))""",
    "CREATE INDEX IF NOT EXISTS referral_involvement_agency ON referral_involvement (agency)",
    """CREATE TABLE IF NOT EXISTS referral_gaps (
        gap_id TEXT PRIMARY KEY, subject TEXT NOT NULL, area TEXT NOT NULL, since TEXT NOT NULL,
        until TEXT, last_agency TEXT NOT NULL, reason TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS referral_gaps_subject ON referral_gaps (subject)",
    """CREATE TABLE IF NOT EXISTS referral_handovers (
        subject TEXT NOT NULL, handover_id TEXT NOT NULL, kind TEXT NOT NULL, area TEXT NOT NULL,
        from_agency TEXT NOT NULL, to_agency TEXT NOT NULL, to_legal_domain TEXT NOT NULL,
        status TEXT NOT NULL, deadline TEXT, offered_at TEXT NOT NULL, resolved_at TEXT, rule TEXT,
        PRIMARY KEY (subject, handover_id))""",
    """CREATE TABLE IF NOT EXISTS referral_reviews (
        review_id TEXT PRIMARY KEY, subject TEXT NOT NULL, area TEXT NOT NULL, agency TEXT NOT NULL,
        held_since TEXT NOT NULL, due TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS referral_reviews_subject ON referral_reviews (subject)",
    """CREATE TABLE IF NOT EXISTS referral_outbox (
        event_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, subject TEXT NOT NULL, envelope TEXT NOT NULL,
        published INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS referral_outbox_unpublished ON referral_outbox (published, seq)",
    "CREATE INDEX IF NOT EXISTS referral_outbox_subject ON referral_outbox (subject)",
)

# Stays below SQLite's limit of host parameters per statement.
_CHUNK = 400


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]


def _marks(items: Sequence[object]) -> str:
    return ", ".join("?" for _ in items)


def _time(value: datetime | None) -> str | None:
    return rfc3339(value) if value is not None else None


def _subject_filter(subjects: Sequence[str] | None) -> tuple[list[str], list[object]]:
    if subjects is None:
        return [], []
    chosen = list(subjects)  # the API allows at most _CHUNK
    return [f"subject IN ({_marks(chosen)})"] if chosen else ["1 = 0"], list(chosen)


@dataclass(frozen=True)
class PersonRows:
    """One person's rows in every read model: the pure projection of a `PersonState`."""

    involvement: list[tuple[str, str]]
    gaps: list[tuple]
    handovers: list[tuple]
    reviews: list[tuple]


def person_rows(subject: str, state: PersonState) -> PersonRows:
    agencies = {i.agency for intervals in state.areas.values() for i in intervals}
    agencies |= {h.to_agency for h in state.handovers} | {h.from_agency for h in state.handovers}
    return PersonRows(
        involvement=sorted((subject, a) for a in agencies),
        gaps=[(g.gap_id, subject, g.area, rfc3339(g.since), _time(g.until), g.last_agency, g.reason)
              for g in state.gaps],
        handovers=[(subject, h.handover_id, h.kind, h.area, h.from_agency, h.to_agency, h.to_legal_domain,
                    h.status, _time(h.deadline), rfc3339(h.offered_at), _time(h.resolved_at), h.rule)
                   for h in state.handovers],
        reviews=[(r.review_id, subject, r.area, r.agency, rfc3339(r.held_since), rfc3339(r.due))
                 for r in state.reviews_due],
    )


FactRow = tuple[str, str, str, str, str, str, str, str]
"""The stored form of a fact: (source, id, subject, event_name, agency, time, recorded_time, data as JSON).
Times are kept as the producer wrote them (parsed on loading), so that the hot path of a catch-up
parses no dates; a plain tuple, as it comes back from the process that decodes."""
ROW_SUBJECT, ROW_EVENT_NAME = 2, 3


def fact_row(event: ValidatedEvent) -> FactRow:
    envelope = event.envelope
    return (envelope.source, envelope.id, envelope.subject, event.event_name, envelope.source.split(":")[2],
            envelope.time, envelope.recordedtime, orjson.dumps(envelope.data).decode())


def _fact(row: tuple) -> Fact:
    source, event_id, subject, event_name, agency, time, recorded, data = row
    return Fact((source, event_id), subject, event_name, agency, parse_rfc3339(time), parse_rfc3339(recorded), orjson.loads(data))


class ReferralStore:
    """SQL side of the read models; every method runs inside a caller's transaction."""

    @staticmethod
    def add_facts(tx: Transaction, rows: Sequence[FactRow]) -> None:
        tx.insert_many(
            "INSERT INTO referral_facts (source, id, subject, event_name, agency, time, recorded_time, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (subject, source, id) DO NOTHING",
            rows,
        )

    @staticmethod
    def mark_stale(tx: Transaction, partitions: dict[str, int]) -> None:
        tx.insert_many(
            "INSERT INTO referral_persons (subject, partition, stale) VALUES (?, ?, 1) ON CONFLICT (subject) "
            "DO UPDATE SET stale = ABS(referral_persons.stale) + 1, partition = excluded.partition",
            sorted(partitions.items()),
        )

    @staticmethod
    def any_stale(tx: Transaction, partitions: Sequence[int]) -> bool:
        if not partitions:
            return False
        tx.execute(f"SELECT 1 FROM referral_persons WHERE stale > 0 AND partition IN ({_marks(partitions)}) LIMIT 1",
                   list(partitions))
        return tx.fetchone() is not None

    @staticmethod
    def facts_of(tx: Transaction, subjects: Sequence[str]) -> dict[str, list[Fact]]:
        found: dict[str, list[Fact]] = {s: [] for s in subjects}
        for chunk in _chunks(list(subjects)):
            tx.execute(
                "SELECT source, id, subject, event_name, agency, time, recorded_time, data FROM referral_facts "
                f"WHERE subject IN ({_marks(chunk)})", chunk)
            for row in tx.fetchall():
                found[row[2]].append(_fact(row))
        return found

    @staticmethod
    def unchanged(tx: Transaction, due: dict[str, int]) -> dict[str, bool]:
        """The persons of `due` (subject → `stale` when read) that got no facts since, each with whether
        an earlier computation stored rows of theirs.

        On PostgreSQL their rows stay locked until the caller's transaction ends, so that no batch of
        facts can raise a version between this check and the write (SQLite's write transactions
        exclude each other anyway). Locked in subject order, as `mark_stale` does, so no deadlock."""
        lock = " ORDER BY subject FOR UPDATE" if tx.dialect == "postgresql" else ""
        found: dict[str, bool] = {}
        for chunk in _chunks(sorted(due)):
            tx.execute(f"SELECT subject, stale, computed_at IS NOT NULL FROM referral_persons "
                       f"WHERE subject IN ({_marks(chunk)}){lock}", chunk)
            found.update((subject, bool(computed)) for subject, stale, computed in tx.fetchall()
                         if stale == due[subject])
        return found

    @staticmethod
    def replace_persons(tx: Transaction, states: dict[str, PersonState], now: datetime,
                        computed_before: Sequence[str]) -> None:
        """`computed_before`: those of them that have rows (after a catch-up, most have none)."""
        subjects = list(computed_before)
        for table in ("referral_involvement", "referral_gaps", "referral_handovers", "referral_reviews"):
            for chunk in _chunks(subjects):
                tx.execute(f"DELETE FROM {table} WHERE subject IN ({_marks(chunk)})", chunk)
        rows = [person_rows(s, state) for s, state in states.items()]
        tx.insert_many("INSERT INTO referral_involvement (subject, agency) VALUES (?, ?)",
                       [r for p in rows for r in p.involvement])
        tx.insert_many("INSERT INTO referral_gaps (gap_id, subject, area, since, until, last_agency, reason) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", [r for p in rows for r in p.gaps])
        tx.insert_many(
            "INSERT INTO referral_handovers (subject, handover_id, kind, area, from_agency, to_agency, "
            "to_legal_domain, status, deadline, offered_at, resolved_at, rule) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [r for p in rows for r in p.handovers])
        tx.insert_many("INSERT INTO referral_reviews (review_id, subject, area, agency, held_since, due) "
                       "VALUES (?, ?, ?, ?, ?, ?)", [r for p in rows for r in p.reviews])
        computed = [(sortable(state.next_deadline) if state.next_deadline is not None else None, rfc3339(now), s)
                    for s, state in states.items()]
        if tx.dialect == "postgresql":  # one statement rather than one per person (see `insert_many`)
            tx.execute("UPDATE referral_persons AS p SET stale = -ABS(p.stale), next_deadline = v.deadline, "
                       "computed_at = v.computed FROM unnest(?::text[], ?::text[], ?::text[]) "
                       "AS v(deadline, computed, subject) WHERE p.subject = v.subject",
                       [list(column) for column in zip(*computed)] if computed else [[], [], []])
        else:
            tx.executemany("UPDATE referral_persons SET stale = -ABS(stale), next_deadline = ?, computed_at = ? "
                           "WHERE subject = ?", computed)

    @staticmethod
    def due_persons(tx: Transaction, now: datetime, partitions: Sequence[int] | None, limit: int) -> dict[str, int]:
        """Persons to recompute, with new facts or whose next deadline has passed: subject → `stale`."""
        sql = "SELECT subject, stale FROM referral_persons WHERE (stale > 0 OR next_deadline <= ?)"
        params: list[object] = [sortable(now)]
        if partitions is not None:
            if not partitions:
                return {}
            sql += f" AND partition IN ({_marks(partitions)})"
            params += list(partitions)
        tx.execute(sql + f" LIMIT {int(limit)}", params)
        return dict(tx.fetchall())

    @staticmethod
    def outbox_ids(tx: Transaction, subjects: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(list(subjects)):
            tx.execute(f"SELECT event_id FROM referral_outbox WHERE subject IN ({_marks(chunk)})", chunk)
            found.update(row[0] for row in tx.fetchall())
        return found

    @staticmethod
    def opened_gaps(tx: Transaction, subjects: Sequence[str]) -> dict[str, dict[str, dict]]:
        """Per subject: gap id → data of the JurisdictionGapOpened events in the outbox."""
        found: dict[str, dict[str, dict]] = {}
        for chunk in _chunks(list(subjects)):
            tx.execute(f"SELECT subject, envelope FROM referral_outbox WHERE subject IN ({_marks(chunk)}) "
                       "AND event_id LIKE 'JurisdictionGapOpened:%'", chunk)
            for subject, envelope in tx.fetchall():
                data = orjson.loads(envelope)["data"]
                found.setdefault(subject, {})[data["gap_id"]] = data
        return found

    @staticmethod
    def add_to_outbox(tx: Transaction, envelopes: Sequence[tuple[DerivedEvent, bytes]]) -> None:
        if not envelopes:
            return
        tx.execute("SELECT COALESCE(MAX(seq), 0) FROM referral_outbox")
        start = tx.fetchone()[0] + 1
        tx.insert_many(
            "INSERT INTO referral_outbox (event_id, seq, subject, envelope) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (event_id) DO NOTHING",
            [(event.event_id, start + i, event.subject, envelope.decode())
             for i, (event, envelope) in enumerate(envelopes)],
        )

    @staticmethod
    def unpublished(tx: Transaction, limit: int = 500) -> list[tuple[str, bytes]]:
        tx.execute(f"SELECT event_id, envelope FROM referral_outbox WHERE published = 0 ORDER BY seq LIMIT {int(limit)}")
        return [(event_id, envelope.encode()) for event_id, envelope in tx.fetchall()]

    @staticmethod
    def mark_published(tx: Transaction, event_ids: Sequence[str]) -> None:
        for chunk in _chunks(list(event_ids)):
            tx.execute(f"UPDATE referral_outbox SET published = 1 WHERE event_id IN ({_marks(chunk)})", chunk)

    # -- queries ---------------------------------------------------------------------

    @staticmethod
    def involved(tx: Transaction, subject: str, agency: str) -> bool:
        tx.execute("SELECT 1 FROM referral_involvement WHERE subject = ? AND agency = ?", [subject, agency])
        return tx.fetchone() is not None

    @staticmethod
    def gaps(tx: Transaction, status: str, agency: str | None, subjects: Sequence[str] | None = None) -> list[dict]:
        sql = "SELECT gap_id, subject, area, since, until, last_agency, reason FROM referral_gaps g"
        where, params = _subject_filter(subjects)
        if status == "open":
            where.append("until IS NULL")
        elif status == "closed":
            where.append("until IS NOT NULL")
        if agency is not None:
            where.append("EXISTS (SELECT 1 FROM referral_involvement i WHERE i.subject = g.subject AND i.agency = ?)")
            params.append(agency)
        if where:
            sql += " WHERE " + " AND ".join(where)
        tx.execute(sql, params)
        keys = ("gap_id", "subject", "area", "since", "until", "last_agency", "reason")
        gaps = [dict(zip(keys, row)) for row in tx.fetchall()]
        return sorted(gaps, key=lambda g: (datetime.fromisoformat(g["since"]), g["gap_id"]))

    @staticmethod
    def handovers(tx: Transaction, status: str | None, agency: str | None, involved_agency: str | None,
                  subjects: Sequence[str] | None = None) -> list[dict]:
        """`agency`: only handovers it sends or receives; `involved_agency`: only persons it is involved with."""
        sql = ("SELECT handover_id, kind, subject, area, from_agency, to_agency, status, deadline, offered_at "
               "FROM referral_handovers h")
        where, params = _subject_filter(subjects)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if agency is not None:
            where.append("(from_agency = ? OR to_agency = ?)")
            params += [agency, agency]
        if involved_agency is not None:
            where.append("EXISTS (SELECT 1 FROM referral_involvement i WHERE i.subject = h.subject AND i.agency = ?)")
            params.append(involved_agency)
        if where:
            sql += " WHERE " + " AND ".join(where)
        tx.execute(sql, params)
        keys = ("handover_id", "kind", "subject", "area", "from_agency", "to_agency", "status", "deadline",
                "offered_at")
        rows = sorted((dict(zip(keys, row)) for row in tx.fetchall()),
                      key=lambda h: (datetime.fromisoformat(h["offered_at"]), h["subject"], h["handover_id"]))
        for row in rows:
            del row["offered_at"]
        return rows
