"""Use case: accept a request's events — all of them or none.

Requests are group-committed: while one Kafka transaction is in flight, new
requests queue up and go out together in the next one. A request's events are
always in one transaction, so a failure leaves none of them visible to the
(read-committed) consumers, and many small requests cost one round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import anyio

from services.gateway.domain import Publishable


class AcceptedEvents(Protocol):
    """Durable memory of every `(source, id)` the gateway has put on Kafka."""

    def known(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]: ...

    def record(self, events: Sequence[Publishable]) -> None: ...


class Publisher(Protocol):
    """Publishes events in one Kafka transaction; raises `PublishFailed` if Kafka cannot take them."""

    async def publish(self, events: Sequence[Publishable]) -> None: ...


@dataclass(frozen=True)
class Outcome:
    accepted: int
    duplicates: int


@dataclass
class _Request:
    events: list[Publishable]
    done: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class AcceptEvents:
    def __init__(self, store: AcceptedEvents, publisher: Publisher, max_group_events: int = 5000) -> None:
        self._store = store
        self._publisher = publisher
        self._max_group_events = max_group_events
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._worker: asyncio.Task | None = None

    async def __call__(self, events: list[Publishable]) -> Outcome:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run(), name="gateway-group-commit")
        request = _Request(events)
        await self._queue.put(request)
        return await request.done

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        while True:
            group = [await self._queue.get()]
            size = len(group[0].events)
            while not self._queue.empty() and size < self._max_group_events:
                request = self._queue.get_nowait()
                group.append(request)
                size += len(request.events)
            try:
                outcomes = await self._commit(group)
            except Exception as exc:  # every request of the group fails alike
                for request in group:
                    if not request.done.done():
                        request.done.set_exception(exc)
                continue
            for request, outcome in zip(group, outcomes):
                if not request.done.done():
                    request.done.set_result(outcome)

    async def _commit(self, group: list[_Request]) -> list[Outcome]:
        keys = [e.key for request in group for e in request.events]
        seen = await anyio.to_thread.run_sync(self._store.known, keys)
        fresh: list[Publishable] = []
        outcomes: list[Outcome] = []
        for request in group:
            accepted = 0
            for event in request.events:
                if event.key in seen:
                    continue
                seen.add(event.key)  # a repeat later in the same group is a duplicate too
                fresh.append(event)
                accepted += 1
            outcomes.append(Outcome(accepted, len(request.events) - accepted))
        if fresh:
            await self._publisher.publish(fresh)
            # Recorded after Kafka acknowledged: should the gateway die in between,
            # a retried event is published twice and consumers drop the repeat by id.
            await anyio.to_thread.run_sync(self._store.record, fresh)
        return outcomes
