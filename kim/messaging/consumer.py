"""Tracked consumer: exactly-once projection of Kafka topics into a database.

Each poll batch is applied in ONE database transaction together with the
consumed positions (and the ``(source, id)`` pairs seen), so after a crash the
consumer resumes exactly where the database says it is. Kafka's committed
offsets are never used.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import IllegalStateError

from kim.messaging.producer import EventProducer, KafkaRecord, PublishFailed
from kim.messaging.topics import partition_counts
from kim.storage import Database, Transaction

log = logging.getLogger(__name__)

T = TypeVar("T")

DEADLETTER_TOPIC = "kim.deadletter"
POSITIONS_TABLE = "kim_consumer_positions"
SEEN_TABLE = "kim_consumer_seen"

SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {POSITIONS_TABLE} (
        consumer_name TEXT NOT NULL,
        topic TEXT NOT NULL,
        partition INTEGER NOT NULL,
        next_offset BIGINT NOT NULL,
        PRIMARY KEY (consumer_name, topic, partition))""",
    f"""CREATE TABLE IF NOT EXISTS {SEEN_TABLE} (
        consumer_name TEXT NOT NULL,
        source TEXT NOT NULL,
        event_id TEXT NOT NULL,
        PRIMARY KEY (consumer_name, source, event_id))""",
)

_ADVANCE_POSITION = (f"UPDATE {POSITIONS_TABLE} SET next_offset = ? WHERE consumer_name = ? "
                     "AND topic = ? AND partition = ? AND next_offset = ?")
_FIRST_POSITION = (f"INSERT INTO {POSITIONS_TABLE} (consumer_name, topic, partition, next_offset) "
                   "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING")

_MAX_REASON_CHARS = 1000
LARGE_POLLS = 20_000
"""``max_records`` for a consumer whose handler works per batch (each touched person once): a catch-up
then takes fewer, larger transactions (referral: each page of its facts touched once; caseplan: each
person summarised once per poll, 41 -> 36 s for 500,000 events). Once caught up, polls are small anyway."""


class InvalidEvent(ValueError):
    """Raised by a decoder for a record that is not an acceptable event."""


class PositionConflict(Exception):
    """Another process advanced a partition we were about to advance."""


@dataclass(frozen=True, slots=True)
class ConsumedEvent(Generic[T]):
    topic: str
    partition: int
    offset: int
    timestamp: int  # Kafka record timestamp, ms since the epoch
    key: bytes | None
    event: T


Handler = Callable[[Transaction, list[ConsumedEvent[T]]], None]


@dataclass
class _Batch(Generic[T]):
    """One poll's worth of work, committed in one transaction."""

    pending: list[Any] = field(default_factory=list)  # records still to decode
    decoding: asyncio.Task[None] | None = None  # fills valid and invalid from pending
    valid: list[tuple[ConsumedEvent[T], tuple[str, str] | None]] = field(default_factory=list)
    invalid: list[KafkaRecord] = field(default_factory=list)
    advanced: dict[TopicPartition, int] = field(default_factory=dict)  # next offsets


# Per partition of a batch: (the next offset stored now, None if none is; the next offset after the batch).
_Advanced = dict[TopicPartition, tuple[int | None, int]]


def decode_values(decode: Callable[[bytes], T], values: Sequence[bytes]) -> list[tuple[T | None, str | None]]:
    """``(event, None)``, or ``(None, why)`` where ``decode`` raised, per value."""
    results: list[tuple[T | None, str | None]] = []
    for value in values:
        try:
            results.append((decode(value), None))
        except Exception as exc:  # any decoder failure dead-letters the record
            results.append((None, f"{type(exc).__name__}: {exc}"))
    return results


def decode_envelope(value: bytes) -> dict[str, Any]:
    """Default decoder: a JSON object with non-empty ``id``, ``source``, ``subject``."""
    event = orjson.loads(value)
    if not isinstance(event, dict):
        raise InvalidEvent("not a JSON object")
    for attribute in ("id", "source", "subject"):
        if not isinstance(event.get(attribute), str) or not event[attribute]:
            raise InvalidEvent(f"attribute {attribute!r} missing or not a non-empty string")
    return event


def envelope_key(event: dict[str, Any]) -> tuple[str, str]:
    """Deduplication key of a decoded envelope: ``(source, id)``."""
    return event["source"], event["id"]


def member_partitions(member: int, members: int, partition_count: int) -> list[int]:
    """Partition numbers owned by ``member`` of ``members`` (co-partitioning).

    The same numbers on every topic, so one person's events on all agency
    topics reach the same member.
    """
    if members < 1 or not 0 <= member < members:
        raise ValueError(f"member {member} of {members} is not a valid member")
    return list(range(member, partition_count, members))


def _ce_type(record: Any) -> bytes | None:
    """The CloudEvents type from the record's Kafka-binding header, if it has one."""
    for key, value in record.headers or ():
        if key == "ce_type":
            return value
    return None


def dead_letter_record(
    record: Any, reason: str, consumer_name: str
) -> KafkaRecord:
    """The original key, value and headers plus where and why it failed."""
    headers = list(record.headers or ())
    headers += [
        ("kim_dlq_reason", reason[:_MAX_REASON_CHARS].encode()),
        ("kim_dlq_topic", record.topic.encode()),
        ("kim_dlq_partition", str(record.partition).encode()),
        ("kim_dlq_offset", str(record.offset).encode()),
        ("kim_dlq_consumer", consumer_name.encode()),
    ]
    return KafkaRecord(record.key, record.value, headers)


class BatchApplier(Generic[T]):
    """Decodes a consumer's batches and commits each, with the positions it reaches, in one transaction."""

    def __init__(self, name: str, database: Database, handler: Handler[T], decode: Callable[[bytes], T],
                 event_key: Callable[[T], tuple[str, str]] | None) -> None:
        self.name = name
        self.database = database
        self.handler = handler
        self.decode = decode
        self.event_key = event_key

    def decoded(self, records: Sequence[Any]) -> tuple[list[tuple[ConsumedEvent[T], tuple[str, str] | None]],
                                                         list[tuple[int, str]]]:
        """The valid events of `records` with their deduplication keys, and `(index, why)` of the others."""
        valid: list[tuple[ConsumedEvent[T], tuple[str, str] | None]] = []
        invalid: list[tuple[int, str]] = []
        results = decode_values(self.decode, [record.value for record in records])
        for index, (record, (event, reason)) in enumerate(zip(records, results)):
            key = None
            if reason is None and self.event_key is not None:
                try:
                    key = self.event_key(event)  # type: ignore[arg-type]
                except Exception as exc:  # as a decoder failure
                    reason = f"{type(exc).__name__}: {exc}"
            if reason is not None:
                invalid.append((index, reason))
                continue
            valid.append((ConsumedEvent(record.topic, record.partition, record.offset, record.timestamp,
                                        record.key, event), key))  # type: ignore[arg-type]
        return valid, invalid

    def commit(self, valid: list[tuple[ConsumedEvent[T], tuple[str, str] | None]], advanced: _Advanced) -> int:
        """Hand the events not seen before to the handler; returns how many it got."""
        with self.database.transaction() as tx:
            # First, so the position rows are locked for the whole batch and a
            # competing process either waits for us or sees a conflict.
            self._advance_positions(tx, advanced)
            if self.event_key is None:
                fresh = [event for event, _ in valid]
            else:
                fresh = self._drop_seen(tx, valid)
            if fresh:
                self.handler(tx, fresh)
        return len(fresh)

    def _advance_positions(self, tx: Transaction, advanced: _Advanced) -> None:
        updates = []
        inserts = []
        for tp, (old, offset) in advanced.items():
            if old is None:
                inserts.append((self.name, tp.topic, tp.partition, offset))
            else:
                updates.append((offset, self.name, tp.topic, tp.partition, old))
        for statement, rows in ((_ADVANCE_POSITION, updates), (_FIRST_POSITION, inserts)):
            if rows:
                tx.executemany(statement, rows)
                if tx.rowcount != len(rows):  # another process moved it first
                    raise PositionConflict

    def _drop_seen(
        self,
        tx: Transaction,
        valid: list[tuple[ConsumedEvent[T], tuple[str, str] | None]],
    ) -> list[ConsumedEvent[T]]:
        first: dict[tuple[str, str], ConsumedEvent[T]] = {}
        for event, key in valid:
            assert key is not None
            first.setdefault(key, event)  # a repeat inside the batch is a duplicate too
        if not first:
            return []
        seen = self._record_keys(tx, list(first))
        return [event for key, event in first.items() if key not in seen]

    def _record_keys(self, tx: Transaction, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Insert ``keys`` into the seen set; return those that were there already."""
        if tx.dialect == "postgresql":
            # One round trip, and only the (usually no) duplicates come back.
            rows = tx.execute(
                "WITH input AS (SELECT s, i, n FROM unnest(?::text[], ?::text[]) "
                "WITH ORDINALITY AS t(s, i, n)), "
                f"inserted AS (INSERT INTO {SEEN_TABLE} (consumer_name, source, event_id) "
                "SELECT ?, s, i FROM input ON CONFLICT DO NOTHING RETURNING source, event_id) "
                "SELECT n FROM input WHERE NOT EXISTS (SELECT 1 FROM inserted "
                "WHERE inserted.source = input.s AND inserted.event_id = input.i)",
                [[s for s, _ in keys], [i for _, i in keys], self.name],
            ).fetchall()
            return {keys[n - 1] for (n,) in rows}
        # SQLite runs in-process, so a statement per key costs microseconds,
        # and each one is an index lookup rather than a scan.
        seen = set()
        for key in keys:
            tx.execute(
                f"INSERT INTO {SEEN_TABLE} (consumer_name, source, event_id) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                [self.name, *key],
            )
            if tx.rowcount == 0:
                seen.add(key)
        return seen


class TrackedConsumer(Generic[T]):
    """Consume ``topics`` into ``database`` through ``handler``.

    ``handler(tx, events)`` runs in a worker thread inside the batch's
    transaction and receives only valid, not yet seen events, in partition
    order. If it raises, the batch is rolled back and ``run()`` raises.
    ``decode`` raising anything sends the record to the dead-letter topic.
    One ``run()`` per instance; ``stop()`` ends it.

    Partition ownership, one of:

    * ``group_id``: a member of a Kafka consumer group;
    * ``partitions``: these partition numbers of every topic;
    * ``member=(i, n)``: partition numbers i, i+n, ... of every topic;
    * none of them: every partition of every topic.

    ``event_key=None`` disables deduplication. ``event_types`` (CloudEvents
    types) skips records whose ``ce_type`` header names another type, without
    decoding them; records without that header are decoded as usual.

    ``after_commit`` is called in the event loop after each batch that handed
    events to the handler was committed.
    """

    def __init__(
        self,
        name: str,
        topics: Sequence[str],
        database: Database,
        handler: Handler[T],
        *,
        bootstrap_servers: str,
        decode: Callable[[bytes], T] = decode_envelope,  # type: ignore[assignment]
        event_key: Callable[[T], tuple[str, str]] | None = envelope_key,  # type: ignore[assignment]
        group_id: str | None = None,
        partitions: Sequence[int] | None = None,
        member: tuple[int, int] | None = None,
        deadletter_topic: str = DEADLETTER_TOPIC,
        deadletter_producer: EventProducer | None = None,
        max_records: int = 5000,
        poll_timeout: float = 0.2,
        isolation_level: str = "read_committed",
        startup_timeout: float = 30.0,
        event_types: Collection[str] | None = None,
        after_commit: Callable[[], None] | None = None,
    ) -> None:
        if sum(x is not None for x in (group_id, partitions, member)) > 1:
            raise ValueError("choose at most one of group_id, partitions, member")
        if member is not None:
            member_partitions(*member, 0)  # validates early
        self.name = name
        self.topics = list(topics)
        self.database = database
        self.bootstrap_servers = bootstrap_servers
        self.group_id = group_id
        self.partitions = None if partitions is None else sorted(set(partitions))
        self.member = member
        self.deadletter_topic = deadletter_topic
        self.max_records = max_records
        self.poll_timeout = poll_timeout
        self.isolation_level = isolation_level
        self.startup_timeout = startup_timeout
        self.event_types = None if event_types is None else frozenset(t.encode() for t in event_types)
        self.after_commit = after_commit
        self._applier = BatchApplier(name, database, handler, decode, event_key)

        self.applied = 0  # events handed to the handler and committed
        self.duplicates = 0
        self.dead_lettered = 0

        self._dlq = deadletter_producer
        self._owns_dlq = deadletter_producer is None
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = False
        # Held while batches are handed over; a rebalance takes it and waits
        # for the commit in flight, so no partition changes hands mid-batch.
        self._batch_lock = asyncio.Lock()
        # Only partitions whose stored position was loaded are processed.
        # _stored: committed in the database; _next: next offset expected
        # from Kafka (ahead of _stored by the batch in flight).
        self._stored: dict[TopicPartition, int | None] = {}
        self._next: dict[TopicPartition, int] = {}
        self._in_flight: tuple[_Batch[T], asyncio.Task[int]] | None = None
        self._targets: dict[TopicPartition, int] = {}
        self._reached: set[TopicPartition] = set()
        self._assigned = False
        self._caught_up = asyncio.Event()  # mirrors caught_up(), for wait_caught_up()
        self._assignment_error: BaseException | None = None

    # -- public -----------------------------------------------------------

    def caught_up(self) -> bool:
        """Applied up to the end offsets that existed when partitions were assigned."""
        return self._assigned and self._reached.issuperset(self._targets)

    async def wait_caught_up(self) -> None:
        """Return once ``caught_up()`` holds; it may no longer hold after a rebalance."""
        await self._caught_up.wait()

    def owned_partitions(self) -> list[int] | None:
        """Partition numbers this member owns on every topic now; None before an assignment."""
        if not self._assigned:
            return None
        return sorted({tp.partition for tp in self._stored})

    def stop(self) -> None:
        """Ask ``run()`` to return soon: it commits the batch in hand, then returns."""
        self._stopping = True

    async def run(self) -> None:
        await asyncio.to_thread(self.database.ensure_schema, SCHEMA)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=f"kim-{self.name}",
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level=self.isolation_level,
            # Range gives each member the same partition numbers on every topic
            # (all ours have one partition count), so a person's events from all
            # agencies reach one member: co-partitioning.
            partition_assignment_strategy=(RangePartitionAssignor,),
            # A fetch only for partitions read to their end waits this long on the broker,
            # and the partitions still being read wait behind it (aiokafka's default: 500 ms).
            fetch_max_wait_ms=100,
            # A member learns of a rebalance (one joining, say) at its next heartbeat: soon, so that the
            # newcomer shares the work at once (aiokafka's default: every 3 s).
            heartbeat_interval_ms=200,
            # While catching up, a poll returns what the fetches brought: at aiokafka's 1 MB per partition,
            # batches of ~4,000 records instead of max_records, and four times the commits (measured).
            max_partition_fetch_bytes=4 << 20,
        )
        self._consumer = consumer
        if self.group_id is not None:
            consumer.subscribe(self.topics, listener=_Rebalance(self))
        try:
            await consumer.start()
            if self.group_id is None:
                await self._assign_manually(consumer)
            while not self._stopping:
                if self._assignment_error is not None:
                    raise self._assignment_error
                records = await consumer.getmany(
                    timeout_ms=int(self.poll_timeout * 1000), max_records=self.max_records
                )
                async with self._batch_lock:
                    # Decoding a batch overlaps the commit of the previous one, committing
                    # it overlaps fetching the next one.
                    batch = self._prepare(records)
                    if batch is not None:
                        batch.decoding = asyncio.create_task(self._decode(batch))
                    if not await self._finish_in_flight():
                        if batch is not None:
                            batch.decoding.cancel()
                        continue  # the prepared batch was read past a stale position
                    if batch is not None:
                        await self._start_commit(batch)
                    elif not records:
                        await self._note_drained(consumer)
        finally:
            try:
                await self._finish_in_flight()
            finally:
                self._assigned = False
                self._note_progress()
                await consumer.stop()
                if self._owns_dlq and self._dlq is not None:
                    await self._dlq.stop()
                    self._dlq = None

    # -- assignment ---------------------------------------------------------

    async def _assign_manually(self, consumer: AIOKafkaConsumer) -> None:
        counts = await self._partition_counts()
        tps = []
        for topic in self.topics:
            if self.partitions is not None:
                numbers = [p for p in self.partitions if p < counts[topic]]
            elif self.member is not None:
                numbers = member_partitions(*self.member, counts[topic])
            else:
                numbers = list(range(counts[topic]))
            tps += [TopicPartition(topic, p) for p in numbers]
        consumer.assign(tps)
        await self._on_assigned(tps)

    async def _partition_counts(self) -> dict[str, int]:
        deadline = asyncio.get_running_loop().time() + self.startup_timeout
        while True:
            counts = await partition_counts(self.bootstrap_servers, self.topics)
            missing = [t for t, n in counts.items() if n == 0]
            if not missing:
                return counts
            if asyncio.get_running_loop().time() > deadline:
                raise LookupError(f"{self.name}: topics do not exist: {missing}")
            await asyncio.sleep(0.5)  # waiting for the topics to be created

    async def _on_assigned(self, tps: Iterable[TopicPartition]) -> None:
        consumer = self._consumer
        assert consumer is not None
        tps = list(tps)
        stored = await asyncio.to_thread(self._load_positions, tps)
        self._stored = {tp: stored.get(tp) for tp in tps}
        self._next = {tp: stored.get(tp) or 0 for tp in tps}
        self._seek_to_stored(consumer, [tp for tp in tps if self._stored[tp] is not None])
        fresh = [tp for tp in tps if self._stored[tp] is None]
        if fresh:
            await consumer.seek_to_beginning(*fresh)
        self._targets = await consumer.end_offsets(tps) if tps else {}
        self._reached = {tp for tp in tps if (self._stored[tp] or 0) >= self._targets[tp]}
        self._assigned = True
        self._note_progress()
        log.info("%s: assigned %d partition(s)", self.name, len(tps))

    def _on_revoked(self) -> None:
        self._assigned = False
        self._stored = {}
        self._next = {}
        self._targets = {}
        self._reached = set()
        self._note_progress()

    def _note_progress(self) -> None:
        if self.caught_up():
            self._caught_up.set()
        else:
            self._caught_up.clear()

    def _seek_to_stored(self, consumer: AIOKafkaConsumer, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            offset = self._stored[tp]
            assert offset is not None
            consumer.seek(tp, offset)

    def _load_positions(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        wanted = set(tps)
        with self.database.transaction(readonly=True) as tx:
            rows = tx.execute(
                f"SELECT topic, partition, next_offset FROM {POSITIONS_TABLE} "
                "WHERE consumer_name = ?",
                [self.name],
            ).fetchall()
        positions = {TopicPartition(t, p): o for t, p, o in rows}
        return {tp: o for tp, o in positions.items() if tp in wanted}

    # -- batches --------------------------------------------------------------

    def _prepare(self, records: dict[TopicPartition, list[Any]]) -> _Batch[T] | None:
        batch: _Batch[T] = _Batch()
        for tp, tp_records in records.items():
            if tp not in self._next:
                continue  # revoked, or its position is not loaded
            start = self._next[tp]
            # Not those fetched before our seek took effect.
            fresh = [record for record in tp_records if record.offset >= start]
            if not fresh:
                continue
            batch.advanced[tp] = self._next[tp] = fresh[-1].offset + 1
            if self.event_types is None:
                batch.pending += fresh
            else:
                # Types this consumer has no use for are not decoded, not kept.
                wanted = self.event_types
                batch.pending += [r for r in fresh if (event_type := _ce_type(r)) is None or event_type in wanted]
        return batch if batch.advanced else None

    async def _start_commit(self, batch: _Batch[T]) -> None:
        advanced = {tp: (self._stored[tp], offset) for tp, offset in batch.advanced.items()}
        self._in_flight = (batch, asyncio.create_task(self._decode_and_commit(batch, advanced)))
        # Let the batch be decoded and handed to its thread now: the next poll returns records already
        # fetched without giving the event loop a turn, and the commit would wait until it had built them.
        await asyncio.sleep(0)

    async def _decode_and_commit(self, batch: _Batch[T], advanced: _Advanced) -> int:
        assert batch.decoding is not None
        await batch.decoding
        if batch.invalid:
            # Before the positions move past them, so none is ever lost.
            await self._dead_letter(batch.invalid)
        applied = await asyncio.to_thread(self._applier.commit, batch.valid, advanced)
        if applied and self.after_commit is not None:
            self.after_commit()
        return applied

    async def _decode(self, batch: _Batch[T]) -> None:
        valid, invalid = self._applier.decoded(batch.pending)
        batch.valid = valid
        batch.invalid = [dead_letter_record(batch.pending[i], why, self.name) for i, why in invalid]

    async def _finish_in_flight(self) -> bool:
        """Wait for the commit in flight; False if it lost a position conflict."""
        if self._in_flight is None:
            return True
        batch, task = self._in_flight
        self._in_flight = None
        try:
            applied = await task
        except PositionConflict:
            log.warning("%s: positions moved by another process; reloading", self.name)
            await self._reload_positions()
            return False
        self.applied += applied
        self.duplicates += len(batch.valid) - applied
        self.dead_lettered += len(batch.invalid)
        for tp, offset in batch.advanced.items():
            if tp in self._stored:
                self._stored[tp] = offset
                if offset >= self._targets.get(tp, 0):
                    self._reached.add(tp)
        self._note_progress()
        return True

    async def _note_drained(self, consumer: AIOKafkaConsumer) -> None:
        # An empty poll means every fetched record was handed out, so a fetch
        # position at the target means the rest were control records
        # (transaction markers) that never reach us.
        for tp, target in self._targets.items():
            if tp in self._reached:
                continue
            try:
                position = await consumer.position(tp)
            except IllegalStateError:
                continue  # being rebalanced away
            if position >= target:
                self._reached.add(tp)
        self._note_progress()

    async def _reload_positions(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        tps = list(self._stored)
        stored = await asyncio.to_thread(self._load_positions, tps)
        for tp in tps:
            self._stored[tp] = stored.get(tp)
            self._next[tp] = stored.get(tp) or 0
        self._seek_to_stored(consumer, [tp for tp in tps if self._stored[tp] is not None])

    async def _dead_letter(self, records: list[KafkaRecord]) -> None:
        if self._dlq is None:
            self._dlq = EventProducer(self.bootstrap_servers, client_id=f"kim-{self.name}-dlq")
        while True:
            try:
                await self._dlq.send_records(self.deadletter_topic, records)
                return
            except PublishFailed:
                if self._stopping:
                    raise
                log.exception("%s: dead-letter topic unavailable, retrying", self.name)
                await asyncio.sleep(1.0)  # back off; the batch is retried as a whole


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, owner: TrackedConsumer[Any]) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.owner._batch_lock:
            try:
                await self.owner._finish_in_flight()  # commit the batch in hand first
            except Exception as exc:
                self.owner._assignment_error = exc
            self.owner._on_revoked()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self.owner._batch_lock:
            try:
                await self.owner._on_assigned(assigned)
            except Exception as exc:
                # aiokafka only logs listener errors; without positions we must
                # not consume, so run() raises this.
                self.owner._assignment_error = exc
