"""The gateway's durable deduplication memory: every `(source, id)` it published."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from kim.storage import Database, Dialect
from services.gateway.domain import Publishable

_COLUMNS = ("source TEXT NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL, subject TEXT NOT NULL, "
            "accepted_at TEXT NOT NULL")


def schema(dialect: Dialect) -> tuple[str, ...]:
    if dialect == "postgresql":
        return (f"CREATE TABLE IF NOT EXISTS gateway_accepted_events ({_COLUMNS}, PRIMARY KEY (source, id))",)
    # On SQLite a log without a key: the gateway holds where each key is in memory. A key's index, in the
    # random order of event ids, made every recorded event write a page of its own (measured: 200,000 keys
    # recorded in 1,000 transactions took 3.3 CPU-s with the key, 0.4 CPU-s as a log).
    # `seq` names the rowid, so that it stays what it is (also through a VACUUM).
    return (f"CREATE TABLE IF NOT EXISTS gateway_accepted_events (seq INTEGER PRIMARY KEY, {_COLUMNS})",)


_INSERTED = "gateway_accepted_events (source, id, type, subject, accepted_at)"
# Stays below SQLite's limit of host parameters per statement.
_CHUNK = 400
# Rows per INSERT: one statement for many rows, as each statement costs a round trip to PostgreSQL
# (from a worker thread that waits for the event loop to hand back the GIL) and its own step on SQLite.
_ROWS = _CHUNK // 5


class SqlAcceptedEvents:
    """The table of accepted keys. On SQLite, whose file only this gateway process writes, the row of every
    key is also known in memory by the key's hash (read at start), so that fresh events, nearly all of them,
    need no query, and a repeat needs one row read by its rowid."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # SQLite commits without waiting for the disk (WAL, synchronous=NORMAL); a PostgreSQL server is
        # a round trip away.
        self.in_process = db.dialect == "sqlite"
        db.ensure_schema(schema(db.dialect))
        # hash of a key -> rowid of the first key recorded with that hash
        self._rows: dict[int, int] | None = None
        if db.dialect == "sqlite":
            with db.transaction(readonly=True) as tx:
                tx.execute("SELECT rowid, source, id FROM gateway_accepted_events ORDER BY rowid DESC")
                # In descending order, so that the first row of each hash is the one kept.
                self._rows = {hash((source, event_id)): rowid for rowid, source, event_id in tx.fetchall()}

    def may_know(self, keys: Sequence[tuple[str, str]]) -> bool:
        """Cheap and without the database: False when none of `keys` was ever recorded."""
        rows = self._rows
        return rows is None or any(hash(key) in rows for key in keys)

    def known(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        if self._rows is not None:
            return self._known_here(set(keys), self._rows)
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

    def _known_here(self, keys: set[tuple[str, str]], rows: dict[int, int]) -> set[tuple[str, str]]:
        candidates = [(key, rows[hash(key)]) for key in keys if hash(key) in rows]
        found: set[tuple[str, str]] = set()
        if not candidates:
            return found
        with self._db.transaction(readonly=True) as tx:
            for key, rowid in candidates:
                tx.execute("SELECT source, id FROM gateway_accepted_events WHERE rowid = ?", [rowid])
                if tx.fetchone() == key:
                    found.add(key)
                    continue
                # Another key with the same hash was recorded first (about once in 10^19 pairs): look it up.
                tx.execute("SELECT 1 FROM gateway_accepted_events WHERE source = ? AND id = ? LIMIT 1", list(key))
                if tx.fetchone() is not None:
                    found.add(key)
        return found

    def record(self, events: Sequence[Publishable]) -> None:
        now = datetime.now(timezone.utc).isoformat()
        recorded: list[tuple[int, tuple[str, str]]] = []
        with self._db.transaction() as tx:
            if self._rows is not None:
                tx.execute("SELECT coalesce(max(rowid), 0) FROM gateway_accepted_events")
                next_rowid = tx.fetchone()[0] + 1
            for start in range(0, len(events), _ROWS):
                chunk = events[start:start + _ROWS]
                values = ", ".join("(?, ?, ?, ?, ?)" for _ in chunk)
                params = [value for e in chunk for value in (*e.key, e.event.type, e.event.subject, now)]
                if self._rows is None:
                    tx.execute(f"INSERT INTO {_INSERTED} VALUES {values} ON CONFLICT (source, id) DO NOTHING", params)
                    continue
                # OR IGNORE: a store made before the log had the key, which a repeat would break.
                tx.execute(f"INSERT OR IGNORE INTO {_INSERTED} VALUES {values}", params)
                if tx.rowcount == len(chunk):
                    # Each row took the next rowid (the largest + 1; this process is the only writer). Known
                    # without RETURNING, which cost a third of the recording.
                    recorded += zip(range(next_rowid, next_rowid + len(chunk)), (e.key for e in chunk))
                    next_rowid += len(chunk)
                else:  # some key was there before (only in a store made with the key): read what was added
                    tx.execute("SELECT rowid, source, id FROM gateway_accepted_events WHERE rowid >= ? ORDER BY rowid",
                               [next_rowid])
                    added = tx.fetchall()
                    recorded += [(rowid, (source, event_id)) for rowid, source, event_id in added]
                    next_rowid = added[-1][0] + 1 if added else next_rowid
        if self._rows is not None:  # once committed: a key is remembered only when it is durable
            for rowid, key in recorded:
                self._rows.setdefault(hash(key), rowid)
