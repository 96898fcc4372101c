"""Kafka side of the gateway: each event onto its agency's topic, a group of requests per transaction.

With a second CPU the Kafka producer runs in a helper process: stamping the hash
chain and the Kafka client's own work then take that CPU, while the service's
process serves HTTP and validates.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import itertools
import os
import pickle
import struct
from collections.abc import Callable, Sequence
from multiprocessing import get_context
from multiprocessing.connection import Connection

import orjson

from kim.helper import exit_with, settle
from kim.messaging import EventProducer, KafkaRecord, PublishFailed, event_headers
from kim.messaging.producer import Item
from services.gateway.domain import Publishable

# What the producer needs of an event, (topic, value): cheap to hand over. Passing the header attributes
# too cost this process more (3.6 us per event) than parsing the value again costs the helper (1 us).
Outgoing = tuple[str, bytes]


def outgoing(publishable: Publishable) -> Outgoing:
    return publishable.topic, publishable.value


def to_item(topic: str, value: bytes) -> Item:
    """Key = subject; value = the envelope as the agency published it; CloudEvents headers."""
    envelope = orjson.loads(value)
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
    """Publishes through a helper process that owns the producer, over pipes of its own. Several
    groups may be in flight at once: the helper's producer puts the groups that arrive during a
    transaction into the next one, so the helper goes on with the next group without waiting for
    this process, which, busy validating a burst of requests, took up to ~30 ms to hand it over.
    (A process pool's threads took several ms per hand-over while this process was busy.) A helper
    that died or hangs is replaced; the groups it had fail, and the new producer, with the same
    transactional id, fences the old one's open transaction and continues its chains from Kafka."""

    def __init__(self, bootstrap: str, timeout: float, transactional_id: str) -> None:
        self._args = (bootstrap, timeout, transactional_id)
        # Beyond the producer's own limit (about twice `timeout` in a transaction) the helper hangs.
        self._limit = 3 * timeout + 5
        self._helper = _Helper(self._args)
        self._numbers = itertools.count()

    async def publish(self, events: Sequence[Publishable]) -> None:
        payload = pickle.dumps([outgoing(e) for e in events], protocol=pickle.HIGHEST_PROTOCOL)
        helper = self._helper
        try:
            # Not `wait_for`: its task would start only after the loop's ready callbacks, ~10 ms here.
            async with asyncio.timeout(self._limit):
                reply = await helper.publish(next(self._numbers), payload)
        except (OSError, EOFError, TimeoutError) as exc:
            if helper is self._helper:  # not replaced yet by another group's failure
                helper.kill(exc)
                self._helper = _Helper(self._args)
            raise PublishFailed(f"the gateway's publishing process failed: {exc!r}") from exc
        if reply:
            raise PublishFailed(reply.decode())

    async def stop(self) -> None:
        await self._helper.stop(self._limit)


_CLOSING: set[asyncio.Task] = set()  # helpers closing their pipes
_NUMBER = struct.Struct("!Q")  # a group's number, before its events and before the helper's reply
_STOP = _DONE = b""


class _Helper:
    """One publishing process: groups go out on one pipe, numbered; replies come back on another."""

    def __init__(self, args: tuple[str, float, str]) -> None:
        context = get_context("spawn")
        requests, self._requests = context.Pipe(duplex=False)
        self._replies, replies = context.Pipe(duplex=False)
        self.process = context.Process(target=_serve, args=(requests, replies, os.getpid(), gc.get_threshold(), *args),
                                       name=f"publisher {args[2]}", daemon=True)
        self.process.start()
        requests.close()
        replies.close()
        _widen(self._requests)
        self._waiting: dict[int, asyncio.Future[bytes]] = {}
        self._writing = asyncio.Lock()  # one message at a time on the pipe
        self._reader: asyncio.Task | None = None
        self._closing: asyncio.Task | None = None

    async def publish(self, number: int, payload: bytes) -> bytes:
        """The helper's reply to this group: b"" once Kafka acknowledged it, else why it failed."""
        if self._replies_read().done() or not self.process.is_alive():
            raise EOFError("the publishing process is gone")
        reply = self._waiting[number] = asyncio.get_running_loop().create_future()
        try:
            async with self._writing:
                await _sent(self._requests, _NUMBER.pack(number) + payload)
            return await reply
        finally:
            self._waiting.pop(number, None)

    def _replies_read(self) -> asyncio.Task:
        """The task that reads the helper's replies, started with the first group (or the stop)."""
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_replies(), name=f"replies of {self.process.name}")
        return self._reader

    async def _read_replies(self) -> None:
        failure: BaseException = EOFError("the publishing process stopped")
        try:
            messages = _Messages(self._replies)
            while (message := await messages.next()) != _DONE:
                (number,) = _NUMBER.unpack_from(message)
                reply = self._waiting.get(number)
                if reply is not None and not reply.done():
                    reply.set_result(message[_NUMBER.size:])
        except (OSError, EOFError) as exc:
            failure = exc
        self._fail(failure)

    def _fail(self, failure: BaseException) -> None:
        for reply in self._waiting.values():
            if not reply.done():
                reply.set_exception(failure)

    def kill(self, failure: BaseException) -> None:
        """Its groups fail now; its pipes close once nothing waits on them (the dead process's ends are
        closed, so the reader meets the end of its pipe and a writer a broken pipe)."""
        self.process.kill()
        self._fail(failure)
        if self._closing is None:
            self._closing = asyncio.create_task(self._close())
            # The event loop holds tasks weakly, and a replaced helper is referenced by nothing else.
            _CLOSING.add(self._closing)
            self._closing.add_done_callback(_CLOSING.discard)

    async def _close(self) -> None:
        async with self._writing:
            self._requests.close()
        if self._reader is not None:
            await asyncio.wait([self._reader])
        self._replies.close()

    async def stop(self, limit: float) -> None:
        """The helper finishes its groups, stops its producer and exits."""
        with contextlib.suppress(OSError, EOFError, TimeoutError):
            async with self._writing:
                await asyncio.wait_for(_sent(self._requests, _STOP), limit)
            await asyncio.wait_for(asyncio.shield(self._replies_read()), limit)
        self.kill(EOFError("the gateway stops"))  # a helper that stopped has exited already
        await self._closing
        await asyncio.to_thread(self.process.join, 5)


async def _sent(pipe: Connection, message: bytes) -> None:
    """Sends `message` as `Connection.send_bytes` frames it, waiting without blocking the event loop
    while the pipe is full."""
    loop = asyncio.get_running_loop()
    fd = pipe.fileno()
    data = memoryview(_LENGTH.pack(len(message)) + message)
    os.set_blocking(fd, False)
    while data:
        try:
            data = data[os.write(fd, data):]
        except BlockingIOError:
            await _ready(loop.add_writer, loop.remove_writer, fd)


class _Messages:
    """The messages on a pipe, framed as `Connection.send_bytes` frames them, each waited for without
    blocking the event loop (`recv_bytes` would block it until a long message is all there)."""

    def __init__(self, pipe: Connection) -> None:
        self._pipe = pipe
        self._buffer = bytearray()

    async def next(self) -> bytes:
        loop = asyncio.get_running_loop()
        fd = self._pipe.fileno()
        os.set_blocking(fd, False)
        while True:
            if len(self._buffer) >= _LENGTH.size:
                end = _LENGTH.size + _LENGTH.unpack_from(self._buffer)[0]
                if len(self._buffer) >= end:
                    message = bytes(self._buffer[_LENGTH.size:end])
                    del self._buffer[:end]
                    return message
            try:
                chunk = os.read(fd, _PIPE_BYTES)
            except BlockingIOError:
                await _ready(loop.add_reader, loop.remove_reader, fd)
                continue
            if not chunk:
                raise EOFError("the other end of the pipe is closed")
            self._buffer += chunk


async def _ready(add: Callable[..., None], remove: Callable[[int], object], fd: int) -> None:
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    add(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        remove(fd)


_LENGTH = struct.Struct("!i")  # `Connection.send_bytes`'s header, for messages below 2 GB
_PIPE_BYTES = 1 << 20


def _widen(pipe: Connection) -> None:
    """A group (at most 1,000 events, ~650 KB) fits in the pipe at once (Linux lets a pipe hold up to
    1 MB, 64 KB by default), so that it goes over in one write."""
    with contextlib.suppress(AttributeError, OSError):
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)


def _serve(requests: Connection, replies: Connection, parent: int, gc_threshold: tuple[int, ...], bootstrap: str,
           timeout: float, transactional_id: str) -> None:
    """The publishing helper: publishes each numbered group it receives, as soon as it arrives (the
    producer group-commits those that arrive during a transaction), and answers with the group's
    number followed by b"" or why it failed."""
    exit_with(parent)
    settle(gc_threshold)

    async def publish(producer: EventProducer, message: bytes) -> None:
        number = message[:_NUMBER.size]
        try:
            await producer.send_many([to_item(*e) for e in pickle.loads(message[_NUMBER.size:])])
        except Exception as exc:  # the service answers 503
            replies.send_bytes(number + (str(exc) or repr(exc)).encode())
        else:
            replies.send_bytes(number)

    async def serve() -> None:
        producer = gateway_producer(bootstrap, timeout, transactional_id)
        groups: set[asyncio.Task] = set()
        messages = _Messages(requests)
        try:
            while (message := await messages.next()) != _STOP:
                group = asyncio.create_task(publish(producer, message))
                groups.add(group)
                group.add_done_callback(groups.discard)
            await asyncio.gather(*groups)
        finally:
            await producer.stop()
        replies.send_bytes(_DONE)  # stopped

    with contextlib.suppress(EOFError, OSError, KeyboardInterrupt):  # the service is gone or stops
        asyncio.run(serve())
