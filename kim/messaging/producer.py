"""Idempotent (optionally transactional) publishing of CloudEvents to Kafka."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/cloudevents+json"
# CloudEvents Kafka binding names; lets consumers route without decoding.
HEADER_ATTRIBUTES = ("specversion", "id", "source", "type", "subject", "time")

Headers = list[tuple[str, bytes]]


class KafkaRecord(NamedTuple):
    key: bytes | None
    value: bytes | None
    headers: Headers


class PublishFailed(Exception):
    """Kafka did not acknowledge every record in time (HTTP layers: 503)."""


def event_headers(envelope: Mapping[str, Any]) -> Headers:
    headers = [
        (f"ce_{name}", str(envelope[name]).encode())
        for name in HEADER_ATTRIBUTES
        if envelope.get(name) is not None
    ]
    headers.append(("content-type", CONTENT_TYPE.encode()))
    return headers


def encode_event(envelope: Mapping[str, Any]) -> KafkaRecord:
    """Structured-mode record: key = subject, value = the envelope as JSON."""
    subject = envelope.get("subject")
    if not isinstance(subject, str) or not subject:
        raise ValueError("a CloudEvent on the bus needs a subject (its key)")
    return KafkaRecord(subject.encode(), orjson.dumps(envelope), event_headers(envelope))


Item = tuple[str, KafkaRecord]  # (topic, record)


class _Pending(NamedTuple):
    items: Sequence[Item]
    deadline: float
    done: asyncio.Future[None]


def _settle(done: asyncio.Future[None], error: BaseException | None = None) -> None:
    if done.done():  # its caller was cancelled, or it was settled before
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


class EventProducer:
    """Publishes batches and returns only once the broker acknowledged them all.

    Idempotent (``acks=all``) always. With ``transactional_id`` each
    ``send_batch`` is all-or-nothing: it commits in a Kafka transaction, so a
    failed batch is invisible to ``read_committed`` consumers (all of ours).
    Concurrent calls share one transaction (group commit), because aiokafka
    runs at most ~40 transactions/s; a failure fails every call of the group.
    Without ``transactional_id``, records of a batch that timed out may still
    arrive later.

    ``PublishFailed`` comes within ``timeout`` (transactional: within about
    twice ``timeout``, when queued behind a running transaction).

    The Kafka client is started lazily and replaced after a failure, so a
    service can start before the broker and recover when it comes back.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        timeout: float = 10.0,
        transactional_id: str | None = None,
        client_id: str | None = None,
        linger_ms: int = 2,
        max_batch_size: int = 512 * 1024,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.timeout = timeout
        self.transactional_id = transactional_id
        self._client_id = client_id
        self._linger_ms = linger_ms
        self._max_batch_size = max_batch_size
        self._producer: AIOKafkaProducer | None = None
        self._start_lock = asyncio.Lock()
        # Transactional mode: calls wait here for the next group commit.
        self._queue: list[_Pending] = []
        self._committer: asyncio.Task[None] | None = None

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

    async def send_batch(self, topic: str, envelopes: Sequence[Mapping[str, Any]]) -> None:
        await self.send_records(topic, [encode_event(e) for e in envelopes])

    async def send_records(self, topic: str, records: Sequence[KafkaRecord]) -> None:
        await self.send_many([(topic, r) for r in records])

    async def send_many(self, items: Sequence[Item]) -> None:
        """Records for several topics, acknowledged (or failed) together."""
        if not items:
            return
        if self.transactional_id is not None:
            await self._send_in_group(items)
            return
        try:
            await asyncio.wait_for(self._send(items), self.timeout)
        except (KafkaError, TimeoutError, OSError) as exc:
            if not isinstance(exc, TimeoutError):
                await self._discard()  # a broken client must not be reused
            raise self._failure(len(items), exc) from exc

    def _failure(self, count: int, exc: BaseException) -> PublishFailed:
        return PublishFailed(
            f"Kafka did not acknowledge {count} record(s) within {self.timeout}s: {exc!r}"
        )

    async def _send_in_group(self, items: Sequence[Item]) -> None:
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
                    transaction_timeout_ms=max(10_000, int(self.timeout * 2000)),
                )
                try:
                    await producer.start()
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def _send(self, items: Sequence[Item]) -> None:
        producer = await self._ensure_started()
        futures = [
            await producer.send(topic, value=r.value, key=r.key, headers=r.headers)
            for topic, r in items
        ]
        await asyncio.gather(*futures)

    async def _send_in_transaction(self, group: Sequence[_Pending]) -> None:
        producer = await self._ensure_started()
        await producer.begin_transaction()
        await self._send([item for pending in group for item in pending.items])
        await producer.commit_transaction()

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
