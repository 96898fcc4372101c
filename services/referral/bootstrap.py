"""Composition root of the referral service."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from concurrent.futures.process import BrokenProcessPool
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import anyio
from fastapi import FastAPI

from kim.auth import TokenVerifier
from kim.helper import helper_process
from kim.messaging import EventProducer
from kim.service import add_health_routes, kafka_reachable
from kim.storage import Database
from services.referral.api import router
from services.referral.application import Referral
from services.referral.messaging import agency_consumer, encode_derived, publish_derived
from services.referral.projections import SCHEMA
from services.referral.rules import load_rules
from services.referral.settings import ReferralSettings

log = logging.getLogger(__name__)

_instances = itertools.count(1)  # referral apps started in this process

T = TypeVar("T")


@dataclass(frozen=True)
class MemberStatus:
    error: str | None  # why the member stopped consuming, if it did
    caught_up: bool
    computing: bool
    owned: list[int] | None  # partition numbers; None before an assignment


class Member:
    """A member of the referral consumer group: consumes the partition numbers it owns on every agency
    topic and recomputes their persons as soon as their facts are stored, and when one of their deadlines
    passes without any event arriving (§4). A service runs one in its own process and, with a second CPU,
    one in its helper process: reading, validating and computing each take a CPU's time per event."""

    def __init__(self, referral: Referral, bootstrap: str, group: str, tick_s: float) -> None:
        self.referral = referral
        self.tick_s = tick_s
        self.error: str | None = None
        self.stopping = asyncio.Event()
        self.wake = asyncio.Event()
        self.quiet = asyncio.Event()  # clear while persons are being computed
        self.quiet.set()
        self.consumer = agency_consumer(referral, bootstrap, group, after_commit=self.wake.set)

    def status(self) -> MemberStatus:
        return MemberStatus(self.error, self.consumer.caught_up(), not self.quiet.is_set(),
                            self.consumer.owned_partitions())

    def stop(self) -> None:
        self.stopping.set()
        self.consumer.stop()

    async def run(self) -> None:
        await asyncio.gather(self._consume(), self._recompute())

    async def _consume(self) -> None:
        try:
            await self.consumer.run()
        except Exception as exc:
            # Readiness reports it; the projection stays as last committed.
            log.exception("the referral consumer stopped")
            self.error = f"the consumer stopped: {exc!r}"

    async def _recompute(self) -> None:
        """While the consumer catches up (at start, after a rebalance) nobody is recomputed: each person
        touched then is computed once at the end rather than once per batch of their facts."""
        consumer = self.consumer
        store_told = False  # that the catch-up under way has ended
        while not self.stopping.is_set():
            self.wake.clear()
            if not consumer.caught_up():
                store_told = False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(consumer.wait_caught_up(), self.tick_s)
                continue
            try:
                owned = consumer.owned_partitions()
                if owned:
                    self.quiet.clear()
                    if not store_told:
                        await anyio.to_thread.run_sync(self.referral.catch_up_ended)
                        store_told = True
                    while (consumer.caught_up() and not self.stopping.is_set()
                           and await anyio.to_thread.run_sync(self.referral.recompute_due, owned) > 0):
                        pass  # chunk after chunk until none is due
            except Exception:
                log.exception("recomputing persons failed; retrying")
            finally:
                self.quiet.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.tick_s)


# The helper process's member and the thread its event loop runs in (set by `_start_helper_member`).
_helper: tuple[Member, asyncio.AbstractEventLoop, threading.Thread] | None = None


def _start_helper_member(store_url: str, rules_file: Path | None, bootstrap: str, group: str,
                         tick_s: float) -> None:
    global _helper
    referral = Referral(Database.from_url(store_url), load_rules(rules_file), encode_derived)
    member = Member(referral, bootstrap, group, tick_s)
    loop = asyncio.new_event_loop()
    # Its own thread, so that the helper still answers `_helper_status` while the member runs.
    thread = threading.Thread(target=loop.run_until_complete, args=(member.run(),), name="referral member",
                              daemon=True)
    thread.start()
    _helper = member, loop, thread


def _helper_status() -> MemberStatus:
    assert _helper is not None
    return _helper[0].status()


def _stop_helper_member() -> None:
    assert _helper is not None
    member, loop, thread = _helper
    loop.call_soon_threadsafe(member.stop)
    thread.join(30)  # it commits the batch in hand and leaves the group


async def _in_helper(helper: Executor, function: Callable[[], T]) -> T | None:
    """`function()` run in the helper; None if the helper is gone (its partitions then pass to other
    members of the group)."""
    try:
        return await asyncio.get_running_loop().run_in_executor(helper, function)
    except BrokenProcessPool:
        return None


def create_app(settings: ReferralSettings) -> FastAPI:
    verifier = TokenVerifier(settings)
    rules = load_rules(settings.rules_file)  # a bad rules file stops the start

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        (settings.data_dir / "stores").mkdir(parents=True, exist_ok=True)
        db = Database.from_url(settings.store_url("referral"))
        db.ensure_schema(SCHEMA)
        db.close()  # forked with no connection and no thread; the helper's member makes its own
        helper = helper_process(_start_helper_member, (settings.store_url("referral"), settings.rules_file,
                                                       settings.bootstrap, settings.referral_group,
                                                       settings.referral_tick_s), fork=True)
        db = Database.from_url(settings.store_url("referral"))
        referral = Referral(db, rules, encode_derived)
        member = Member(referral, settings.bootstrap, settings.referral_group, settings.referral_tick_s)
        # Instances of a group publish side by side: each needs a hash chain of its own (also two
        # instances in one process, as the scale-out test runs them).
        producer = EventProducer(settings.bootstrap, client_id="kim-referral",
                                 chain=f"kim-referral-{socket.gethostname()}-{os.getpid()}-{next(_instances)}")
        stopping = asyncio.Event()

        async def quiet() -> bool:
            """Neither member computing persons."""
            if not member.quiet.is_set():
                return False
            status = await _in_helper(helper, _helper_status) if helper is not None else None
            return status is None or not status.computing

        app.state.referral = referral
        app.state.token_verifier = verifier
        app.state.members = member, helper
        tasks = [asyncio.create_task(member.run(), name="referral-member"),
                 asyncio.create_task(publish_derived(db, producer, stopping, quiet))]
        try:
            yield
        finally:
            stopping.set()
            member.stop()
            if helper is not None:
                await _in_helper(helper, _stop_helper_member)
            await asyncio.gather(*tasks, return_exceptions=True)
            await producer.stop()
            if helper is not None:
                helper.shutdown(cancel_futures=True)
            db.close()

    app = FastAPI(title="KIM referral", version="1", lifespan=lifespan,
                  description="Responsibility per person and area across agencies, handovers and "
                              "jurisdiction gaps (Rechtskreiswechsel without gaps).")
    app.include_router(router)

    async def caught_up() -> str | None:
        if not hasattr(app.state, "members"):
            return "starting"
        member, helper = app.state.members
        statuses = [member.status()]
        if helper is not None:
            statuses.append(await _in_helper(helper, _helper_status))
        for status in statuses:
            if status is None:
                continue  # the helper is gone
            if status.error:
                return status.error
            if not status.caught_up:
                return "still consuming the agency topics"
            if not await anyio.to_thread.run_sync(app.state.referral.settled, status.owned or []):
                return "still computing responsibility"
        return None

    add_health_routes(app, "referral", [kafka_reachable(settings.bootstrap), caught_up])
    return app
