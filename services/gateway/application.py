"""Use case: accept a request's events — all of them or none.

Requests are group-committed: while the publishers' Kafka transactions are in
flight, new requests queue up and go out together in the next one. A request's
events are always in one transaction, so a failure leaves none of them visible
to the (read-committed) consumers, and many small requests cost one round trip.
A few publishers (each its own transactional producer) overlap their
transactions' round trips to the broker, and each is handed its next group
while its transaction runs, so that it starts that group the moment the
transaction commits.

A group is answered once its events are recorded as accepted; the next groups
go to Kafka meanwhile, and the groups published during a recording are recorded
together in the next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import anyio

from services.gateway.domain import Publishable, split_fresh

T = TypeVar("T")


class AcceptedEvents(Protocol):
    """Durable memory of every `(source, id)` the gateway has put on Kafka."""

    in_process: bool
    """True when `known` and `record` are quick calls that never wait for another process (an
    embedded database only this process writes): they then run on the event loop, not in a
    worker thread."""

    def may_know(self, keys: Sequence[tuple[str, str]]) -> bool:
        """Cheap, never blocking: False only when none of `keys` was recorded."""

    def known(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]: ...

    def record(self, events: Sequence[Publishable]) -> None: ...


class Publisher(Protocol):
    """Publishes events in one Kafka transaction; raises `PublishFailed` if Kafka cannot take them.
    Given more than one group at a time, it puts those that arrive during a transaction into the next."""

    async def publish(self, events: Sequence[Publishable]) -> None: ...


@dataclass(frozen=True)
class Outcome:
    accepted: int
    duplicates: int


@dataclass
class _Request:
    events: list[Publishable]
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


def _settle(group: list[_Request], outcomes: list[Outcome] | BaseException) -> None:
    for index, request in enumerate(group):
        if request.done.done():  # its caller gave up
            continue
        if isinstance(outcomes, BaseException):
            request.done.set_exception(outcomes)
        else:
            request.done.set_result(outcomes[index])


class AcceptEvents:
    def __init__(self, store: AcceptedEvents, publishers: Sequence[Publisher], max_group_events: int = 5000,
                 groups_per_publisher: int = 1, overlap_events: int = 0) -> None:
        self._store = store
        self._max_group_events = max_group_events
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._queued_events = 0
        self._worker: asyncio.Task | None = None
        # Each publisher runs one Kafka transaction at a time; several publishers overlap their round trips.
        # A publisher given a second group during a transaction starts it the moment the first commits, but
        # only once `overlap_events` wait: fewer wait for the transaction to end and go together in the
        # next, rather than take a transaction of their own after it (measured at 1,050 single-event
        # requests/s: p50 7-9 ms instead of 14-17 ms).
        self._free: asyncio.Queue[Publisher] = asyncio.Queue()
        for _ in range(groups_per_publisher):
            for publisher in publishers:
                self._free.put_nowait(publisher)
        self._overlap_events = overlap_events
        self._groups_in_flight: dict[Publisher, int] = {}
        self._changed = asyncio.Event()  # a request came, or a publisher finished a group
        # Keys of the groups being published: a repeat waits for their outcome.
        self._publishing: dict[tuple[str, str], asyncio.Task] = {}
        # On Kafka, but perhaps not yet in the store: duplicates all the same.
        self._unrecorded: set[tuple[str, str]] = set()
        self._tasks: set[asyncio.Task] = set()
        # Published groups waiting to be recorded, and the task recording them.
        self._to_record: list[tuple[list[_Request], list[Publishable], list[Outcome]]] = []
        self._recorder: asyncio.Task | None = None

    async def __call__(self, events: list[Publishable]) -> Outcome:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run(), name="gateway-group-commit")
        request = _Request(events)
        await self._queue.put(request)
        self._queued_events += len(events)
        self._changed.set()
        return await request.done

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        while self._tasks:  # publishing tasks hand their groups on to the recorder
            await asyncio.wait(set(self._tasks))

    async def _run(self) -> None:
        while True:
            publisher = await self._free.get()
            while self._groups_in_flight.get(publisher) and self._queued_events < self._overlap_events:
                self._changed.clear()
                await self._changed.wait()
            group = [await self._queue.get()]
            size = len(group[0].events)
            while not self._queue.empty() and size < self._max_group_events:
                request = self._queue.get_nowait()
                group.append(request)
                size += len(request.events)
            self._queued_events -= size
            try:
                fresh, outcomes = await self._split(group)
            except Exception as exc:  # every request of the group fails alike
                self._free.put_nowait(publisher)
                _settle(group, exc)
                continue
            self._groups_in_flight[publisher] = self._groups_in_flight.get(publisher, 0) + 1
            task = asyncio.create_task(self._publish(publisher, group, fresh, outcomes))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            for event in fresh:
                self._publishing[event.key] = task

    async def _split(self, group: list[_Request]) -> tuple[list[Publishable], list[Outcome]]:
        keys = [e.key for request in group for e in request.events]
        # A key another group is publishing is a duplicate only if that group succeeds.
        pending = {task for key in keys if (task := self._publishing.get(key)) is not None}
        if pending:
            await asyncio.wait(pending)
        # Taken before the store is asked: a key leaves this set only once it is stored.
        in_flight = self._unrecorded.intersection(keys)
        seen = await self._in_store(self._store.known, keys) if self._store.may_know(keys) else set()
        fresh, accepted = split_fresh([request.events for request in group], seen | in_flight)
        return fresh, [Outcome(n, len(request.events) - n) for request, n in zip(group, accepted)]

    async def _in_store(self, call: Callable[[list], T], argument: list) -> T:
        if self._store.in_process:
            return call(argument)
        return await anyio.to_thread.run_sync(call, argument)

    async def _publish(self, publisher: Publisher, group: list[_Request], fresh: list[Publishable],
                       outcomes: list[Outcome]) -> None:
        failure: Exception | None = None
        try:
            if fresh:
                await publisher.publish(fresh)
        except Exception as exc:
            failure = exc
        else:  # before the keys leave `_publishing`, so that a repeat always finds them
            self._unrecorded.update(e.key for e in fresh)
        finally:
            self._groups_in_flight[publisher] -= 1
            self._changed.set()
            self._free.put_nowait(publisher)
            for event in fresh:
                del self._publishing[event.key]
        if failure is not None:
            _settle(group, failure)
        else:
            self._record_later(group, fresh, outcomes)

    def _record_later(self, group: list[_Request], fresh: list[Publishable], outcomes: list[Outcome]) -> None:
        self._to_record.append((group, fresh, outcomes))
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.create_task(self._record_pending(), name="gateway-recorder")
            self._tasks.add(self._recorder)
            self._recorder.add_done_callback(self._tasks.discard)

    async def _record_pending(self) -> None:
        # Recorded after Kafka acknowledged: should the gateway die in between,
        # a retried event is published twice and consumers drop the repeat by id.
        # One recording at a time, of every group published meanwhile: recordings
        # side by side queued up in worker threads for tens of milliseconds.
        # In a worker thread, each statement waited for the event loop to let go of the GIL:
        # 1,000 keys took 7 ms (median, 49 ms at p90) in the thread, 3 ms on the loop.
        while self._to_record:
            recording, self._to_record = self._to_record, []
            fresh = [event for _, events, _ in recording for event in events]
            try:
                if fresh:
                    await self._in_store(self._store.record, fresh)
            except Exception as exc:
                for group, _, _ in recording:
                    _settle(group, exc)
            else:
                for group, _, outcomes in recording:
                    _settle(group, outcomes)
            finally:
                self._unrecorded.difference_update(e.key for e in fresh)
