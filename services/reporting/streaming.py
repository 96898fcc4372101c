"""The reporting service's faust-streaming application: every event topic in, a table of kept events.

Two changes to faust's defaults, both in the consumer:

- Records reach the application in whole fetched batches instead of one by one.
  faust wraps every record in a message, tracks it, hands it to a stream through
  several event-loop round trips and tasks and acknowledges it one by one (a few
  thousand records/s at best on this machine: the bottleneck); here a fetched
  batch goes as it is to the handler, and its offsets are acknowledged in bulk,
  so faust still commits them (at least once).
- Only committed records are read (`read_committed`): the gateway writes in
  Kafka transactions, and an aborted batch must not count.

The table `<app id>-events` keeps the events the figures read, as they were
published: a changelog record per batch and partition, keyed afresh so that
nothing is overwritten. At start faust restores it from its changelog topic and
the figures are recomputed from it. Replays after a crash only repeat events,
which a person's log drops by `(source, id)`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

log = logging.getLogger(__name__)

BatchHandler = Callable[[Sequence[Any]], Awaitable[None]]
"""Receives a batch of Kafka records (`topic`, `partition`, `offset`, `key`, `value`, `headers`) of the
source topics, in partition order."""


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # faust reads committed records only with exactly-once processing; we need it always.
        consumer._isolation_level = "read_committed"
        # faust asks the broker to hold a fetch up to 1.5 s when it has nothing new: a
        # fetch for partitions read to their end then stalls the partitions still being read.
        consumer._fetch_max_wait_ms = 100
        return consumer

    def highwater(self, tp: TP) -> int:
        # Committed records only: a partition ends at its last stable offset.
        return self._ensure_consumer().last_stable_offset(tp)


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - replaces faust's loop
        app: ReportingFaust = self.app  # type: ignore[assignment]
        # One batch is handled while the next is fetched and started, so that validation in the
        # worker processes overlaps the rest of the previous batch's handling.
        in_flight: tuple[list[Any], asyncio.Future[None]] | None = None
        try:
            while not (self._stopped.is_set() or fetcher._stopped.is_set()):
                records, active = await self._wait_next_records(1.0)
                batch: list[Any] = []
                if records and not self.should_stop:
                    if self.flow_active:
                        batch = await self._take(app, records, active)
                    else:  # as faust's getmany: a rebalance is under way
                        await self.perform_seek()
                started = (batch, asyncio.ensure_future(app.handle_batch(batch))) if batch else None
                if in_flight is not None:
                    await self._finish(*in_flight)
                in_flight = started
                await asyncio.sleep(0)
        finally:
            if in_flight is not None:
                await self._finish(*in_flight)

    async def _take(self, app: ReportingFaust, records: Any, active: set[TP] | None) -> list[Any]:
        """The source-topic records of a fetch, in partition order; changelog records go faust's way."""
        read_offset = self._read_offset
        batch = []
        for tp, tp_records in records.items():
            if active is not None and tp not in active and tp not in self._buffered_partitions:
                continue
            source = tp.topic in app.source_topics
            for record in tp_records:
                previous = read_offset[tp]
                if previous is not None and record.offset < previous:
                    continue  # fetched before a seek took effect
                if previous is not None and record.offset - previous > 1:
                    # Transaction markers take offsets: let the commit pass over them.
                    await self._add_gap(tp, previous + 1, record.offset)
                read_offset[tp] = record.offset
                if source:
                    batch.append(record)
                else:  # table changelogs during recovery
                    await self.wait_first(self.callback(self._to_message(tp, record)), self.suspend_flow.wait())
        return batch

    async def _finish(self, batch: list[Any], handled: asyncio.Future[None]) -> None:
        """Acknowledge a handled batch, so that faust commits its offsets (at least once)."""
        await handled
        offsets: dict[TP, list[int]] = defaultdict(list)
        for record in batch:
            offsets[TP(record.topic, record.partition)].append(record.offset)
        for tp, numbers in offsets.items():
            committed = self._committed_offset[tp]
            index = self._acked_index[tp]
            fresh = [n for n in numbers if (committed is None or n >= committed) and n not in index]
            self._acked[tp].extend(fresh)
            index.update(fresh)
            self._n_acked += len(fresh)
        if self._commit_every is not None and self._n_acked >= self._commit_every:
            self._n_acked = 0
            await self.commit()


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class ReportingFaust(faust.App):
    """A faust App whose source topics are consumed in batches by `handle_batch`."""

    source_topics: frozenset[str] = frozenset()
    batch_handler: BatchHandler | None = None

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)

    async def handle_batch(self, messages: Sequence[Any]) -> None:
        assert self.batch_handler is not None
        await self.batch_handler(messages)


def broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{address.strip()}" for address in bootstrap.split(",") if address.strip()]


def create_faust_app(app_id: str, bootstrap: str, topics: Sequence[str], partitions: int, replication_factor: int,
                     datadir: str) -> tuple[ReportingFaust, Any]:
    """The faust app consuming `topics` and its table of kept events (`<app id>-events-changelog`)."""
    for name in ("faust", "mode", "aiokafka"):
        logging.getLogger(name).setLevel(logging.WARNING)
    app = ReportingFaust(
        app_id,
        broker=broker_urls(bootstrap),
        web_enabled=False,  # the FastAPI app serves HTTP
        store="memory://",
        datadir=datadir,
        autodiscover=False,
        topic_partitions=partitions,
        topic_replication_factor=replication_factor,
        consumer_auto_offset_reset="earliest",
        broker_max_poll_records=5000,
        stream_wait_empty=False,
        key_serializer="raw",
        value_serializer="raw",
    )
    app.source_topics = frozenset(topics)
    app.topics.add(app.topic(*topics, key_type=bytes, value_type=bytes))
    # Keys and values are raw bytes: the app's serializers are "raw".
    table = app.Table("events", default=None, partitions=partitions, key_type=bytes, value_type=bytes)
    return app, table


def store_batch(table: Any, partition: int, value: bytes) -> None:
    """One changelog record with a batch of kept events of one partition; a fresh key, so nothing is overwritten."""
    key = f"{partition}-{uuid.uuid4().hex}".encode()
    table.data[key] = value
    table.send_changelog(partition, key, value, key_serializer="raw", value_serializer="raw")


async def lagging(app: ReportingFaust) -> bool:
    """Whether some source partition has committed records the consumer has not fetched yet."""
    for tp in app.consumer.assignment():
        if tp.topic in app.source_topics:
            end = app.consumer.highwater(tp)
            position = await app.consumer.position(tp)
            if end is None or position is None or position < end:
                return True
    return False
