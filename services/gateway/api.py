"""HTTP surface of the gateway: `POST /v1/events` (§6)."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from kim.auth import Principal, current_principal, require_roles
from kim.messaging import PublishFailed
from services.gateway.application import AcceptEvents
from services.gateway.domain import EventError, assess

log = logging.getLogger(__name__)

SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"

router = APIRouter(prefix="/v1", tags=["events"])

_agency_system_only = require_roles("agency_system").dependency


class VerifiedTokens:
    """Authorization headers verified before, until their token expires.

    Verifying runs in a worker thread (it may fetch the issuer's keys), which
    costs more than the rest of a single-event request; an agency system sends
    the same token for many requests.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit
        self._principals: dict[str, tuple[Principal, float]] = {}

    def get(self, header: str) -> Principal | None:
        found = self._principals.get(header)
        if found is None or found[1] <= time.time():
            return None
        return found[0]

    def remember(self, header: str, principal: Principal) -> None:
        if principal.expires_at is None:  # `exp` is a required claim; without it, nothing to go by
            return
        if len(self._principals) >= self._limit:
            self._principals.clear()
        self._principals[header] = (principal, principal.expires_at)


async def agency_system(request: Request) -> Principal:
    """The caller, as `require_roles("agency_system")` checks it, without its
    two worker-thread hops for a token verified before."""
    header = request.headers.get("authorization", "")
    tokens: VerifiedTokens = request.app.state.verified_tokens
    principal = tokens.get(header)
    if principal is None:
        principal = await run_in_threadpool(current_principal, request)
        tokens.remember(header, principal)
    return _agency_system_only(principal)


AgencySystem = Annotated[Principal, Depends(agency_system)]


async def get_accept_events(request: Request) -> AcceptEvents:  # async: no worker thread for it
    return request.app.state.accept_events


AcceptEventsDep = Annotated[AcceptEvents, Depends(get_accept_events)]


def _problem(status: int, error: str, detail: str, errors: list[EventError] | None = None,
             headers: dict[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": error, "detail": detail}
    if errors is not None:
        body["errors"] = [e.to_dict() for e in errors]
    return JSONResponse(body, status_code=status, headers=headers)


def _read_events(content_type: str, body: bytes, max_events: int) -> list[Any] | EventError:
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type not in (SINGLE, BATCH, "application/json"):
        return EventError(None, None, "Content-Type",
                          f"must be {SINGLE} (one event) or {BATCH} (a JSON array of events)", media_type or None)
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return EventError(None, None, "$", f"the body must be valid UTF-8 JSON ({exc})")
    if media_type == BATCH or (media_type == "application/json" and isinstance(parsed, list)):
        if not isinstance(parsed, list):
            return EventError(None, None, "$", f"a {BATCH} body must be a JSON array of events")
        if not parsed:
            return EventError(None, None, "$", "a batch must hold at least one event")
        if len(parsed) > max_events:
            return EventError(None, None, "$", f"a batch may hold at most {max_events} events, this one has "
                                             f"{len(parsed)}; split it")
        return parsed
    if isinstance(parsed, list):
        return EventError(None, None, "$", f"a {SINGLE} body must be one JSON object; send arrays as {BATCH}")
    return [parsed]


def request_examples() -> dict:
    """One realistic example per event type (from the demo district), and a batch."""
    from kim.demo import generate_district

    first: dict[str, dict] = {}
    for event in generate_district(200, 1.0, 7):
        first.setdefault(event["type"], event)
    single = {event["type"].split(".")[2]: {"summary": event["type"], "value": event}
              for event in sorted(first.values(), key=lambda e: e["type"])}
    batch = [e for e in first.values() if e["source"] == first["de.kim.CaseOpenedByAgency.v1"]["source"]][:3]
    return {
        SINGLE: {"schema": {"type": "object", "description": "one CloudEvent (see contracts/schemas/)"},
                 "examples": single},
        BATCH: {"schema": {"type": "array", "items": {"type": "object"}},
                "examples": {"batch": {"summary": "a batch of one agency's events", "value": batch}}},
    }


@router.post(
    "/events",
    status_code=202,
    summary="Publish one event or a batch (all-or-nothing)",
    responses={
        202: {"description": "Kafka acknowledged every event",
              "content": {"application/json": {"example": {"accepted": 2, "duplicates": 0}}}},
        401: {"description": "missing, expired or badly signed token"},
        403: {"description": "`source` is not the token's agency, or the agency may not emit the type or hold "
                             "the area in that legal domain"},
        422: {"description": "events that break the contract, each with index, id, JSON path and rule"},
        503: {"description": "Kafka cannot take the events now; nothing was published. Retry after `Retry-After` s"},
    },
    # The body is read raw (two media types, all-or-nothing validation); examples for integrators.
    openapi_extra={"requestBody": {"required": True, "content": {}}},
)
async def post_events(request: Request, principal: AgencySystem, accept: AcceptEventsDep) -> JSONResponse:
    settings = request.app.state.settings
    raw = _read_events(request.headers.get("content-type", ""), await request.body(), settings.max_batch_events)
    if isinstance(raw, EventError):
        return _problem(415 if raw.path == "Content-Type" else 422,
                        "unsupported_media_type" if raw.path == "Content-Type" else "invalid_request",
                        raw.rule, [raw])
    assessment = assess(raw, principal.agency)
    if assessment.invalid:
        failing = len({e.index for e in assessment.invalid})
        return _problem(422, "invalid_events",
                        f"{failing} of {len(raw)} event(s) break the contract; nothing was accepted",
                        assessment.invalid)
    if assessment.forbidden:
        failing = len({e.index for e in assessment.forbidden})
        return _problem(403, "forbidden",
                        f"agency {principal.agency} may not publish {failing} of {len(raw)} event(s); "
                        "nothing was accepted", assessment.forbidden)
    try:
        outcome = await accept(assessment.events)
    except PublishFailed as exc:
        log.warning("%d event(s) not published, answered 503: %s", len(assessment.events), exc)
        return _problem(503, "kafka_unavailable",
                        "Kafka cannot take the events now; nothing was published. Retry with the same ids.",
                        headers={"Retry-After": str(settings.retry_after_s)})
    return JSONResponse({"accepted": outcome.accepted, "duplicates": outcome.duplicates}, status_code=202)
