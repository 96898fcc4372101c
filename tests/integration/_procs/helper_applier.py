"""The projection a consumer's helper process applies in the helper test: each event with the process
that applied it, so the test can tell the helper's work from the consumer's own."""

from __future__ import annotations

import os

from kim.messaging import ConsumedEvent, serve_batches
from kim.storage import Database, Transaction

PROJECTION = "CREATE TABLE IF NOT EXISTS applied_in (event_id TEXT PRIMARY KEY, pid INTEGER NOT NULL)"


def record_process(tx: Transaction, events: list[ConsumedEvent[dict]]) -> None:
    tx.executemany("INSERT INTO applied_in (event_id, pid) VALUES (?, ?)",
                   [(e.event["id"], os.getpid()) for e in events])


def serve(db_url: str, name: str) -> None:
    """The helper's initializer."""
    serve_batches(name, Database.from_url(db_url, pool_size=1), record_process)


def applied_in(database: Database) -> dict[str, int]:
    with database.transaction(readonly=True) as tx:
        return dict(tx.execute("SELECT event_id, pid FROM applied_in").fetchall())
