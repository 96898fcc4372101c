"""The gateway's durable deduplication memory: every `(source, id)` it published."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from kim.storage import Database
from services.gateway.domain import Publishable

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS gateway_accepted_events (
        source TEXT NOT NULL,
        id TEXT NOT NULL,
        type TEXT NOT NULL,
        subject TEXT NOT NULL,
        accepted_at TEXT NOT NULL,
        PRIMARY KEY (source, id)
    )""",
)
# Stays below SQLite's limit of host parameters per statement.
_CHUNK = 400
# Rows per INSERT: one statement for many rows, as the worker thread running it
# waits for the event loop to hand back the GIL after every statement.
_ROWS = _CHUNK // 5


class SqlAcceptedEvents:
    def __init__(self, db: Database) -> None:
        self._db = db
        db.ensure_schema(SCHEMA)

    def known(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        by_source: dict[str, list[str]] = {}
        for source, event_id in set(keys):
            by_source.setdefault(source, []).append(event_id)
        found: set[tuple[str, str]] = set()
        with self._db.transaction(readonly=True) as tx:
            for source, ids in by_source.items():
                for start in range(0, len(ids), _CHUNK):
                    chunk = ids[start:start + _CHUNK]
                    tx.execute(
                        f"SELECT id FROM gateway_accepted_events WHERE source = ? AND id IN "
                        f"({', '.join('?' for _ in chunk)})",
                        [source, *chunk],
                    )
                    found.update((source, row[0]) for row in tx.fetchall())
        return found

    def record(self, events: Sequence[Publishable]) -> None:
        now = datetime.now(timezone.utc).isoformat()
        with self._db.transaction() as tx:
            for start in range(0, len(events), _ROWS):
                chunk = events[start:start + _ROWS]
                tx.execute(
                    "INSERT INTO gateway_accepted_events (source, id, type, subject, accepted_at) "
                    f"VALUES {', '.join('(?, ?, ?, ?, ?)' for _ in chunk)} ON CONFLICT (source, id) DO NOTHING",
                    [value for e in chunk for value in (*e.key, e.event.type, e.event.subject, now)],
                )
