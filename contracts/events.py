"""Event payload models: the `data` of each event type (interfaces.md §3).

One frozen model per event type, named after the type's EventName. Class
variables carry what the catalogue says about the type besides its fields:
`event_name`, `version` (major), `event_type` (the CloudEvents `type`),
`emitters` (agencies that may publish it) and, for derived events, `service`
(the KIM service that publishes it on `kim.<service>.events`).

Field docstrings and class docstrings end up in the generated JSON Schemas and
the AsyncAPI document, so they are written for integrators.
"""

from __future__ import annotations

from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Mapping

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StringConstraints, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from contracts.catalogue import AREA_HOLDERS, Agency, Area, Cefr, LegalDomain
from contracts.fields import (
    BirthYear,
    Count,
    CountryCode,
    Date,
    Identifier,
    Instant,
    LanguageCode,
    Reason,
    ShortText,
)

CASE_AGENCIES = frozenset({Agency.INTEGRATION_CENTER, Agency.JOB_CENTER})
MEASURE_AGENCIES = frozenset({Agency.INTEGRATION_CENTER, Agency.JOB_CENTER, Agency.EMPLOYMENT_AGENCY})
FOREIGNERS_OFFICE = frozenset({Agency.FOREIGNERS_OFFICE})


class EventData(BaseModel):
    """Base of all event payloads."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_name: ClassVar[str]
    event_type: ClassVar[str]
    version: ClassVar[int] = 1
    emitters: ClassVar[frozenset[Agency]] = frozenset()
    service: ClassVar[str | None] = None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.event_name = cls.__name__
        cls.event_type = f"de.kim.{cls.__name__}.v{cls.version}"


# --- value sets used in payloads ------------------------------------------------


class QualificationKind(StrEnum):
    SCHOOL = "school"
    VOCATIONAL = "vocational"
    ACADEMIC = "academic"
    NONE = "none"


class Recognition(StrEnum):
    NOT_STARTED = "not_started"
    IN_PROGRESS = "in_progress"
    RECOGNISED = "recognised"
    PARTIAL = "partial"
    REJECTED = "rejected"


class GoalKind(StrEnum):
    LANGUAGE = "language"
    EMPLOYMENT = "employment"
    TRAINING = "training"
    RECOGNITION = "recognition"
    HOUSING = "housing"
    SOCIAL = "social"
    HEALTH = "health"


class MeasureKind(StrEnum):
    INTEGRATION_COURSE = "integration_course"
    LANGUAGE_COURSE = "language_course"
    INTERNSHIP = "internship"
    FIM = "fim"
    WORK_OPPORTUNITY = "work_opportunity"
    RECOGNITION_COUNSELLING = "recognition_counselling"
    PSYCHOSOCIAL_COUNSELLING = "psychosocial_counselling"
    OTHER = "other"


class MeasureOutcome(StrEnum):
    COMPLETED = "completed"
    ABORTED = "aborted"


class ResidenceCategory(StrEnum):
    PROTECTION = "protection"
    HUMANITARIAN = "humanitarian"
    EMPLOYMENT = "employment"
    FAMILY = "family"
    OPPORTUNITY = "opportunity"
    TOLERATION = "toleration"
    OTHER = "other"


class EmploymentKind(StrEnum):
    EMPLOYMENT = "employment"
    MINIJOB = "minijob"
    APPRENTICESHIP = "apprenticeship"
    INTERNSHIP = "internship"
    SELF_EMPLOYED = "self_employed"


class AgencyClosureReason(StrEnum):
    NEED_ENDED = "need_ended"
    MOVED_AWAY = "moved_away"
    NOT_COMPETENT = "not_competent"
    OTHER = "other"


class CaseClosureReason(StrEnum):
    REGULAR_SERVICES_REACHED = "regular_services_reached"
    MOVED_AWAY = "moved_away"
    NATURALISED = "naturalised"
    WITHDREW = "withdrew"
    DECEASED = "deceased"
    OTHER = "other"


class HandoverKind(StrEnum):
    ACTUAL = "actual"
    EXPECTED = "expected"


class GapReason(StrEnum):
    CLOSED_NOT_COMPETENT = "closed_not_competent"
    CLOSED_OTHER = "closed_other"
    LEGAL_END = "legal_end"


class JurisdictionRule(StrEnum):
    """Jurisdiction-change rules of interfaces.md §4."""

    R1 = "R1"
    R2 = "R2"
    R3 = "R3"


# --- nested payload parts ---------------------------------------------------------


class Qualification(BaseModel):
    """A qualification the person brings and the state of its recognition."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: QualificationKind
    field: ShortText = Field(description="Subject or trade, e.g. electrician.")
    country: CountryCode = Field(description="Country where it was obtained (ISO 3166-1 alpha-2).")
    recognition: Recognition


class Goal(BaseModel):
    """One goal of an integration agreement."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    goal_id: Identifier
    kind: GoalKind
    target: ShortText
    due: Date


# --- catalogue events (published by agencies) ---------------------------------------


class PersonRegistered(EventData):
    """A person was registered for KIM case management (no name, no birth date)."""

    emitters = CASE_AGENCIES

    municipality: ShortText
    birth_year: BirthYear = Field(description="Year of birth, 1900 to the current year.")
    arrival_date: Date = Field(description="Date of arrival in Germany.")
    country_of_origin: CountryCode


class ConsentRecorded(EventData):
    """The person consented to share their data with the listed agencies."""

    emitters = CASE_AGENCIES

    shared_with: list[Agency] = Field(min_length=1)
    purposes: list[ShortText] = Field(min_length=1)
    valid_until: Date | None = Field(description="Last day of validity; null for no end.")


class ConsentWithdrawn(EventData):
    """The person withdrew consent for the listed agencies."""

    emitters = CASE_AGENCIES

    shared_with: list[Agency] = Field(min_length=1)


class _Profile(EventData):
    language_levels: dict[LanguageCode, Cefr] = Field(
        description="Overall CEFR level per language (ISO 639-1 code)."
    )
    qualifications: list[Qualification]
    work_experience_years: Count = Field(le=80)
    inclinations: list[ShortText]
    support_needs: list[ShortText]


class ProfileCompleted(_Profile):
    """The first profile (Erstprofiling) of the person was completed."""

    emitters = CASE_AGENCIES


class ReAssessmentCompleted(_Profile):
    """A periodic re-assessment of the person's profile was completed."""

    emitters = CASE_AGENCIES


class IntegrationAgreementSigned(EventData):
    """An integration agreement with the person's goals was signed."""

    emitters = CASE_AGENCIES

    plan_id: Identifier
    goals: list[Goal] = Field(min_length=1)

    @field_validator("goals")
    @classmethod
    def _goal_ids_unique(cls, goals: list[Goal]) -> list[Goal]:
        # GoalAchieved names a goal by plan_id and goal_id, so ids must not repeat.
        seen: set[str] = set()
        for goal in goals:
            if goal.goal_id in seen:
                raise PydanticCustomError(
                    "goal_id_repeated",
                    "goal_id '{goal_id}' appears more than once",
                    {"goal_id": goal.goal_id},
                )
            seen.add(goal.goal_id)
        return goals


class MeasureAssigned(EventData):
    """The person was assigned to a measure (course, internship, counselling …)."""

    emitters = MEASURE_AGENCIES

    measure_id: Identifier
    kind: MeasureKind
    provider: ShortText
    starts: Date
    ends: Date | None = Field(description="Planned last day; null when open-ended.")

    @field_validator("ends")
    @classmethod
    def _ends_not_before_start(cls, ends: Any, info: ValidationInfo) -> Any:
        starts = info.data.get("starts")
        if ends is not None and starts is not None and ends < starts:
            raise PydanticCustomError("ends_before_starts", "must not be before starts")
        return ends


class MeasureCompleted(EventData):
    """A measure ended, completed or aborted."""

    emitters = MEASURE_AGENCIES

    measure_id: Identifier
    outcome: MeasureOutcome


class GoalAchieved(EventData):
    """A goal of an integration agreement was achieved."""

    emitters = CASE_AGENCIES

    plan_id: Identifier
    goal_id: Identifier


class LanguageLevelReached(EventData):
    """The person reached a language level (overall CEFR level)."""

    emitters = MEASURE_AGENCIES

    language: LanguageCode
    level: Cefr
    certificate: ShortText | None = Field(description="Certificate, e.g. DTZ; null without one.")
    # Skill names are the certificate's own (e.g. listening, reading, writing, speaking); the spec fixes none.
    per_skill: dict[Annotated[str, StringConstraints(min_length=1, max_length=40)], Cefr] | None = Field(
        default=None, description="Optional level per skill, e.g. {\"speaking\": \"B1\"}.")


class ResidenceTitleGranted(EventData):
    """The foreigners office granted a residence title."""

    emitters = FOREIGNERS_OFFICE

    title: ShortText = Field(description="Legal basis, e.g. § 25 Abs. 2 AufenthG.")
    category: ResidenceCategory
    valid_until: Date | None


class NaturalisationCompleted(EventData):
    """The person was naturalised. The payload is an empty object."""

    emitters = FOREIGNERS_OFFICE


class EmploymentStarted(EventData):
    """The person started employment, an apprenticeship or similar."""

    emitters = MEASURE_AGENCIES

    kind: EmploymentKind
    hours_per_week: StrictFloat | None = Field(
        ge=0, le=80, description="Contracted hours; null when unknown."
    )


class CaseOpenedByAgency(EventData):
    """The emitting agency takes responsibility for the area under the legal domain."""

    emitters = AREA_HOLDERS

    area: Area
    legal_domain: LegalDomain


class HandedOverToAgency(EventData):
    """The emitting agency offers the area to another agency; it stays responsible until acceptance."""

    emitters = AREA_HOLDERS

    handover_id: Identifier
    area: Area
    to_agency: Agency
    to_legal_domain: LegalDomain = Field(description="Legal domain the receiver will hold the area in.")
    reason: Reason


class HandoverAccepted(EventData):
    """The emitting agency accepts a handover; responsibility moves at this event's time."""

    emitters = AREA_HOLDERS

    handover_id: Identifier


class HandoverRejected(EventData):
    """The emitting agency rejects a handover; the sender stays responsible."""

    emitters = AREA_HOLDERS

    handover_id: Identifier
    reason: Reason


class CaseClosedByAgency(EventData):
    """The emitting agency ends its responsibility for the area."""

    emitters = AREA_HOLDERS

    area: Area
    reason: AgencyClosureReason


class CaseClosed(EventData):
    """The person's KIM case was closed; the person is no longer active."""

    emitters = CASE_AGENCIES

    reason: CaseClosureReason


# --- derived events (published by KIM services) -------------------------------------


class DerivedEventData(EventData):
    """Base of events that KIM services derive; no agency may publish them."""

    service = "referral"


class HandoverExpected(DerivedEventData):
    """A jurisdiction-change rule expects a handover of the area by the deadline."""

    handover_id: Identifier = Field(
        description="Assigned by the system; the receiver may accept it directly."
    )
    area: Area
    from_agency: Agency
    to_agency: Agency
    to_legal_domain: LegalDomain
    deadline: Instant
    rule: JurisdictionRule


class HandoverOverdue(DerivedEventData):
    """A handover's deadline passed without acceptance."""

    handover_id: Identifier
    kind: HandoverKind
    area: Area
    from_agency: Agency
    to_agency: Agency
    deadline: Instant


class JurisdictionGapOpened(DerivedEventData):
    """No agency is responsible for a continuous area since `since`."""

    gap_id: Identifier
    area: Area
    since: Instant
    last_agency: Agency = Field(description="The agency that held the area last.")
    reason: GapReason


class JurisdictionGapClosed(DerivedEventData):
    """A gap ended: an agency took the area or the person's case was closed."""

    gap_id: Identifier
    area: Area
    since: Instant
    until: Instant
    last_agency: Agency
    reason: GapReason
    closed_by: Agency | None = Field(
        default=None, description="The agency that took the area; null when the case was closed."
    )


class ReviewDue(DerivedEventData):
    """Rule R3: the area has been held long enough that a review is due."""

    area: Area
    agency: Agency | None = Field(default=None, description="The agency holding the area.")
    held_since: Instant
    due: Instant


CATALOGUE: tuple[type[EventData], ...] = (
    PersonRegistered,
    ConsentRecorded,
    ConsentWithdrawn,
    ProfileCompleted,
    ReAssessmentCompleted,
    IntegrationAgreementSigned,
    MeasureAssigned,
    MeasureCompleted,
    GoalAchieved,
    LanguageLevelReached,
    ResidenceTitleGranted,
    NaturalisationCompleted,
    EmploymentStarted,
    CaseOpenedByAgency,
    HandedOverToAgency,
    HandoverAccepted,
    HandoverRejected,
    CaseClosedByAgency,
    CaseClosed,
)
"""Event types agencies publish, in the order of the catalogue table."""

DERIVED: tuple[type[DerivedEventData], ...] = (
    HandoverExpected,
    HandoverOverdue,
    JurisdictionGapOpened,
    JurisdictionGapClosed,
    ReviewDue,
)
"""Event types KIM services publish."""

EVENT_TYPES: Mapping[str, type[EventData]] = MappingProxyType(
    {model.event_type: model for model in (*CATALOGUE, *DERIVED)}
)
"""Every current event type by its CloudEvents `type`, e.g. `de.kim.CaseClosed.v1`."""
