"""Outbox relay process:
python -m tests.integration._procs.relay_proc DB_URL BOOTSTRAP TOPIC NAME CRASH_AFTER

CRASH_AFTER > 0 makes the process SIGKILL itself right after the broker
acknowledged its CRASH_AFTER-th batch and before the relay position is stored:
the one moment where a crash forces a republish.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from kim.messaging import EventProducer, OutboxRelay
from kim.storage import Database, eventsourcing_env
from tests.integration._procs.ledger import Ledger, to_envelope


class CrashingProducer(EventProducer):
    def __init__(self, bootstrap: str, crash_after: int) -> None:
        super().__init__(bootstrap)
        self.batches_left = crash_after

    async def send_batch(self, topic: str, envelopes: Sequence[Mapping[str, Any]]) -> None:
        await super().send_batch(topic, envelopes)
        self.batches_left -= 1
        if self.batches_left == 0:
            os.kill(os.getpid(), signal.SIGKILL)


async def main(db_url: str, bootstrap: str, topic: str, name: str, crash_after: str) -> None:
    app = Ledger(env=eventsourcing_env(db_url))
    database = Database.from_url(db_url, pool_size=1)
    async with CrashingProducer(bootstrap, int(crash_after)) as producer:
        relay = OutboxRelay(name, app, topic, to_envelope, producer, database, batch_size=50)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, relay.stop)
        await relay.run()
    database.close()
    app.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
