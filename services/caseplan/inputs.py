"""What case managers send to the plan commands, shared by the JSON API and the forms.

Field types come from the contract, so a value the catalogue would refuse is refused
here with the same rule; `contract_payload` then checks the whole event payload
(e.g. a measure's end not before its start) before anything is recorded.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from contracts.events import (
    CaseClosureReason,
    EventData,
    GoalKind,
    MeasureKind,
    MeasureOutcome,
    Qualification,
)
from contracts.catalogue import Cefr
from contracts.fields import Count, Date, Identifier, LanguageCode, ShortText


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GoalInput(Input):
    goal_id: Identifier | None = Field(default=None, description="default: the next free g<n>")
    kind: GoalKind
    target: ShortText = Field(description="what the person wants to reach, e.g. German B1 (DTZ)")
    due: Date


class MeasureInput(Input):
    measure_id: Identifier | None = Field(default=None, description="default: <plan_id>-m<n>")
    kind: MeasureKind
    provider: ShortText
    starts: Date
    ends: Date | None = Field(default=None, description="planned last day; null when open-ended")


class CompletionInput(Input):
    outcome: MeasureOutcome


class ClosureInput(Input):
    reason: CaseClosureReason


class ProfileInput(Input):
    """The re-assessment: the fields of ReAssessmentCompleted."""

    language_levels: dict[LanguageCode, Cefr] = Field(default_factory=dict)
    qualifications: list[Qualification] = Field(default_factory=list)
    work_experience_years: Count = Field(default=0, le=80)
    inclinations: list[ShortText] = Field(default_factory=list)
    support_needs: list[ShortText] = Field(default_factory=list)


def contract_payload(model: type[EventData], data: dict[str, Any]) -> dict[str, Any]:
    """`data` checked against the catalogue's payload model, as JSON; raises pydantic's ValidationError."""
    return model.model_validate(data).model_dump(mode="json")
