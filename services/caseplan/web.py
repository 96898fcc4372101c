"""The case managers' screens (German): caseload, person page, registration and plan forms.

Server-rendered HTML forms, no script: each form posts, the server acts (intake's
API for registration, consent and profile; this service's plan commands), then
redirects back to the page (303) with a notice, or shows the page again with the
problem in plain German.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import anyio
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from kim.auth import Principal
from services.caseplan.application import CasePlanService, Forbidden, may_read_timeline
from services.caseplan.caseload import ALERT_ORDER
from services.caseplan.chart import responsibility_svg
from services.caseplan.clients import Answer, Peer, PeerUnavailable
from services.caseplan.domain import Actor, PlanError
from services.caseplan import labels
from services.caseplan.api import STATUS
from services.caseplan.inputs import ClosureInput, CompletionInput, GoalInput, MeasureInput, ProfileInput
from services.caseplan.login import SESSION_COOKIE, WebUser, check_csrf, csrf_value, session_token

router = APIRouter(include_in_schema=False)

SUBJECT_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PURPOSE = "Fallbearbeitung"
AUDIT_PURPOSE = "Prüfung"
SHOWN = 200  # persons listed per table of the caseload page

NOTICES = {
    "registered": "Die Person wurde registriert.",
    "consent": "Die Einwilligung wurde erfasst.",
    "withdrawn": "Der Widerruf wurde erfasst.",
    "profile": "Das Erstprofil wurde erfasst.",
    "drafted": "Ein Entwurf des Integrationsplans wurde angelegt.",
    "goal": "Das Ziel wurde in den Plan aufgenommen.",
    "goal_removed": "Das Ziel wurde entfernt.",
    "signed": "Die Integrationsvereinbarung wurde als unterschrieben erfasst.",
    "achieved": "Das Ziel wurde als erreicht vermerkt.",
    "measure": "Die Maßnahme wurde zugewiesen.",
    "measure_ended": "Das Ende der Maßnahme wurde erfasst.",
    "reassessed": "Das Re-Assessment wurde erfasst; die Ziele können überarbeitet und neu unterschrieben werden.",
    "closed": "Der Fall wurde abgeschlossen.",
    "discarded": "Der Entwurf wurde verworfen.",
}


class PageProblem(Exception):
    """A form could not be carried out; `message` says why in German."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def service_of(request: Request) -> CasePlanService:
    return request.app.state.service


def _render(request: Request, template: str, principal: Principal | None, status: int = 200, **context: Any):
    token = request.cookies.get(SESSION_COOKIE, "")
    base = {"user": principal, "labels": labels, "csrf": csrf_value(token) if token else "",
            "agency_name": labels.agency_name}
    return request.app.state.templates.TemplateResponse(request, template, {**base, **context}, status_code=status)


def _subject(subject: str) -> str:
    if not SUBJECT_RE.fullmatch(subject):
        raise HTTPException(404, detail="Unbekanntes Pseudonym.")
    return subject


def _answer_problem(answer: Answer, what: str) -> PageProblem:
    """A refused call to another service, in German."""
    if answer.status == 422 and isinstance(answer.detail, list):
        return PageProblem(labels.validation_errors(answer.detail), 422)
    if answer.status == 422 and isinstance(answer.body, dict) and isinstance(answer.body.get("errors"), list):
        return PageProblem(labels.validation_errors(answer.body["errors"]), 422)
    if answer.status == 403:
        return PageProblem(f"{what}: nicht erlaubt – {answer.detail}", 403)
    if answer.status in (404, 410):
        return PageProblem(f"{what}: Person nicht gefunden oder gelöscht.", answer.status)
    return PageProblem(f"{what} ist fehlgeschlagen ({answer.status}): {answer.detail}", 502)


MULTIPLE = frozenset({"shared_with"})  # checkbox groups


async def _form(request: Request) -> dict[str, Any]:
    form = await request.form()
    check_csrf(request, form.get("csrf"))
    return {key: form.getlist(key) if key in MULTIPLE else form.get(key) for key in form.keys()}


def _words(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _profile(form: dict[str, Any]) -> dict[str, Any]:
    """The simplified profile form as ProfileInput fields."""
    levels = {}
    if form.get("german_level"):
        levels["de"] = form["german_level"]
    if form.get("other_language") and form.get("other_level"):
        levels[form["other_language"].strip().lower()] = form["other_level"]
    qualifications = []
    if form.get("qualification_field"):
        qualifications.append({"kind": form.get("qualification_kind") or "vocational",
                               "field": form["qualification_field"].strip(),
                               "country": (form.get("qualification_country") or "").strip().upper(),
                               "recognition": form.get("recognition") or "not_started"})
    years = str(form.get("work_experience_years") or "0").strip()
    return {"language_levels": levels, "qualifications": qualifications,
            "work_experience_years": int(years) if years.isdigit() else years,
            "inclinations": _words(form.get("inclinations")), "support_needs": _words(form.get("support_needs"))}


def _validated(model, data: dict[str, Any]):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise PageProblem(labels.validation_errors(exc.errors()), 422) from None


# ---- caseload ---------------------------------------------------------------------------------

@router.get("/")
async def caseload_page(request: Request, principal: WebUser, kind: str | None = None) -> Response:
    if not principal.has_any("case_manager"):
        return _render(request, "search.html", principal)
    entries = await anyio.to_thread.run_sync(service_of(request).caseload, principal)
    with_alerts = [e for e in entries if e.alerts]
    others = [e for e in entries if not e.alerts]
    counts = {k: sum(1 for e in with_alerts for a in e.alerts if a.kind == k) for k in ALERT_ORDER}
    kind = kind if kind in ALERT_ORDER else None
    if kind is not None:  # only the persons with an alert of this kind, that kind first
        with_alerts = [replace(e, alerts=sorted(e.alerts, key=lambda a: a.kind != kind))
                       for e in with_alerts if any(a.kind == kind for a in e.alerts)]
    return _render(request, "caseload.html", principal, kind=kind, counts=counts,
                   with_alerts=with_alerts[:SHOWN], alerts_hidden=max(0, len(with_alerts) - SHOWN),
                   others=others[:SHOWN], others_hidden=max(0, len(others) - SHOWN))


@router.get("/persons")
async def find_person(principal: WebUser, subject: str = "") -> Response:
    subject = subject.strip()
    if not SUBJECT_RE.fullmatch(subject):
        return RedirectResponse("/", status_code=303)
    return RedirectResponse(f"/persons/{subject}", status_code=303)


# ---- registration ------------------------------------------------------------------------------

REGISTER_FIELDS = ("given_name", "family_name", "birth_date", "municipality", "arrival_date", "country_of_origin",
                   "phone", "email", "address", "language", "notes")


@router.get("/persons/new")
async def register_page(request: Request, principal: WebUser) -> Response:
    return _render(request, "register.html", principal, values={}, error=None)


@router.post("/persons/new")
async def register(request: Request, principal: WebUser) -> Response:
    form = await _form(request)
    body = {k: str(form[k]).strip() for k in REGISTER_FIELDS if str(form.get(k) or "").strip()}
    if "country_of_origin" in body:
        body["country_of_origin"] = body["country_of_origin"].upper()
    try:
        answer = await request.app.state.intake.call("POST", "/v1/persons", session_token(request), json=body)
        if not answer.ok:
            raise _answer_problem(answer, "Die Registrierung")
    except (PageProblem, PeerUnavailable) as exc:
        message = exc.message if isinstance(exc, PageProblem) else f"Der Intake-Dienst antwortet nicht: {exc}"
        return _render(request, "register.html", principal, status=getattr(exc, "status", 503), values=body,
                       error=message)
    subject = answer.body["subject"]
    await anyio.to_thread.run_sync(service_of(request).take_on, Actor(principal.sub, principal.agency), subject,
                                   "registered")
    duplicates = ",".join(answer.body.get("possible_duplicates") or [])
    target = f"/persons/{subject}?notice=registered" + (f"&duplicates={quote(duplicates)}" if duplicates else "")
    return RedirectResponse(target, status_code=303)


# ---- person page ---------------------------------------------------------------------------------

async def _person_context(request: Request, principal: Principal, subject: str) -> dict[str, Any]:
    service = service_of(request)
    token = session_token(request)
    now = datetime.now(timezone.utc)
    purpose = AUDIT_PURPOSE if principal.has_any("auditor") else PURPOSE

    async def peer(peer: Peer, path: str, params: dict[str, str] | None = None) -> Answer | str:
        try:
            return await peer.call("GET", path, token, params=params)
        except PeerUnavailable as exc:
            return str(exc)

    intake, referral = request.app.state.intake, request.app.state.referral
    person, consents, responsibility, gaps = await asyncio.gather(
        peer(intake, f"/v1/persons/{subject}", {"purpose": purpose}),
        peer(intake, f"/v1/persons/{subject}/consents"),
        peer(referral, f"/v1/persons/{subject}/responsibility"),
        peer(referral, "/v1/gaps", {"status": "all"}),
    )
    summary, alerts, seen = await anyio.to_thread.run_sync(service.person, principal, subject)
    timeline = await anyio.to_thread.run_sync(service.timeline, principal, subject, purpose)
    try:
        plan = await anyio.to_thread.run_sync(service.plan_for, principal, subject)
    except Forbidden:
        plan = None  # kept by an agency the person's consent does not share with the viewer
    chart = None
    if isinstance(responsibility, Answer) and responsibility.ok and isinstance(gaps, Answer) and gaps.ok:
        chart = responsibility_svg(responsibility.body, [g for g in gaps.body if g["subject"] == subject], now)
    return {"subject": subject, "summary": summary, "alerts": alerts, "seen": seen, "timeline": timeline,
            "plan": plan.to_dict() if plan is not None else None, "person": person, "consents": consents,
            "chart": chart, "responsibility": responsibility, "now": now,
            "may_edit": principal.has_any("case_manager"),
            "plan_is_mine": plan is not None and plan.agency == principal.agency}


@router.get("/persons/{subject}")
async def person_page(request: Request, principal: WebUser, subject: str, notice: str | None = None,
                      duplicates: str | None = None) -> Response:
    subject = _subject(subject)
    if not may_read_timeline(principal):
        return _render(request, "error.html", principal, status=403,
                       message="Personenseiten sehen nur Fallmanagement und Prüfung (Revision).")
    context = await _person_context(request, principal, subject)
    return _render(request, "person.html", principal, notice=NOTICES.get(notice or ""),
                   duplicates=[d for d in (duplicates or "").split(",") if SUBJECT_RE.fullmatch(d)],
                   error=None, **context)


async def _act(request: Request, principal: Principal, subject: str, notice: str, anchor: str,
               action: Callable[[dict[str, Any]], Awaitable[None]]) -> Response:
    """Run a form's action; on success back to the page, else the page with the problem."""
    subject = _subject(subject)
    form = await _form(request)
    try:
        if not principal.has_any("case_manager"):
            raise PageProblem("Nur das Fallmanagement kann hier etwas eintragen; Ihre Rolle darf nur lesen.", 403)
        await action(form)
    except PageProblem as problem:
        return await _problem_page(request, principal, subject, problem.message, problem.status)
    except ValidationError as exc:
        return await _problem_page(request, principal, subject, labels.validation_errors(exc.errors()), 422)
    except PlanError as error:
        status = STATUS[error.kind]
        return await _problem_page(request, principal, subject, labels.plan_error(error.code, error.params), status)
    except PeerUnavailable as exc:
        return await _problem_page(request, principal, subject, f"Ein Dienst antwortet nicht: {exc}", 503)
    return RedirectResponse(f"/persons/{subject}?notice={notice}#{anchor}", status_code=303)


async def _problem_page(request: Request, principal: Principal, subject: str, message: str, status: int) -> Response:
    context = await _person_context(request, principal, subject)
    return _render(request, "person.html", principal, status=status, notice=None, duplicates=[], error=message,
                   **context)


def _plan_command(request: Request, principal: Principal, method: str, *args: Any) -> Awaitable[Any]:
    command = getattr(service_of(request), method)
    return anyio.to_thread.run_sync(command, Actor(principal.sub, principal.agency), *args)


async def _intake(request: Request, path: str, body: dict[str, Any], what: str) -> None:
    answer = await request.app.state.intake.call("POST", path, session_token(request), json=body)
    if not answer.ok:
        raise _answer_problem(answer, what)


@router.post("/persons/{subject}/consents")
async def record_consent(request: Request, principal: WebUser, subject: str) -> Response:
    async def action(form: dict[str, Any]) -> None:
        body = {"shared_with": form.get("shared_with", []),
                "purposes": _words(form.get("purposes")), "valid_until": form.get("valid_until") or None}
        await _intake(request, f"/v1/persons/{subject}/consents", body, "Die Einwilligung")

    return await _act(request, principal, subject, "consent", "einwilligungen", action)


@router.post("/persons/{subject}/consents/withdrawal")
async def withdraw_consent(request: Request, principal: WebUser, subject: str) -> Response:
    async def action(form: dict[str, Any]) -> None:
        body = {"shared_with": form.get("shared_with", [])}
        await _intake(request, f"/v1/persons/{subject}/consents/withdrawal", body, "Der Widerruf")

    return await _act(request, principal, subject, "withdrawn", "einwilligungen", action)


@router.post("/persons/{subject}/profile")
async def record_profile(request: Request, principal: WebUser, subject: str) -> Response:
    async def action(form: dict[str, Any]) -> None:
        profile = _validated(ProfileInput, _profile(form)).model_dump(mode="json")
        await _intake(request, f"/v1/persons/{subject}/profile", profile, "Das Erstprofil")

    return await _act(request, principal, subject, "profile", "plan", action)


@router.post("/persons/{subject}/plan")
async def draft_plan(request: Request, principal: WebUser, subject: str) -> Response:
    async def action(form: dict[str, Any]) -> None:
        await _plan_command(request, principal, "draft", subject)

    return await _act(request, principal, subject, "drafted", "plan", action)


@router.post("/persons/{subject}/plan/goals")
async def set_goal(request: Request, principal: WebUser, subject: str) -> Response:
    async def action(form: dict[str, Any]) -> None:
        goal = _validated(GoalInput, {k: form.get(k) or None for k in ("kind", "target", "due")})
        await _plan_command(request, principal, "set_goal", subject, goal.model_dump(mode="json"))

    return await _act(request, principal, subject, "goal", "plan", action)


@router.post("/persons/{subject}/plan/goals/{goal_id}/remove")
async def remove_goal(request: Request, principal: WebUser, subject: str, goal_id: str) -> Response:
    async def action(form: dict[str, Any]) -> None:
        await _plan_command(request, principal, "remove_goal", subject, goal_id)

    return await _act(request, principal, subject, "goal_removed", "plan", action)


@router.post("/persons/{subject}/plan/sign")
async def sign_plan(request: Request, principal: WebUser, subject: str) -> Response:
    async def action(form: dict[str, Any]) -> None:
        await _plan_command(request, principal, "sign", subject)

    return await _act(request, principal, subject, "signed", "plan", action)


@router.post("/persons/{subject}/plan/goals/{goal_id}/achieved")
async def achieve_goal(request: Request, principal: WebUser, subject: str, goal_id: str) -> Response:
    async def action(form: dict[str, Any]) -> None:
        await _plan_command(request, principal, "achieve_goal", subject, goal_id)

    return await _act(request, principal, subject, "achieved", "plan", action)


@router.post("/persons/{subject}/plan/measures")
async def assign_measure(request: Request, principal: WebUser, subject: str) -> Response:
    async def action(form: dict[str, Any]) -> None:
        measure = _validated(MeasureInput, {k: form.get(k) or None for k in ("kind", "provider", "starts", "ends")})
        await _plan_command(request, principal, "assign_measure", subject,
                            measure.model_dump(mode="json"))

    return await _act(request, principal, subject, "measure", "massnahmen", action)


@router.post("/persons/{subject}/plan/measures/{measure_id}/complete")
async def complete_measure(request: Request, principal: WebUser, subject: str, measure_id: str) -> Response:
    async def action(form: dict[str, Any]) -> None:
        outcome = _validated(CompletionInput, {"outcome": form.get("outcome")}).outcome.value
        await _plan_command(request, principal, "complete_measure", subject, measure_id, outcome)

    return await _act(request, principal, subject, "measure_ended", "massnahmen", action)


@router.post("/persons/{subject}/plan/reassessment")
async def reassess(request: Request, principal: WebUser, subject: str) -> Response:
    async def action(form: dict[str, Any]) -> None:
        profile = _validated(ProfileInput, _profile(form)).model_dump(mode="json")
        await _plan_command(request, principal, "reassess", subject, profile)

    return await _act(request, principal, subject, "reassessed", "plan", action)


@router.post("/persons/{subject}/plan/close")
async def close_case(request: Request, principal: WebUser, subject: str) -> Response:
    async def action(form: dict[str, Any]) -> None:
        reason = _validated(ClosureInput, {"reason": form.get("reason")}).reason.value
        await _plan_command(request, principal, "close_case", subject, reason)

    return await _act(request, principal, subject, "closed", "plan", action)


@router.post("/persons/{subject}/plan/discard")
async def discard_plan(request: Request, principal: WebUser, subject: str) -> Response:
    async def action(form: dict[str, Any]) -> None:
        await _plan_command(request, principal, "discard", subject)

    return await _act(request, principal, subject, "discarded", "plan", action)
