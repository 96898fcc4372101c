"""Composition root of the caseplan service."""

from __future__ import annotations

from fastapi import FastAPI

from kim.service import add_health_routes, kafka_reachable
from kim.settings import KimSettings


def create_app(settings: KimSettings) -> FastAPI:
    app = FastAPI(
        title="KIM caseplan",
        description="Case plan: integration plans, measures and the cross-agency timeline for case managers.",
        version="1",
    )
    add_health_routes(app, "caseplan", [kafka_reachable(settings.bootstrap)])
    return app
