"""Composition root of the gateway."""

from __future__ import annotations

import socket
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from kim.auth import TokenVerifier
from kim.helper import has_second_cpu
from kim.service import add_health_routes, kafka_reachable
from kim.storage import Database
from services.gateway.api import VerifiedTokens, request_examples, router
from services.gateway.application import AcceptEvents
from services.gateway.messaging import HelperPublisher, KafkaPublisher, gateway_producer
from services.gateway.settings import GatewaySettings
from services.gateway.store import SqlAcceptedEvents

DESCRIPTION = """\
Agency systems publish events here. Each event is a CloudEvent (JSON structured
mode) of the KIM catalogue; the gateway checks the envelope and payload against the
contract and the caller's right to publish it, then writes it to the agency's Kafka
topic and answers 202 once Kafka has acknowledged every event of the request.
A batch is all-or-nothing; `(source, id)` is the deduplication key, for ever.
"""


def _publisher(settings: GatewaySettings, transactional_id: str) -> HelperPublisher | KafkaPublisher:
    """In a helper process of its own when there is a second CPU."""
    if not has_second_cpu():
        return KafkaPublisher(gateway_producer(settings.bootstrap, settings.publish_timeout_s, transactional_id))
    return HelperPublisher(settings.bootstrap, settings.publish_timeout_s, transactional_id)


def create_app(settings: GatewaySettings, instance: str | None = None) -> FastAPI:
    """`instance` names this gateway process; it must be stable across restarts
    (its Kafka transactional id fences a crashed predecessor's open transaction)."""
    instance = instance or socket.gethostname()
    verifier = TokenVerifier(settings)  # fails at start-up when no token issuer is configured

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        (settings.data_dir / "stores").mkdir(parents=True, exist_ok=True)
        db = Database.from_url(settings.store_url("gateway"))
        # Each its own transactional id and hash chain (the first keeps the id of single-producer gateways).
        publishers = [_publisher(settings, f"kim-gateway-{instance}" + (f"-{n}" if n else ""))
                      for n in range(settings.kafka_transactions)]
        app.state.settings = settings
        app.state.token_verifier = verifier
        app.state.verified_tokens = VerifiedTokens()
        app.state.accept_events = AcceptEvents(SqlAcceptedEvents(db), publishers, max_group_events=1000,
                                               groups_per_publisher=2, overlap_events=200)
        try:
            yield
        finally:
            await app.state.accept_events.close()
            for publisher in publishers:
                await publisher.stop()
            db.close()

    app = FastAPI(title="KIM gateway", version="1", description=DESCRIPTION, lifespan=lifespan)
    app.include_router(router)
    add_health_routes(app, "gateway", [kafka_reachable(settings.bootstrap)])

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            schema["paths"]["/v1/events"]["post"]["requestBody"]["content"] = request_examples()
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}
            schema["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app
