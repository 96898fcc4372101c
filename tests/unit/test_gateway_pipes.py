"""The gateway's pipes to its publishing process: whole messages, in order, whatever their size."""

from __future__ import annotations

import asyncio
from multiprocessing import get_context

import pytest

from services.gateway.messaging import _Messages, _sent, _widen


def test_messages_cross_a_pipe_whole_and_in_order_also_when_larger_than_the_pipe() -> None:
    messages = [b"", b"x" * 10, bytes(range(256)) * 12_000, b"y", b"z" * 70_000]  # the third: 3 MB

    async def scenario() -> tuple[list[bytes], bytes]:
        reader, writer = get_context("spawn").Pipe(duplex=False)
        _widen(writer)

        async def send() -> None:
            for message in messages:
                await _sent(writer, message)

        sending = asyncio.create_task(send())
        incoming = _Messages(reader)
        received = [await incoming.next() for _ in messages]
        await sending
        # the other direction: the publishing process answers with `send_bytes`
        writer.send_bytes(b"answer")
        answer = await incoming.next()
        reader.close()
        writer.close()
        return received, answer

    received, answer = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert received == messages
    assert answer == b"answer"


def test_the_end_of_the_pipe_is_reported() -> None:
    async def scenario() -> None:
        reader, writer = get_context("spawn").Pipe(duplex=False)
        writer.send_bytes(b"last")
        writer.close()
        incoming = _Messages(reader)
        assert await incoming.next() == b"last"
        with pytest.raises(EOFError):
            await incoming.next()
        reader.close()

    asyncio.run(asyncio.wait_for(scenario(), 10))
