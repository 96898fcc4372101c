"""Composition root of the intake service."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from kim.auth import TokenVerifier
from kim.consent import CONSENT_SCHEMA
from kim.messaging import EventProducer, RelayGroup
from kim.service import add_health_routes, consumer_caught_up, consuming_and_relaying, kafka_reachable
from kim.storage import Database, eventsourcing_env
from services.intake import store
from services.intake.api import add_error_handlers, router
from services.intake.application import Intake, PersonEvents
from services.intake.crypto import KeyRing, load_or_create_master_key
from services.intake.messaging import consent_consumer, outbox_relays
from services.intake.settings import IntakeSettings

DESCRIPTION = """\
Intake holds the personal data of the persons supported — names, birth date,
contact, notes — encrypted with a key of each person's own, and publishes only
pseudonymous events (`PersonRegistered`, consents, profiles). Reads are limited by
the person's consents and written to an append-only access log; erasure destroys
the person's key (crypto-shredding).
"""


def open_key_ring(settings: IntakeSettings, db: Database) -> KeyRing:
    configured = settings.intake_master_key.get_secret_value() if settings.intake_master_key else None
    keys = KeyRing(load_or_create_master_key(configured, settings.data_dir / "keys" / "intake-master.key"))
    with db.transaction() as tx:
        if not store.IntakeStore.check_master_key(tx, keys.check_value):
            raise RuntimeError("the intake master key is not the one this store was written with; set "
                               "KIM_INTAKE_MASTER_KEY to that key")
    return keys


def create_app(settings: IntakeSettings) -> FastAPI:
    verifier = TokenVerifier(settings)  # fails at start-up when no token issuer is configured

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        (settings.data_dir / "stores").mkdir(parents=True, exist_ok=True)
        url = settings.store_url("intake")
        db = Database.from_url(url)
        db.ensure_schema(CONSENT_SCHEMA + store.schema(db.dialect))
        keys = open_key_ring(settings, db)
        events = PersonEvents(env=eventsourcing_env(url))
        producer = EventProducer(settings.bootstrap, client_id="kim-intake")
        relays = RelayGroup(outbox_relays(events, producer, db))

        consumer = consent_consumer(db, settings.bootstrap, settings.intake_group)
        app.state.token_verifier = verifier
        app.state.intake = Intake(events, db, keys, on_saved=relays.wake)
        app.state.consumer = consumer
        try:
            async with consuming_and_relaying(consumer, relays, producer):
                yield
        finally:
            events.close()
            db.close()

    app = FastAPI(title="KIM intake", version="1", description=DESCRIPTION, lifespan=lifespan)
    app.include_router(router)
    add_error_handlers(app)

    add_health_routes(app, "intake", [kafka_reachable(settings.bootstrap),
                                      consumer_caught_up(app, "the consents on the agency topics")])
    return app
