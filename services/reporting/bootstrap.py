"""Composition root of the reporting service."""

from __future__ import annotations

from fastapi import FastAPI

from kim.service import add_health_routes, kafka_reachable
from kim.settings import KimSettings


def create_app(settings: KimSettings) -> FastAPI:
    app = FastAPI(
        title="KIM reporting",
        description="Reporting: anonymised figures for the steering group, with statistical disclosure control.",
        version="1",
    )
    add_health_routes(app, "reporting", [kafka_reachable(settings.bootstrap)])
    return app
