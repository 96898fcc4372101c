"""Tracked consumer process counting applications per event id:
python -m tests.integration._procs.consumer_proc DB_URL BOOTSTRAP TOPIC DEADLETTER_TOPIC NAME."""

from __future__ import annotations

import asyncio
import signal
import sys

from kim.messaging import ConsumedEvent, TrackedConsumer
from kim.storage import Database, Transaction

PROJECTION = """CREATE TABLE IF NOT EXISTS applied (
    event_id TEXT PRIMARY KEY,
    n INTEGER NOT NULL)"""


def count(tx: Transaction, events: list[ConsumedEvent[dict]]) -> None:
    tx.executemany(
        "INSERT INTO applied (event_id, n) VALUES (?, 1) "
        "ON CONFLICT (event_id) DO UPDATE SET n = applied.n + 1",
        [(e.event["id"],) for e in events],
    )


async def main(db_url: str, bootstrap: str, topic: str, deadletter: str, name: str) -> None:
    database = Database.from_url(db_url, pool_size=1)
    database.ensure_schema([PROJECTION])
    consumer = TrackedConsumer(
        name,
        [topic],
        database,
        count,
        bootstrap_servers=bootstrap,
        deadletter_topic=deadletter,
        max_records=200,
    )
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, consumer.stop)
    await consumer.run()
    database.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
