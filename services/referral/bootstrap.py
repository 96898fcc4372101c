"""Composition root of the referral service."""

from __future__ import annotations

from fastapi import FastAPI

from kim.service import add_health_routes, kafka_reachable
from kim.settings import KimSettings


def create_app(settings: KimSettings) -> FastAPI:
    app = FastAPI(
        title="KIM referral",
        description="Referral: responsibility per person and area across agencies, handovers and jurisdiction gaps.",
        version="1",
    )
    add_health_routes(app, "referral", [kafka_reachable(settings.bootstrap)])
    return app
