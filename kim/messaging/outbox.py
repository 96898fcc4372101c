"""Outbox relay: publish an eventsourcing Application's events to Kafka.

At-least-once: a batch of notifications is published and acknowledged before
the relay position moves past it, so a crash in between republishes the
batch. Event ids are derived from (originator id, version), so a republished
event carries the same id and tracked consumers drop it. The relayed events
carry the hash chain of the producer, or the one named by ``chain`` (see
`kim.messaging.chain`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.application import Application
from eventsourcing.domain import DomainEventProtocol

from kim.messaging.producer import EventProducer, PublishFailed
from kim.storage import Database

log = logging.getLogger(__name__)

POSITIONS_TABLE = "kim_relay_positions"
SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {POSITIONS_TABLE} (
        relay_name TEXT PRIMARY KEY,
        notification_id BIGINT NOT NULL)""",
)

# Fixed namespace of KIM event ids (a random UUID, chosen once, never change it).
EVENT_ID_NAMESPACE = UUID("6a4bd0d2-4f9e-4f57-9a8a-2f1c1e0b7d35")

Mapper = Callable[[DomainEventProtocol[Any], str], Mapping[str, Any] | None]
"""(domain event, event id) -> CloudEvent envelope, or None to not publish it.

Must be deterministic: a republished event has to look the same.
"""


def derive_event_id(namespace: str, originator_id: UUID | str, originator_version: int) -> str:
    """Stable CloudEvent id of an aggregate event, unique per ``namespace``."""
    return str(uuid5(EVENT_ID_NAMESPACE, f"{namespace}/{originator_id}/{originator_version}"))


class OutboxRelay:
    """Relays ``application``'s notification log to ``topic``.

    The relay position lives in ``positions`` (normally the application's
    own database) under ``name``; ``name`` is also the namespace of the
    derived event ids, so keep it stable. ``chain`` names the hash chain of the
    relayed events (stable across restarts, one relay only); default: the
    producer's chain.
    """

    def __init__(
        self,
        name: str,
        application: Application[Any],
        topic: str,
        mapper: Mapper,
        producer: EventProducer,
        positions: Database,
        *,
        batch_size: int = 500,
        poll_interval: float = 0.1,
        retry_interval: float = 1.0,
        chain: str | None = None,
    ) -> None:
        self.name = name
        self.chain = chain
        self.application = application
        self.topic = topic
        self.mapper = mapper
        self.producer = producer
        self.positions = positions
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.retry_interval = retry_interval
        self._position: int | None = None
        self._stopping = False
        self._wake = asyncio.Event()

    def load_position(self) -> int:
        """Id of the last notification relayed (0: none). Blocking."""
        self.positions.ensure_schema(SCHEMA)
        with self.positions.transaction(readonly=True) as tx:
            row = tx.execute(
                f"SELECT notification_id FROM {POSITIONS_TABLE} WHERE relay_name = ?",
                [self.name],
            ).fetchone()
        return row[0] if row else 0

    async def relay_once(self) -> int:
        """Publish the next batch; returns how many notifications it read."""
        if self._position is None:
            self._position = await asyncio.to_thread(self.load_position)
        notifications = await asyncio.to_thread(self._read_batch, self._position)
        if not notifications:
            return 0
        last_id, envelopes = notifications[-1][0], [e for _, e in notifications if e is not None]
        if self.chain is None:
            await self.producer.send_batch(self.topic, envelopes)
        else:
            await self.producer.send_batch(self.topic, envelopes, chain=self.chain)
        await asyncio.to_thread(self._store_position, last_id)
        self._position = last_id
        return len(notifications)

    def wake(self) -> None:
        """Relay now instead of at the next poll (call after saving events)."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Relay until ``stop()``; Kafka outages are waited out."""
        while not self._stopping:
            self._wake.clear()
            try:
                covered = await self.relay_once()
            except PublishFailed:
                log.warning("%s: Kafka unavailable, retrying", self.name, exc_info=True)
                covered, delay = 0, self.retry_interval
            else:
                delay = self.poll_interval
            if covered == 0 and not self._stopping:
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except TimeoutError:
                    pass  # the poll interval elapsed without a wake-up

    def _read_batch(self, after: int) -> list[tuple[int, Mapping[str, Any] | None]]:
        """(notification id, envelope or None) of the notifications after ``after``."""
        batch = []
        for notification in self.application.recorder.select_notifications(
            start=after, limit=self.batch_size, inclusive_of_start=False
        ):
            event = self.application.mapper.to_domain_event(notification)
            event_id = derive_event_id(
                self.name, notification.originator_id, notification.originator_version
            )
            batch.append((notification.id, self.mapper(event, event_id)))
        return batch

    def _store_position(self, notification_id: int) -> None:
        with self.positions.transaction() as tx:
            # Never moves backwards, even if two relays run by mistake.
            tx.execute(
                f"INSERT INTO {POSITIONS_TABLE} (relay_name, notification_id) VALUES (?, ?) "
                "ON CONFLICT (relay_name) DO UPDATE SET notification_id = excluded.notification_id "
                f"WHERE {POSITIONS_TABLE}.notification_id < excluded.notification_id",
                [self.name, notification_id],
            )


class RelayGroup:
    """A service's relays, run as tasks, woken from any thread, stopped together."""

    def __init__(self, relays: Sequence[OutboxRelay]) -> None:
        self.relays = list(relays)
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> list[asyncio.Task[None]]:
        self._loop = asyncio.get_running_loop()
        return [asyncio.create_task(relay.run(), name=f"outbox-{relay.name}") for relay in self.relays]

    def wake(self) -> None:
        """Publish soon; safe from the worker threads that run the use cases."""
        assert self._loop is not None, "start() first"
        for relay in self.relays:
            self._loop.call_soon_threadsafe(relay.wake)

    def stop(self) -> None:
        for relay in self.relays:
            relay.stop()
