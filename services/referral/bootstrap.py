"""Composition root of the referral service."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from kim.auth import TokenVerifier
from kim.messaging import EventProducer, TrackedConsumer
from kim.service import add_health_routes, kafka_reachable
from kim.storage import Database
from services.referral.api import router
from services.referral.application import Referral
from services.referral.messaging import agency_consumer, encode_derived, publish_derived
from services.referral.projections import SCHEMA
from services.referral.rules import load_rules
from services.referral.settings import ReferralSettings

log = logging.getLogger(__name__)


async def _recompute(referral: Referral, consumer: TrackedConsumer, tick_s: float, wake: asyncio.Event,
                     stopping: asyncio.Event) -> None:
    """Recompute persons with new facts as soon as they are stored, and persons whose
    deadline passed within `tick_s` without any event arriving (§4). Each instance
    looks after the persons of the partitions it owns."""
    while not stopping.is_set():
        wake.clear()
        try:
            owned = consumer.owned_partitions()
            if owned is not None and await anyio.to_thread.run_sync(referral.recompute_due, owned) >= 1:
                continue  # more may be waiting
        except Exception:
            log.exception("recomputing persons failed; retrying")
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
        loop = asyncio.get_running_loop()
        wake, stopping = asyncio.Event(), asyncio.Event()
        referral = Referral(db, rules, encode_derived, on_stale=lambda: loop.call_soon_threadsafe(wake.set))
        consumer = agency_consumer(referral, db, settings.bootstrap, settings.referral_group)
        # Instances of a group publish side by side: each needs a hash chain of its own.
        producer = EventProducer(settings.bootstrap, client_id="kim-referral",
                                 chain=f"kim-referral-{socket.gethostname()}-{os.getpid()}")
        app.state.referral = referral
        app.state.token_verifier = verifier
        app.state.consumer = consumer
        tasks = [asyncio.create_task(_consume(consumer, app), name="referral-consumer"),
                 asyncio.create_task(_recompute(referral, consumer, settings.referral_tick_s, wake, stopping)),
                 asyncio.create_task(publish_derived(db, producer, stopping))]
        try:
            yield
        finally:
            stopping.set()
            consumer.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            await producer.stop()
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
