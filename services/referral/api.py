"""HTTP surface of the referral service (§6): responsibility, gaps, handovers."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from kim.auth import CurrentPrincipal
from services.referral.application import Referral, Scope, scope_of
from contracts import rfc3339

router = APIRouter(prefix="/v1", tags=["responsibility"])

SUBJECT = Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="the person's pseudonym")


def get_referral(request: Request) -> Referral:
    return request.app.state.referral


ReferralDep = Annotated[Referral, Depends(get_referral)]


def caller_scope(principal: CurrentPrincipal) -> Scope:
    scope = scope_of(principal)
    if scope is None:
        raise HTTPException(403, detail="responsibility, gaps and handovers need the role case_manager, auditor "
                                        f"or agency_system; the token has {', '.join(sorted(principal.roles)) or 'none'}")
    return scope


ScopeDep = Annotated[Scope, Depends(caller_scope)]


def _instant(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        instant = datetime.fromisoformat(value.upper().replace(" ", "+"))
    except ValueError:
        instant = None
    if instant is None or instant.tzinfo is None:
        raise HTTPException(422, detail=[{"loc": ["query", name], "msg": f"{name} must be an RFC 3339 instant "
                                          "with offset, e.g. 2026-08-01T00:00:00Z", "input": value}])
    return instant.astimezone(timezone.utc)


def _time(value: datetime | None) -> str | None:
    return rfc3339(value) if value is not None else None


@router.get("/persons/{subject}/responsibility", summary="Who holds each area of a person, over time")
def responsibility(
    referral: ReferralDep,
    scope: ScopeDep,
    subject: Annotated[str, SUBJECT],
    as_of: Annotated[str | None, Query(description="effective-time instant (RFC 3339); default now")] = None,
    known_at: Annotated[str | None, Query(description="only events recorded by then count; default now")] = None,
) -> dict:
    state = referral.responsibility(subject, scope, _instant("as_of", as_of), _instant("known_at", known_at))
    if state is None:
        raise HTTPException(404, detail=f"no person {subject} is visible to your agency")
    return {
        "subject": subject,
        "areas": {area: [{"agency": i.agency, "legal_domain": i.legal_domain, "from": rfc3339(i.from_),
                          "to": _time(i.to)} for i in intervals]
                  for area, intervals in sorted(state.areas.items())},
    }


@router.get("/gaps", summary="Jurisdiction gaps (§4)")
def gaps(referral: ReferralDep, scope: ScopeDep,
         status: Literal["open", "closed", "all"] = "all",
         subject: Annotated[list[str] | None, Query(max_length=400, description="only these persons' gaps (at most 400)")] = None) -> list[dict]:
    return referral.gaps(status, scope, subject)


@router.get("/handovers", summary="Actual and expected handovers")
def handovers(
    referral: ReferralDep,
    scope: ScopeDep,
    status: Annotated[Literal["pending", "accepted", "rejected", "overdue", "satisfied", "cancelled"] | None,
                      Query(description="accepted: the receiver accepted or took the area; satisfied: another "
                                        "agency took it or the need ended; cancelled: the case closed")] = None,
    subject: Annotated[list[str] | None, Query(max_length=400, description="only these persons' handovers (at most 400)")] = None,
) -> list[dict]:
    return referral.handovers(status, scope, subject)
