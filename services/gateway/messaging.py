"""Kafka side of the gateway: each event onto its agency's topic, a group of requests per transaction.

With a second CPU the Kafka producer runs in a helper process: stamping the hash
chain and the Kafka client's own work then take that CPU, while the service's
process serves HTTP and validates.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import pickle
from collections.abc import Sequence
from multiprocessing import get_context
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from kim.helper import exit_with, settle
from kim.messaging import EventProducer, KafkaRecord, PublishFailed, event_headers
from kim.messaging.producer import Item
from services.gateway.domain import Publishable

_ATTRIBUTES = ("specversion", "id", "source", "type", "subject", "time")

# What the producer needs of an event: (topic, value, the envelope's attributes above); cheap to hand over.
Outgoing = tuple[str, bytes, tuple[Any, ...]]


def outgoing(publishable: Publishable) -> Outgoing:
    envelope = publishable.event.envelope
    return publishable.event.topic, publishable.value, tuple(getattr(envelope, name) for name in _ATTRIBUTES)


def to_item(topic: str, value: bytes, attributes: tuple[Any, ...]) -> Item:
    """Key = subject; value = the envelope as the agency published it; CloudEvents headers."""
    envelope = dict(zip(_ATTRIBUTES, attributes))
    return topic, KafkaRecord(envelope["subject"].encode(), value, event_headers(envelope))


def gateway_producer(bootstrap: str, timeout: float, transactional_id: str) -> EventProducer:
    """The producer of one gateway transaction at a time, in this process or in a helper."""
    return EventProducer(bootstrap, timeout=timeout, client_id="kim-gateway", transactional_id=transactional_id)


class KafkaPublisher:
    """Publishes from this process."""

    def __init__(self, producer: EventProducer) -> None:
        self._producer = producer

    async def publish(self, events: Sequence[Publishable]) -> None:
        await self._producer.send_many([to_item(*outgoing(e)) for e in events])

    async def stop(self) -> None:
        await self._producer.stop()


class HelperPublisher:
    """Publishes through a helper process that owns the producer, over a pipe of its own: one group
    at a time, as `AcceptEvents` hands each publisher. (A process pool's threads took several ms per
    hand-over while this process was busy.) A helper that died or hangs is replaced for the next group;
    the new producer, with the same transactional id, fences the old one's open transaction and
    continues its chains from Kafka."""

    def __init__(self, bootstrap: str, timeout: float, transactional_id: str) -> None:
        self._args = (bootstrap, timeout, transactional_id)
        # Beyond the producer's own limit (about twice `timeout` in a transaction) the helper hangs.
        self._limit = 3 * timeout + 5
        self._process, self._pipe = self._start()
        self._ready = False  # until the helper said so: a write before it reads would block this process

    def _start(self) -> tuple[BaseProcess, Connection]:
        context = get_context("spawn")
        here, there = context.Pipe()
        process = context.Process(target=_serve, args=(there, os.getpid(), gc.get_threshold(), *self._args),
                                  name=f"publisher {self._args[2]}", daemon=True)
        process.start()
        there.close()
        return process, here

    async def publish(self, events: Sequence[Publishable]) -> None:
        payload = pickle.dumps([outgoing(e) for e in events], protocol=pickle.HIGHEST_PROTOCOL)
        try:
            if not self._process.is_alive():
                raise EOFError("the publishing process is gone")
            if not self._ready:
                await asyncio.wait_for(_received(self._pipe), self._limit)
                self._ready = True
            self._pipe.send_bytes(payload)
            reply = await asyncio.wait_for(_received(self._pipe), self._limit)
        except (OSError, EOFError, TimeoutError) as exc:
            self._replace()
            raise PublishFailed(f"the gateway's publishing process failed: {exc!r}") from exc
        if reply:
            raise PublishFailed(reply.decode())

    def _replace(self) -> None:
        self._process.kill()
        self._pipe.close()
        self._process, self._pipe = self._start()
        self._ready = False

    async def stop(self) -> None:
        with contextlib.suppress(OSError, EOFError, TimeoutError):
            self._pipe.send_bytes(_STOP)  # the helper stops its producer and exits
            await asyncio.wait_for(_received(self._pipe), self._limit)
        self._pipe.close()
        await asyncio.to_thread(self._process.join, 5)
        if self._process.is_alive():
            self._process.kill()


_STOP = _DONE = b""


async def _received(pipe: Connection) -> bytes:
    """The next message on `pipe`, waiting without blocking the event loop."""
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()
    loop.add_reader(pipe.fileno(), lambda: readable.done() or readable.set_result(None))
    try:
        await readable
    finally:
        loop.remove_reader(pipe.fileno())
        os.set_blocking(pipe.fileno(), True)  # uvloop's reader made it non-blocking; messages are read whole
    return pipe.recv_bytes()


def _serve(pipe: Connection, parent: int, gc_threshold: tuple[int, ...], bootstrap: str, timeout: float,
           transactional_id: str) -> None:
    """The publishing helper: publishes each group it receives, answers b"" or why it failed."""
    exit_with(parent)
    settle(gc_threshold)

    async def serve() -> None:
        producer = gateway_producer(bootstrap, timeout, transactional_id)
        try:
            pipe.send_bytes(_DONE)  # ready
            while (payload := await _received(pipe)) != _STOP:
                try:
                    await producer.send_many([to_item(*e) for e in pickle.loads(payload)])
                except Exception as exc:  # the service answers 503
                    pipe.send_bytes((str(exc) or repr(exc)).encode())
                else:
                    pipe.send_bytes(_DONE)
        finally:
            await producer.stop()
        pipe.send_bytes(_DONE)  # stopped

    with contextlib.suppress(EOFError, OSError, KeyboardInterrupt):  # the service is gone or stops
        asyncio.run(serve())
