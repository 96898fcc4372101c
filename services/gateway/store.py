"""The gateway's durable deduplication memory: every `(source, id)` it published."""

from __future__ import annotations

import threading
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
    """The table of accepted keys. On SQLite, whose file only this gateway process writes, the hashes of all
    keys are also held in memory (read at start), so that fresh events, nearly all of them, need no query."""

    def __init__(self, db: Database) -> None:
        self._db = db
        db.ensure_schema(SCHEMA)
        # One recording at a time: on SQLite a second writer would wait in its busy handler,
        # which sleeps in steps of up to 100 ms, instead of right after the first commits.
        self._writing = threading.Lock()
        self._hashes: set[int] | None = None
        if db.dialect == "sqlite":
            with db.transaction(readonly=True) as tx:
                tx.execute("SELECT source, id FROM gateway_accepted_events")
                self._hashes = {hash((source, event_id)) for source, event_id in tx.fetchall()}

    def may_know(self, keys: Sequence[tuple[str, str]]) -> bool:
        """Cheap and without the database: False when none of `keys` was ever recorded."""
        hashes = self._hashes
        return hashes is None or any(hash(key) in hashes for key in keys)

    def known(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        hashes = self._hashes
        by_source: dict[str, list[str]] = {}
        for source, event_id in set(keys):
            if hashes is not None and hash((source, event_id)) not in hashes:
                continue
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
        with self._writing, self._db.transaction() as tx:
            for start in range(0, len(events), _ROWS):
                chunk = events[start:start + _ROWS]
                tx.execute(
                    "INSERT INTO gateway_accepted_events (source, id, type, subject, accepted_at) "
                    f"VALUES {', '.join('(?, ?, ?, ?, ?)' for _ in chunk)} ON CONFLICT (source, id) DO NOTHING",
                    [value for e in chunk for value in (*e.key, e.event.type, e.event.subject, now)],
                )
        if self._hashes is not None:  # once committed: a key is remembered only when it is durable
            self._hashes.update(hash(e.key) for e in events)
