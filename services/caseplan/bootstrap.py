"""Composition root of the caseplan service."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import HTTPException
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from kim.auth import TokenVerifier
from kim.messaging import EventProducer, RelayGroup
from kim.service import add_health_routes, consumer_caught_up, consuming_and_relaying, kafka_reachable
from kim.storage import Database, eventsourcing_env
from services.caseplan import api, login, web
from services.caseplan.application import CasePlans, CasePlanService, Forbidden
from services.caseplan.domain import PlanError
from services.caseplan.clients import Peer
from services.caseplan.messaging import plan_relays, timeline_consumer
from services.caseplan.projections import SCHEMA
from services.caseplan.settings import CaseplanSettings

HERE = Path(__file__).parent

DESCRIPTION = """\
Integration plans (draft, goals, signed agreement, measures, goals achieved,
re-assessment, case closed), the person's timeline across all agencies as the
caller may see it (§6), and the caseload of each case manager. The German screens
for case managers are served at `/`.
"""


def create_app(settings: CaseplanSettings) -> FastAPI:
    verifier = TokenVerifier(settings)  # fails at start-up when no token issuer is configured

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        (settings.data_dir / "stores").mkdir(parents=True, exist_ok=True)
        url = settings.store_url("caseplan")
        db = Database.from_url(url)
        db.ensure_schema(SCHEMA)
        plans = CasePlans(env=eventsourcing_env(url))
        producer = EventProducer(settings.bootstrap, client_id="kim-caseplan")
        consumer = timeline_consumer(db, settings.bootstrap, settings.caseplan_group)
        relays = RelayGroup(plan_relays(plans, producer, db))
        http = httpx.AsyncClient(timeout=10.0)
        app.state.settings = settings
        app.state.token_verifier = verifier

        app.state.service = CasePlanService(plans, db, on_saved=relays.wake)
        app.state.consumer = consumer
        app.state.http = http
        app.state.intake = Peer("intake", settings.intake_url, http)
        app.state.referral = Peer("referral", settings.referral_url, http)
        try:
            async with consuming_and_relaying(consumer, relays, producer):
                yield
        finally:
            await http.aclose()
            plans.close()
            db.close()

    app = FastAPI(title="KIM caseplan", version="1", description=DESCRIPTION, lifespan=lifespan)
    app.state.templates = Jinja2Templates(directory=HERE / "templates")
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(api.router)
    app.include_router(login.router)
    app.include_router(web.router)
    _add_error_handlers(app)

    add_health_routes(app, "caseplan", [kafka_reachable(settings.bootstrap),
                                      consumer_caught_up(app, "the agency topics")])
    return app


def _add_error_handlers(app: FastAPI) -> None:
    async def plan_error(request: Request, exc: PlanError) -> Response:
        return api.plan_error_response(exc)

    async def forbidden(request: Request, exc: Forbidden) -> Response:
        return api.forbidden_response(exc)

    async def contract_error(request: Request, exc: ValidationError) -> Response:
        return api.contract_error_response(exc)

    async def login_required(request: Request, exc: login.LoginRequired) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        # The screens answer in German HTML; the API and its documentation keep JSON.
        if request.url.path.startswith(("/v1/", "/docs", "/openapi", "/healthz", "/readyz", "/static/")):
            return await http_exception_handler(request, exc)
        return request.app.state.templates.TemplateResponse(
            request, "error.html", {"user": None, "message": exc.detail if isinstance(exc.detail, str) else
                                    "Diese Seite gibt es nicht."}, status_code=exc.status_code)

    app.add_exception_handler(PlanError, plan_error)
    app.add_exception_handler(Forbidden, forbidden)
    app.add_exception_handler(ValidationError, contract_error)
    app.add_exception_handler(login.LoginRequired, login_required)
    app.add_exception_handler(HTTPException, http_error)
