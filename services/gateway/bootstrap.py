"""Composition root of the gateway service."""

from __future__ import annotations

from fastapi import FastAPI

from kim.service import add_health_routes, kafka_reachable
from kim.settings import KimSettings


def create_app(settings: KimSettings) -> FastAPI:
    app = FastAPI(
        title="KIM gateway",
        description="Agency gateway: agency systems publish events (CloudEvents) here; they are validated, authorised and written to Kafka.",
        version="1",
    )
    add_health_routes(app, "gateway", [kafka_reachable(settings.bootstrap)])
    return app
