"""Idempotent (optionally transactional) publishing of CloudEvents to Kafka."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import aiokafka.producer.sender
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.producer.message_accumulator import BatchBuilder

from kim.messaging.chain import ChainLinker, is_chained_topic, partition_for, recover_heads

log = logging.getLogger(__name__)

# A transaction that starts right after the previous commit finds the broker
# still writing that commit's markers; aiokafka then waits 20 ms before asking
# again, which caps a producer at ~40 transactions/s. The markers take a few
# ms on a healthy broker, so asking again sooner costs only a short request.
aiokafka.producer.sender.BACKOFF_OVERRIDE = 0.002

CONTENT_TYPE = "application/cloudevents+json"
# CloudEvents Kafka binding names; lets consumers route without decoding.
HEADER_ATTRIBUTES = ("specversion", "id", "source", "type", "subject", "time")
_HEADER_NAMES = tuple((name, f"ce_{name}") for name in HEADER_ATTRIBUTES)
_CONTENT_TYPE_HEADER = ("content-type", CONTENT_TYPE.encode())

Headers = list[tuple[str, bytes]]

DEFAULT_LINGER_MS = 2
DEFAULT_BATCH_BYTES = 512 * 1024


class KafkaRecord(NamedTuple):
    key: bytes | None
    value: bytes | None
    headers: Headers


class PublishFailed(Exception):
    """Kafka did not acknowledge every record in time (HTTP layers: 503)."""


def event_headers(envelope: Mapping[str, Any]) -> Headers:
    headers = [
        (header, str(value).encode())
        for name, header in _HEADER_NAMES
        if (value := envelope.get(name)) is not None
    ]
    headers.append(_CONTENT_TYPE_HEADER)
    return headers


def encode_event(envelope: Mapping[str, Any]) -> KafkaRecord:
    """Structured-mode record: key = subject, value = the envelope as JSON."""
    subject = envelope.get("subject")
    if not isinstance(subject, str) or not subject:
        raise ValueError("a CloudEvent on the bus needs a subject (its key)")
    return KafkaRecord(subject.encode(), orjson.dumps(envelope), event_headers(envelope))


Item = tuple[str, KafkaRecord]  # (topic, record)
_Chained = tuple[str, KafkaRecord, str | None]  # (topic, record, chain name or None)


class _Pending(NamedTuple):
    items: Sequence[_Chained]
    deadline: float
    done: asyncio.Future[None]


def _settle(done: asyncio.Future[None], error: BaseException | None = None) -> None:
    if done.done():  # its caller was cancelled, or it was settled before
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


def _append(batch: BatchBuilder, key: bytes | None, value: bytes | None, headers: Headers) -> bool:
    """False when the batch is full."""
    return batch.append(timestamp=None, key=key, value=value, headers=headers) is not None


class EventProducer:
    """Publishes batches and returns only once the broker acknowledged them all.

    Idempotent (``acks=all``) always. With ``transactional_id`` each
    ``send_batch`` is all-or-nothing: it commits in a Kafka transaction, so a
    failed batch is invisible to ``read_committed`` consumers (all of ours).
    Concurrent calls share one transaction (group commit), because each
    transaction costs several round trips to the broker; a failure fails
    every call of the group.
    Without ``transactional_id``, records of a batch that timed out may still
    arrive later.

    ``PublishFailed`` comes within ``timeout`` (transactional: within about
    twice ``timeout``, when queued behind a running transaction).

    The Kafka client is started lazily and replaced after a failure, so a
    service can start before the broker and recover when it comes back.

    Records on event topics (`*.events`) are stamped with a hash chain (see
    `kim.messaging.chain`) named ``chain``: by default the transactional id or
    else the client id, which must therefore be stable across restarts and
    unique among running producers; ``chain=False`` (or no name at all)
    publishes records unchanged. A ``send_*`` call may name another chain for
    its records. Chains continue after a restart from the tail of the topic;
    after a failed send the heads of its partitions are read again, so an
    aborted transaction leaves no hole in a chain.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        timeout: float = 10.0,
        transactional_id: str | None = None,
        client_id: str | None = None,
        linger_ms: int = DEFAULT_LINGER_MS,
        max_batch_size: int = DEFAULT_BATCH_BYTES,
        chain: str | bool = True,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.timeout = timeout
        self.transactional_id = transactional_id
        self.chain = chain if isinstance(chain, str) else ((transactional_id or client_id) if chain else None)
        self._client_id = client_id
        self._linger_ms = linger_ms
        self._max_batch_size = max_batch_size
        self._producer: AIOKafkaProducer | None = None
        self._start_lock = asyncio.Lock()
        # Transactional mode: calls wait here for the next group commit.
        self._queue: list[_Pending] = []
        self._committer: asyncio.Task[None] | None = None
        self._linker = ChainLinker()
        # Links must follow the order of the records in each partition, so
        # stamping and handing records to the client happen under one lock.
        self._enqueue_lock = asyncio.Lock()
        self._partition_counts: dict[str, int] = {}

    async def __aenter__(self) -> EventProducer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect now (optional: ``send_*`` connects on demand)."""
        try:
            await asyncio.wait_for(self._ensure_started(), self.timeout)
        except (KafkaError, TimeoutError, OSError) as exc:
            raise PublishFailed(f"cannot connect to Kafka: {exc!r}") from exc

    async def stop(self) -> None:
        if self._committer is not None:
            await self._committer  # lets queued batches finish or fail
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def send_batch(self, topic: str, envelopes: Sequence[Mapping[str, Any]], *,
                         chain: str | None = None) -> None:
        await self.send_records(topic, [encode_event(e) for e in envelopes], chain=chain)

    async def send_records(self, topic: str, records: Sequence[KafkaRecord], *, chain: str | None = None) -> None:
        await self.send_many([(topic, r) for r in records], chain=chain)

    async def send_many(self, items: Sequence[Item], *, chain: str | None = None) -> None:
        """Records for several topics, acknowledged (or failed) together.

        ``chain`` names the hash chain of these records instead of the producer's.
        """
        if not items:
            return
        name = chain or self.chain
        chained = [(topic, r, name if name and is_chained_topic(topic) else None) for topic, r in items]
        if self.transactional_id is not None:
            await self._send_in_group(chained)
            return
        try:
            await asyncio.wait_for(self._send(chained), self.timeout)
        except (KafkaError, TimeoutError, OSError) as exc:
            # A broken client must not be reused; a chained record whose fate
            # is unknown must not arrive after its chain was read back.
            if not isinstance(exc, TimeoutError) or any(c for _, _, c in chained):
                await self._discard()
            raise self._failure(len(items), exc) from exc

    def _failure(self, count: int, exc: BaseException) -> PublishFailed:
        return PublishFailed(
            f"Kafka did not acknowledge {count} record(s) within {self.timeout}s: {exc!r}"
        )

    async def _send_in_group(self, items: Sequence[_Chained]) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queue.append(_Pending(items, loop.time() + self.timeout, done))
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_groups())
        await done

    async def _commit_groups(self) -> None:
        loop = asyncio.get_running_loop()
        group: list[_Pending] = []
        try:
            while self._queue:
                group, self._queue = self._queue, []
                for pending in group:
                    if loop.time() > pending.deadline:  # nothing of it was sent yet
                        error = TimeoutError("queued behind a slow transaction")
                        _settle(pending.done, self._failure(len(pending.items), error))
                # Done already: failed above, or its caller gave up (cancelled).
                group = [p for p in group if not p.done.done()]
                if not group:
                    continue
                try:
                    await asyncio.wait_for(self._send_in_transaction(group), self.timeout)
                except Exception as exc:
                    await self._abort_and_discard()
                    for pending in group:
                        _settle(
                            pending.done,
                            self._failure(len(pending.items), exc)
                            if isinstance(exc, (KafkaError, TimeoutError, OSError))
                            else exc,
                        )
                else:
                    for pending in group:
                        _settle(pending.done)
        finally:
            self._committer = None
            for pending in [*group, *self._queue]:  # left behind only when cancelled
                _settle(pending.done, PublishFailed("producer stopped"))
            self._queue = []

    async def _ensure_started(self) -> AIOKafkaProducer:
        async with self._start_lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap_servers,
                    client_id=self._client_id,
                    enable_idempotence=True,
                    acks="all",
                    transactional_id=self.transactional_id,
                    linger_ms=self._linger_ms,
                    max_batch_size=self._max_batch_size,
                    request_timeout_ms=max(1000, int(self.timeout * 1000)),
                    # The default 100 ms pause before a retried request (e.g. a transaction's
                    # partitions asked for while the previous commit completes) stalled requests.
                    retry_backoff_ms=10,
                    transaction_timeout_ms=max(10_000, int(self.timeout * 2000)),
                )
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def _send(self, items: Sequence[_Chained]) -> None:
        producer = await self._ensure_started()
        futures = []
        try:
            async with self._enqueue_lock:
                # Records go to the client in one batch per partition: far cheaper
                # than one `send` (a future and a queue entry) per record.
                batches: dict[tuple[str, int], BatchBuilder] = {}
                for topic in {topic for topic, _, _ in items}.difference(self._partition_counts):
                    self._partition_counts[topic] = len(await producer.partitions_for(topic))
                for topic, r, chain in items:
                    partition = self._partition(topic, r.key, chained=chain is not None)
                    value = r.value
                    if chain is not None:
                        if not self._linker.has_head(chain, topic, partition):
                            await self._load_heads(producer, chain, topic)
                        value = self._linker.stamp(chain, topic, partition, value or b"")
                    batch = batches.get((topic, partition))
                    if batch is None or not _append(batch, r.key, value, r.headers):
                        if batch is not None:  # full: on its way, and a new one for the rest
                            futures.append(await producer.send_batch(batch, topic, partition=partition))
                        batch = batches[(topic, partition)] = producer.create_batch()
                        _append(batch, r.key, value, r.headers)  # an empty batch takes any record
                for (topic, partition), batch in batches.items():
                    batch.close()  # complete: goes out without lingering
                    futures.append(await producer.send_batch(batch, topic, partition=partition))
            await asyncio.gather(*futures)
        except BaseException:
            # Whether these links reached Kafka is unknown: read the heads back before the next stamp.
            self._linker.forget({(c, t, self._partition_of(t, r.key)) for t, r, c in items if c is not None})
            raise

    def _partition(self, topic: str, key: bytes | None, *, chained: bool) -> int:
        """Kafka's default partitioning: by key; unchained records without one anywhere."""
        if key is None and not chained:
            return random.randrange(self._partition_counts[topic])
        return self._partition_of(topic, key)

    def _partition_of(self, topic: str, key: bytes | None) -> int:
        count = self._partition_counts.get(topic)
        return partition_for(key or b"", count) if count else 0

    async def _load_heads(self, producer: AIOKafkaProducer, chain: str, topic: str) -> None:
        partitions = sorted(await producer.partitions_for(topic))
        missing = [p for p in partitions if not self._linker.has_head(chain, topic, p)]
        for partition, head in (await recover_heads(self.bootstrap_servers, chain, topic, missing)).items():
            self._linker.set_head(chain, topic, partition, head)

    async def _send_in_transaction(self, group: Sequence[_Pending]) -> None:
        producer = await self._ensure_started()
        await producer.begin_transaction()
        items = [item for pending in group for item in pending.items]
        await self._send(items)
        try:
            await producer.commit_transaction()
        except BaseException:
            self._linker.forget({(c, t, self._partition_of(t, r.key)) for t, r, c in items if c is not None})
            raise

    async def _abort_and_discard(self) -> None:
        # Abort now: an open transaction holds back read_committed consumers of
        # its partitions until it ends. If the broker cannot be reached, the
        # coordinator aborts it after transaction_timeout_ms, or when a new
        # client with the same transactional id fences this one.
        producer = self._producer
        if producer is not None:
            try:
                await asyncio.wait_for(producer.abort_transaction(), 1.0)
            except Exception as exc:  # any state: the client is dropped anyway
                log.debug("abort of a failed transaction failed: %r", exc)
        await self._discard()

    async def _discard(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            # Bounded: stop() flushes and may wait for an unreachable broker.
            await asyncio.wait_for(producer.stop(), 1.0)
        except (KafkaError, TimeoutError, OSError) as exc:
            log.debug("discarding Kafka producer: %r", exc)
