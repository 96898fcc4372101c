"""Composition root of the reporting service."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from fastapi import FastAPI

from kim.audit.topics import end_offsets
from kim.auth import TokenVerifier
from kim.messaging import DEADLETTER_TOPIC, EventProducer
from kim.messaging.consumer import dead_letter_record
from kim.service import add_health_routes, kafka_reachable
from kim.topics import EVENT_TOPICS
from services.referral.rules import load_rules
from services.reporting.api import router
from services.reporting.application import Reporting
from services.reporting.dashboard import router as dashboard_router
from services.reporting.helper import HelperProcess
from services.reporting.messaging import envelopes_value, kept_records, records_of_envelopes, wanted
from services.reporting.settings import ReportingSettings, case_managers
from services.reporting.streaming import ReportingFaust, create_faust_app, lagging, store_batch

log = logging.getLogger(__name__)

_CHUNK = 2000  # events per changelog record, well below Kafka's message size limit
_MAX_STALENESS_S = 60.0  # while catching up, the figures are recomputed at least this often


@dataclass
class _Progress:
    """What readiness and the refresh loop need to know about the consumer."""

    recovered: bool = False
    targets: dict[Any, int] = field(default_factory=dict)
    reached: set[Any] = field(default_factory=set)
    last_batch: float = 0.0
    last_refresh: float = field(default_factory=time.monotonic)


async def _refresh_loop(faust_app: ReportingFaust, reporting: Reporting, helper: HelperProcess,
                        progress: _Progress, max_staleness_s: float, stopping: asyncio.Event) -> None:
    """Recompute once the consumer has caught up, and at least every `max_staleness_s` while it catches up:
    recomputing a person costs more than adding an event, so persons are recomputed once for many events."""
    while not stopping.is_set():
        if progress.recovered and reporting.due():
            stale = time.monotonic() - progress.last_refresh > max_staleness_s
            idle = time.monotonic() - progress.last_batch > 0.2
            if stale or (idle and not await lagging(faust_app)):
                try:
                    await anyio.to_thread.run_sync(reporting.refresh, helper)
                except Exception:
                    log.exception("recomputing the figures failed; retrying")
                progress.last_refresh = time.monotonic()
        try:
            await asyncio.wait_for(stopping.wait(), 0.1)
        except TimeoutError:
            pass


def create_app(settings: ReportingSettings) -> FastAPI:
    verifier = TokenVerifier(settings)
    rules = load_rules(settings.rules_file)  # a bad district file stops the start
    staff = case_managers(settings.rules_file)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        datadir = settings.data_dir / "reporting"
        datadir.mkdir(parents=True, exist_ok=True)
        reporting = Reporting(rules, staff)
        progress = _Progress()
        stopping = asyncio.Event()
        faust_app, table = create_faust_app(settings.reporting_group, settings.bootstrap, list(EVENT_TOPICS),
                                            settings.partitions, settings.replication_factor, str(datadir))
        deadletters = EventProducer(settings.bootstrap, client_id=f"{settings.reporting_group}-dlq", chain=False)

        # Validating costs the most per event, computing a person the most per person: a helper process
        # does both for half of the persons. Without one (a single CPU), the event loop validates itself:
        # a thread would cost more in contention for the interpreter lock with faust's consumer thread.
        helper = HelperProcess(settings.rules_file, on_gone=reporting.reclaim)

        async def handle(messages: Sequence[Any]) -> None:
            chosen = [m for m in messages if wanted(m.headers)]
            values = [m.value or b"" for m in chosen]
            invalid = await helper.validated(values)
            kept = kept_records(values, invalid)
            # The table keeps the new events as they were published, per partition.
            fresh: dict[int, list[bytes]] = defaultdict(list)
            for _, _, message in reporting.add((s, r, chosen[i]) for i, s, r in kept):
                fresh[message.partition].append(message.value)
            for partition, values in fresh.items():
                for start in range(0, len(values), _CHUNK):
                    store_batch(table, partition, envelopes_value(values[start:start + _CHUNK]))
            if invalid:  # before the batch is acknowledged, so that none is lost
                await deadletters.send_records(DEADLETTER_TOPIC, [
                    dead_letter_record(chosen[i], reason, "reporting") for i, reason in invalid])
            progress.last_batch = time.monotonic()

        @table.on_recover
        async def recovered() -> None:
            values = [v for v in table.data.values() if v]
            await asyncio.gather(helper.restored(values), anyio.to_thread.run_sync(
                lambda: reporting.add((s, r, None) for v in values for s, r in records_of_envelopes(v))))
            assigned = [tp for tp in faust_app.consumer.assignment() if tp.topic in faust_app.source_topics]
            progress.targets = await end_offsets(settings.bootstrap, assigned)
            progress.recovered = True

        faust_app.batch_handler = handle
        app.state.reporting = reporting
        app.state.helper = helper
        app.state.token_verifier = verifier
        app.state.faust = faust_app
        app.state.progress = progress
        await faust_app.start()
        refresher = asyncio.create_task(_refresh_loop(faust_app, reporting, helper, progress, _MAX_STALENESS_S,
                                                      stopping))
        try:
            yield
        finally:
            stopping.set()
            await refresher
            await faust_app.stop()
            await deadletters.stop()
            helper.stop()

    app = FastAPI(title="KIM reporting", version="1", lifespan=lifespan,
                  description="Kennzahlensystem: anonymised figures for the steering group by month and "
                              "municipality, with statistical disclosure control (no count below 5 persons).")
    app.include_router(router)
    app.include_router(dashboard_router)

    async def caught_up() -> str | None:
        progress: _Progress | None = getattr(app.state, "progress", None)
        faust_app: ReportingFaust | None = getattr(app.state, "faust", None)
        if progress is None or faust_app is None or not progress.recovered:
            return "restoring the table of kept events"
        for tp, target in progress.targets.items():
            if tp not in progress.reached:
                position = await faust_app.consumer.position(tp)
                if position is None or position < target:
                    return "still consuming the event topics"
                progress.reached.add(tp)
        if not app.state.reporting.current():
            return "computing the figures"
        return None

    add_health_routes(app, "reporting", [kafka_reachable(settings.bootstrap), caught_up])
    return app
