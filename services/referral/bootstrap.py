"""Composition root of the referral service."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from concurrent.futures.process import BrokenProcessPool
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from fastapi import FastAPI

from kim.auth import TokenVerifier
from kim.helper import helper_process
from kim.messaging import EventProducer, TrackedConsumer
from kim.service import add_health_routes, kafka_reachable
from kim.storage import Database
from services.referral.api import router
from services.referral.application import Referral
from services.referral.messaging import agency_consumer, encode_derived, publish_derived, serve_agency_batches
from services.referral.projections import SCHEMA
from services.referral.rules import load_rules
from services.referral.settings import ReferralSettings

log = logging.getLogger(__name__)

_instances = itertools.count(1)  # referral apps started in this process

# The worker process's own view of the store (set by `_start_worker`).
_worker_referral: Referral | None = None


def _start_worker(store_url: str, rules_file: Path | None) -> None:
    global _worker_referral
    _worker_referral = Referral(Database.from_url(store_url), load_rules(rules_file), encode_derived)
    serve_agency_batches(_worker_referral)


def _recompute_in_worker(partitions: Sequence[int]) -> int:
    assert _worker_referral is not None
    return _worker_referral.recompute_due(partitions)


async def _recompute_due(referral: Referral, worker: Executor | None, owned: list[int],
                         going_on: Callable[[], bool]) -> None:
    """Recompute the due persons of `owned`, chunk after chunk, until none is left or `going_on()`
    fails; with a worker, the persons of every other partition there, at the same time."""
    async def here(partitions: list[int]) -> int:
        return await anyio.to_thread.run_sync(referral.recompute_due, partitions)

    async def there(partitions: list[int]) -> int:
        try:
            return await asyncio.get_running_loop().run_in_executor(worker, _recompute_in_worker, partitions)
        except BrokenProcessPool:
            log.warning("the worker process is gone; computing its persons here")
            return await here(partitions)

    async def until_done(recompute: Callable[[list[int]], Awaitable[int]], partitions: list[int]) -> None:
        while going_on() and await recompute(partitions) > 0:
            pass

    if worker is None or len(owned) < 2:
        await until_done(here, owned)
    else:
        await asyncio.gather(until_done(here, owned[::2]), until_done(there, owned[1::2]))


async def _recompute(referral: Referral, worker: Executor | None, consumer: TrackedConsumer, tick_s: float,
                     wake: asyncio.Event, stopping: asyncio.Event, quiet: asyncio.Event) -> None:
    """Recompute persons with new facts as soon as they are stored, and persons whose
    deadline passed within `tick_s` without any event arriving (§4). Each instance
    looks after the persons of the partitions it owns. While the consumer catches up
    (at start, after a rebalance) nobody is recomputed: each person touched then is
    computed once at the end rather than once per batch of their facts. `quiet` is clear
    while persons are being computed."""
    while not stopping.is_set():
        wake.clear()
        if not consumer.caught_up():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(consumer.wait_caught_up(), tick_s)
            continue
        try:
            owned = consumer.owned_partitions()
            if owned is not None:
                quiet.clear()
                await _recompute_due(referral, worker, owned,
                                     lambda: consumer.caught_up() and not stopping.is_set())
        except Exception:
            log.exception("recomputing persons failed; retrying")
        finally:
            quiet.set()
        try:
            await asyncio.wait_for(wake.wait(), tick_s)
        except TimeoutError:
            pass


async def _consume(consumer: TrackedConsumer, app: FastAPI) -> None:
    try:
        await consumer.run()
    except Exception as exc:
        # Readiness reports it; the projection stays as last committed.
        log.exception("the referral consumer stopped")
        app.state.consumer_error = f"the consumer stopped: {exc!r}"


def create_app(settings: ReferralSettings) -> FastAPI:
    verifier = TokenVerifier(settings)
    rules = load_rules(settings.rules_file)  # a bad rules file stops the start

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        (settings.data_dir / "stores").mkdir(parents=True, exist_ok=True)
        db = Database.from_url(settings.store_url("referral"))
        db.ensure_schema(SCHEMA)
        wake, stopping, quiet = asyncio.Event(), asyncio.Event(), asyncio.Event()
        quiet.set()
        referral = Referral(db, rules, encode_derived)
        # Validating and storing events costs the most per event, computing a person the most per person:
        # a second process validates and stores while this one reads Kafka, and computes half of the persons.
        worker = helper_process(_start_worker, (settings.store_url("referral"), settings.rules_file))
        consumer = agency_consumer(referral, db, settings.bootstrap, settings.referral_group, apply_in=worker,
                                   after_commit=wake.set)
        # Instances of a group publish side by side: each needs a hash chain of its own (also two
        # instances in one process, as the scale-out test runs them).
        producer = EventProducer(settings.bootstrap, client_id="kim-referral",
                                 chain=f"kim-referral-{socket.gethostname()}-{os.getpid()}-{next(_instances)}")
        app.state.referral = referral
        app.state.token_verifier = verifier
        app.state.consumer = consumer
        tasks = [asyncio.create_task(_consume(consumer, app), name="referral-consumer"),
                 asyncio.create_task(_recompute(referral, worker, consumer, settings.referral_tick_s, wake, stopping,
                                                quiet)),
                 asyncio.create_task(publish_derived(db, producer, stopping, quiet))]
        try:
            yield
        finally:
            stopping.set()
            consumer.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            await producer.stop()
            if worker is not None:
                worker.shutdown(cancel_futures=True)
            db.close()

    app = FastAPI(title="KIM referral", version="1", lifespan=lifespan,
                  description="Responsibility per person and area across agencies, handovers and "
                              "jurisdiction gaps (Rechtskreiswechsel without gaps).")
    app.include_router(router)

    async def caught_up() -> str | None:
        consumer = getattr(app.state, "consumer", None)
        if getattr(app.state, "consumer_error", None):
            return app.state.consumer_error
        if consumer is None or not consumer.caught_up():
            return "still consuming the agency topics"
        if not await anyio.to_thread.run_sync(app.state.referral.settled, consumer.owned_partitions() or []):
            return "still computing responsibility"
        return None

    add_health_routes(app, "referral", [kafka_reachable(settings.bootstrap), caught_up])
    return app
