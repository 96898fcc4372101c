"""HTTP surface of intake (§6): persons, consents, profiles, the access log."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from contracts import Agency
from contracts.events import ProfileCompleted
from contracts.fields import CountryCode, Date, Instant, ShortText
from kim.auth import Principal, require_roles
from kim.consent import DISTRICT_TZ
from services.intake.application import ConcurrentChange, Intake, UnknownPerson
from services.intake.domain import IntakeError, NotAllowed, PersonalData, PersonErased, Registration

router = APIRouter(prefix="/v1")

SUBJECT = Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="the person's pseudonym")
CaseManager = Annotated[Principal, require_roles("case_manager")]
Reader = Annotated[Principal, require_roles("case_manager", "auditor")]
Admin = Annotated[Principal, require_roles("admin")]
Auditor = Annotated[Principal, require_roles("auditor")]

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Phone = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\+?[0-9][0-9 ()/-]{2,30}$")]
Email = Annotated[str, StringConstraints(strip_whitespace=True, max_length=254,
                                         pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
Notes = Annotated[str, StringConstraints(max_length=10000)]
Purpose = Annotated[str | None, Query(max_length=500, description="why the data are read (written to the access "
                                                                  "log)")]
# Clocks of case managers' machines drift a little.
_CLOCK_SKEW = timedelta(minutes=5)


def get_intake(request: Request) -> Intake:
    return request.app.state.intake


IntakeDep = Annotated[Intake, Depends(get_intake)]


# ---- request bodies ----------------------------------------------------------------------

class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegistrationBody(BaseModel):
    """The fields below, and any further ones of text, numbers, true/false or null:
    they are kept with the personal data (encrypted) and returned with them."""

    model_config = ConfigDict(extra="allow")

    given_name: Name
    family_name: Name
    birth_date: Date
    municipality: ShortText
    arrival_date: Date = Field(description="date of arrival in Germany")
    country_of_origin: CountryCode
    phone: Phone | None = None
    email: Email | None = None
    address: Text | None = None
    notes: Notes | None = None
    language: Name | None = Field(default=None, description="language the person prefers to be spoken to in")
    registered_at: Instant | None = Field(default=None, description="when the person was registered; default now")

    @field_validator("birth_date")
    @classmethod
    def _plausible_birth_date(cls, value: date) -> date:
        if value.year < 1900:
            raise PydanticCustomError("birth_date_too_early", "must not be before 1900-01-01")
        if value > date.today():
            raise PydanticCustomError("date_future", "must not be in the future")
        return value

    @field_validator("registered_at")
    @classmethod
    def _not_in_future(cls, value: datetime | None) -> datetime | None:
        if value is not None and value > datetime.now(timezone.utc) + _CLOCK_SKEW:
            raise PydanticCustomError("instant_future", "must not be in the future")
        return value

    @field_validator("arrival_date")
    @classmethod
    def _arrival_after_birth(cls, value: date, info: ValidationInfo) -> date:
        birth_date = info.data.get("birth_date")
        if birth_date is not None and value < birth_date:
            raise PydanticCustomError("arrival_before_birth", "must not be before birth_date")
        return value


class ConsentBody(_Body):
    shared_with: list[Agency] = Field(min_length=1, description="agencies the person's data are shared with")
    purposes: list[ShortText] = Field(min_length=1)
    valid_until: Date | None = Field(default=None, description="last day of validity; null for no end")

    @field_validator("valid_until")
    @classmethod
    def _not_past(cls, value: date | None) -> date | None:
        if value is not None and value < datetime.now(DISTRICT_TZ).date():
            raise PydanticCustomError("date_past", "must not be in the past")
        return value


class WithdrawalBody(_Body):
    shared_with: list[Agency] = Field(min_length=1, description="agencies that may no longer see the person")


_EXTRA_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_MAX_EXTRA_FIELDS = 30
_MAX_EXTRA_TEXT = 2000


def extra_fields(body: RegistrationBody) -> dict[str, Any]:
    """The further fields of a registration, checked like the named ones."""
    extra = dict(body.model_extra or {})
    problems = []
    if len(extra) > _MAX_EXTRA_FIELDS:
        problems.append({"loc": ("body",), "msg": f"at most {_MAX_EXTRA_FIELDS} further fields are kept",
                         "type": "too_many_fields"})
    for name, value in extra.items():
        if not _EXTRA_NAME.fullmatch(name):
            problems.append({"loc": ("body", name), "msg": "a further field's name must be a letter followed by "
                             "up to 63 letters, digits or _", "type": "field_name"})
        elif not (value is None or isinstance(value, (bool, int, float))
                  or (isinstance(value, str) and len(value) <= _MAX_EXTRA_TEXT)):
            problems.append({"loc": ("body", name), "msg": "a further field must be text of at most "
                             f"{_MAX_EXTRA_TEXT} characters, a number, true/false or null", "type": "field_value"})
    if problems:
        raise RequestValidationError(problems)
    return extra


# ---- errors ---------------------------------------------------------------------------------

_STATUS = [(UnknownPerson, 404), (NotAllowed, 403), (PersonErased, 410), (ConcurrentChange, 409)]


def add_error_handlers(app: FastAPI) -> None:
    async def refused(request: Request, exc: IntakeError) -> JSONResponse:
        status = next(code for kind, code in _STATUS if isinstance(exc, kind))
        return JSONResponse({"detail": str(exc)}, status_code=status)

    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Field and rule, without echoing the input: it may be personal data.
        return JSONResponse({"detail": [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
                                        for e in exc.errors()]}, status_code=422)

    for kind, _ in _STATUS:
        app.add_exception_handler(kind, refused)
    app.add_exception_handler(RequestValidationError, invalid)


# ---- persons ----------------------------------------------------------------------------------

@router.post("/persons", status_code=201, tags=["persons"], summary="Register a person",
             responses={201: {"content": {"application/json": {"example": {
                 "subject": "P-7Q2K9D4M1X", "possible_duplicates": []}}}}})
def register(body: RegistrationBody, principal: CaseManager, intake: IntakeDep, response: Response) -> dict:
    """Stores the personal data encrypted with the person's own key and publishes
    `PersonRegistered` (municipality, birth year, arrival date, country — never a name
    or the birth date). A likely earlier registration of the same person is not
    refused but listed in `possible_duplicates`."""
    data = PersonalData(body.given_name, body.family_name, body.birth_date, body.phone, body.email, body.address,
                        body.notes, body.language, extra_fields(body))
    registration = Registration(body.municipality, body.birth_date.year, body.arrival_date, body.country_of_origin)
    registered = intake.register(principal, data, registration, body.registered_at)
    response.headers["Location"] = f"/v1/persons/{registered.subject}"
    return {"subject": registered.subject, "possible_duplicates": registered.possible_duplicates}


@router.get("/persons/{subject}", tags=["persons"], summary="The person's personal data (each read is recorded)")
def read(subject: Annotated[str, SUBJECT], principal: Reader, intake: IntakeDep, purpose: Purpose = None) -> dict:
    """Visible to the registering agency, to other agencies while a consent of the
    person shares with them, and to auditors. 403 when the consent is missing,
    410 after erasure."""
    return intake.read(principal, subject, purpose)


@router.delete("/persons/{subject}", status_code=204, tags=["persons"], summary="Erase the person (GDPR Art. 17)")
def erase(subject: Annotated[str, SUBJECT], principal: Admin, intake: IntakeDep) -> Response:
    """Destroys the person's key: their personal data can no longer be read from any
    store, backup or snapshot; pseudonymous events and figures stay."""
    intake.erase(principal, subject)
    return Response(status_code=204)


# ---- consents and profiles -----------------------------------------------------------------------

@router.post("/persons/{subject}/consents", status_code=201, tags=["consents"], summary="Record a consent")
def record_consent(subject: Annotated[str, SUBJECT], body: ConsentBody, principal: CaseManager,
                   intake: IntakeDep) -> dict:
    consent_id = intake.record_consent(principal, subject, [a.value for a in body.shared_with], body.purposes,
                                       body.valid_until)
    return {"consent_id": consent_id}


@router.post("/persons/{subject}/consents/withdrawal", status_code=202, tags=["consents"],
             summary="Withdraw consent for agencies (effective everywhere within seconds)")
def withdraw_consent(subject: Annotated[str, SUBJECT], body: WithdrawalBody, principal: CaseManager,
                     intake: IntakeDep) -> dict:
    return {"withdrawal_id": intake.withdraw_consent(principal, subject, [a.value for a in body.shared_with])}


@router.get("/persons/{subject}/consents", tags=["consents"], summary="The person's consents and withdrawals")
def list_consents(subject: Annotated[str, SUBJECT], principal: Reader, intake: IntakeDep) -> list[dict]:
    return intake.consents(principal, subject)


def _profile(kind: str):
    def record(subject: Annotated[str, SUBJECT], body: ProfileCompleted, principal: CaseManager,
               intake: IntakeDep) -> dict[str, Any]:
        return {"event_id": intake.complete_profile(principal, subject, kind, body.model_dump(mode="json"))}

    return record


router.post("/persons/{subject}/profile", status_code=201, tags=["profiles"],
            summary="Record the first profile (publishes ProfileCompleted)")(_profile("ProfileCompleted"))
router.post("/persons/{subject}/reassessment", status_code=201, tags=["profiles"],
            summary="Record a re-assessment (publishes ReAssessmentCompleted)")(_profile("ReAssessmentCompleted"))


# ---- access log ------------------------------------------------------------------------------------

@router.get("/access-log", tags=["audit"], summary="Who read which person's data, when and why (append-only)")
def access_log(principal: Auditor, intake: IntakeDep,
               subject: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = None) -> list[dict]:
    return [entry.to_dict() for entry in intake.access_log(subject)]
