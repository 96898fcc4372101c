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
# Rows per INSERT on SQLite: one statement for many rows, as each statement costs its own step (PostgreSQL
# takes all rows of a recording in one statement: `Transaction.insert_many`). 5 parameters a row: 400 in
# all, below SQLite's limit of host parameters per statement.
_ROWS = 80
# PostgreSQL: the planner's statistics of the table are refreshed once it has grown by this many rows,
# or by as many as it held at the last refresh if that is more.
_ANALYSE_AFTER = 10_000


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
        # PostgreSQL: rows the table held at the last refresh of its statistics, and rows recorded since.
        self._rows_analysed = 0
        self._recorded_since = 0
        if db.dialect == "postgresql":
            self._refresh_statistics()
        if db.dialect == "sqlite":
            with db.transaction(readonly=True) as tx:
                tx.execute("SELECT rowid, source, id FROM gateway_accepted_events ORDER BY rowid DESC")
                # In descending order, so that the first row of each hash is the one kept.
                self._rows = {hash((source, event_id)): rowid for rowid, source, event_id in tx.fetchall()}

    def _refresh_statistics(self) -> None:
        """PostgreSQL plans the lookup of keys by its statistics of the table, which autovacuum refreshes
        a minute or more after the table grew. Without them it took the keys of one source for few and
        read all of that source's keys for every group (measured on 250,000 keys: 49 ms per 400 keys
        looked up, 2 ms with statistics; a new store took 2,600 events/s)."""
        with self._db.transaction() as tx:
            tx.refresh_statistics("gateway_accepted_events")
            tx.execute("SELECT reltuples FROM pg_class WHERE oid = 'gateway_accepted_events'::regclass")
            self._rows_analysed = max(0, int(tx.fetchone()[0]))
        self._recorded_since = 0

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
        with self._db.transaction(readonly=True) as tx:  # PostgreSQL: one short statement per source
            for source, ids in by_source.items():
                tx.execute("SELECT id FROM gateway_accepted_events WHERE source = ? AND id = ANY(?)", [source, ids])
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
        rows = self._rows
        if rows is None:  # PostgreSQL
            with self._db.transaction() as tx:
                tx.insert_many(f"INSERT INTO {_INSERTED} VALUES (?, ?, ?, ?, ?) ON CONFLICT (source, id) DO NOTHING",
                               [(*e.key, e.event.type, e.event.subject, now) for e in events])
            self._recorded_since += len(events)
            if self._recorded_since >= max(_ANALYSE_AFTER, self._rows_analysed):
                self._refresh_statistics()
            return
        recorded: list[tuple[int, tuple[str, str]]] = []
        with self._db.transaction() as tx:
            tx.execute("SELECT coalesce(max(rowid), 0) FROM gateway_accepted_events")
            next_rowid = tx.fetchone()[0] + 1
            for start in range(0, len(events), _ROWS):
                chunk = events[start:start + _ROWS]
                values = ", ".join("(?, ?, ?, ?, ?)" for _ in chunk)
                params = [value for e in chunk for value in (*e.key, e.event.type, e.event.subject, now)]
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
        for rowid, key in recorded:  # once committed: a key is remembered only when it is durable
            rows.setdefault(hash(key), rowid)
