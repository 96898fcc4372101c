"""Composition root of the intake service."""

from __future__ import annotations

from fastapi import FastAPI

from kim.service import add_health_routes, kafka_reachable
from kim.settings import KimSettings


def create_app(settings: KimSettings) -> FastAPI:
    app = FastAPI(
        title="KIM intake",
        description="Intake: personal data of the persons supported, encrypted per person, with consent and erasure.",
        version="1",
    )
    add_health_routes(app, "intake", [kafka_reachable(settings.bootstrap)])
    return app
