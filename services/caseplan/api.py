"""JSON surface of the caseplan service: timeline (§6), plan commands, caseload, access log."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from kim.auth import CurrentPrincipal, Principal, require_roles
from services.caseplan.application import CasePlanService, Forbidden, may_read_timeline
from services.caseplan.domain import Actor, PlanError
from services.caseplan.inputs import ClosureInput, CompletionInput, GoalInput, MeasureInput, ProfileInput

router = APIRouter(prefix="/v1", tags=["caseplan"])

SUBJECT = Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="the person's pseudonym")
Subject = Annotated[str, SUBJECT]
CaseManager = Annotated[Principal, require_roles("case_manager")]
Auditor = Annotated[Principal, require_roles("auditor")]

STATUS = {"conflict": 409, "forbidden": 403, "invalid": 422, "not_found": 404}


def get_service(request: Request) -> CasePlanService:
    return request.app.state.service


Service = Annotated[CasePlanService, Depends(get_service)]


def plan_error_response(error: PlanError) -> JSONResponse:
    return JSONResponse({"error": error.code, "field": error.field, "rule": error.rule,
                         "detail": f"{error.field}: {error.rule}"}, status_code=STATUS[error.kind])


def forbidden_response(error: Forbidden) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=403)


def contract_error_response(error: ValidationError) -> JSONResponse:
    """A payload the contract refuses, worded as FastAPI words a refused body (field and rule)."""
    return JSONResponse({"detail": [{"type": e["type"], "loc": ["body", *e["loc"]], "msg": e["msg"]}
                                    for e in error.errors()]}, status_code=422)


def actor(principal: Principal) -> Actor:
    return Actor(principal.sub, principal.agency)


# ---- timeline -----------------------------------------------------------------------------

@router.get("/persons/{subject}/timeline", summary="The person's events across agencies, as you may see them")
def timeline(service: Service, principal: CurrentPrincipal, subject: Subject,
             purpose: Annotated[str | None, Query(max_length=200, description="why you read it (access log)")] = None,
             ) -> list[dict[str, Any]]:
    """Each element is the envelope as published, sorted by `time` (then `recordedtime`, `id`).

    Own agency's events always; other agencies' only while a consent of the person shares
    them with your agency; auditors see everything, and each of their reads is recorded."""
    return service.timeline(principal, subject, purpose)


# ---- plan ----------------------------------------------------------------------------------

@router.get("/persons/{subject}/plan", summary="The person's integration plan")
def get_plan(service: Service, principal: CurrentPrincipal, subject: Subject) -> dict[str, Any]:
    if not may_read_timeline(principal):
        raise Forbidden("the plan needs the role case_manager, auditor or agency_system; the token has "
                        f"{', '.join(sorted(principal.roles)) or 'none'}")
    plan = service.plan_for(principal, subject)
    if plan is None:
        raise HTTPException(404, detail=f"person {subject} has no integration plan")
    return plan.to_dict()


@router.post("/persons/{subject}/plan", status_code=201, summary="Draft a plan (one open plan per person)")
def draft_plan(service: Service, principal: CaseManager, subject: Subject) -> dict[str, Any]:
    return service.draft(actor(principal), subject).to_dict()


@router.delete("/persons/{subject}/plan", summary="Discard an unsigned draft")
def discard_plan(service: Service, principal: CaseManager, subject: Subject) -> dict[str, Any]:
    return service.discard(actor(principal), subject).to_dict()


@router.post("/persons/{subject}/plan/goals", status_code=201, summary="Set a goal (draft or revision)")
def set_goal(service: Service, principal: CaseManager, subject: Subject, body: GoalInput) -> dict[str, Any]:
    return service.set_goal(actor(principal), subject, body.model_dump(mode="json")).to_dict()


@router.delete("/persons/{subject}/plan/goals/{goal_id}", summary="Remove a goal not yet signed")
def remove_goal(service: Service, principal: CaseManager, subject: Subject, goal_id: str) -> dict[str, Any]:
    return service.remove_goal(actor(principal), subject, goal_id).to_dict()


@router.post("/persons/{subject}/plan/signature", summary="The agreement was signed: IntegrationAgreementSigned")
def sign(service: Service, principal: CaseManager, subject: Subject) -> dict[str, Any]:
    return service.sign(actor(principal), subject).to_dict()


@router.post("/persons/{subject}/plan/goals/{goal_id}/achievement", summary="Goal achieved: GoalAchieved")
def achieve_goal(service: Service, principal: CaseManager, subject: Subject, goal_id: str) -> dict[str, Any]:
    return service.achieve_goal(actor(principal), subject, goal_id).to_dict()


@router.post("/persons/{subject}/plan/measures", status_code=201, summary="Assign a measure: MeasureAssigned")
def assign_measure(service: Service, principal: CaseManager, subject: Subject, body: MeasureInput) -> dict[str, Any]:
    measure = body.model_dump(mode="json")
    return service.assign_measure(actor(principal), subject, measure).to_dict()


@router.post("/persons/{subject}/plan/measures/{measure_id}/completion", summary="A measure ended: MeasureCompleted")
def complete_measure(service: Service, principal: CaseManager, subject: Subject, measure_id: str,
                     body: CompletionInput) -> dict[str, Any]:
    return service.complete_measure(actor(principal), subject, measure_id, body.outcome.value).to_dict()


@router.post("/persons/{subject}/plan/reassessment",
             summary="Re-assessment: ReAssessmentCompleted; the goals open for revision and a new signature")
def reassess(service: Service, principal: CaseManager, subject: Subject, body: ProfileInput) -> dict[str, Any]:
    return service.reassess(actor(principal), subject, body.model_dump(mode="json")).to_dict()


@router.post("/persons/{subject}/plan/closure", summary="Close the case: CaseClosed")
def close_case(service: Service, principal: CaseManager, subject: Subject, body: ClosureInput) -> dict[str, Any]:
    return service.close_case(actor(principal), subject, body.reason.value).to_dict()


# ---- caseload and access log -----------------------------------------------------------------

@router.get("/caseload", summary="Your persons, those with alerts first")
def caseload(service: Service, principal: CaseManager) -> list[dict[str, Any]]:
    return [entry.to_dict() for entry in service.caseload(principal)]


@router.get("/access-log", summary="Auditors' reads of timelines recorded by this service")
def access_log(service: Service, principal: Auditor,
               subject: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = None) -> list[dict]:
    return service.access_log(subject)
