"""The integration plan of one person (Integrationsplan / Integrationsvereinbarung).

`IntegrationPlan` is an event-sourced aggregate: a case manager drafts it, sets
goals, has the agreement signed, assigns measures and records their end, marks
goals achieved, re-assesses the person (which opens the goals for revision and a
new signature) and finally closes the case. Its events that the catalogue names
(`PUBLISHED`) go onto the acting agency's topic; drafting steps stay internal.

Invariants, each broken one raised as a `PlanError` naming the field and the rule:
one open plan per person; goals change only before signing or during a revision;
no goal is achieved that was never agreed (or twice); no measure on a closed case;
a measure ends once; only the plan's agency changes the plan (measures also by
the other agencies that may assign measures).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

from contracts.events import CASE_AGENCIES, MEASURE_AGENCIES

# Fixed namespace of plan aggregate ids (chosen once; never change it).
PLAN_NAMESPACE = UUID("0f7c3c52-3e8a-4f0e-9d43-6a8d1f2b9c71")

PlanStatus = Literal["draft", "signed", "revision", "closed", "discarded"]
OPEN_STATUSES = frozenset({"draft", "signed", "revision"})

ErrorKind = Literal["conflict", "forbidden", "invalid", "not_found"]


class PlanError(Exception):
    """A command breaks a rule of the plan; nothing was changed.

    `code` names the rule for the screens (which word it in German), `field` the
    input it concerns, `rule` says it in plain English, `kind` maps to the HTTP
    status (conflict 409, forbidden 403, invalid 422, not_found 404).
    """

    def __init__(self, code: str, field: str, rule: str, kind: ErrorKind = "conflict", **params: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.code = code
        self.field = field
        self.rule = rule
        self.kind = kind
        self.params = params


@dataclass(frozen=True)
class Actor:
    """Who issues a command: a case manager (token `sub`) acting for an agency."""

    sub: str
    agency: str


def plan_aggregate_id(subject: str, sequence: int) -> UUID:
    """Id of the person's `sequence`-th plan; creating the same one twice conflicts,
    which is what keeps a person to one open plan under concurrent drafting."""
    return uuid5(PLAN_NAMESPACE, f"{subject}/{sequence}")


def may_keep_plans(agency: str) -> bool:
    """Agencies that may sign integration agreements (emitters of IntegrationAgreementSigned)."""
    return agency in CASE_AGENCIES


def may_assign_measures(agency: str) -> bool:
    return agency in MEASURE_AGENCIES


class IntegrationPlan(Aggregate):
    """One integration plan of one person, from draft to the closed case."""

    @staticmethod
    def create_id(subject: str, sequence: int) -> UUID:
        return plan_aggregate_id(subject, sequence)

    @event("Drafted")
    def __init__(self, subject: str, sequence: int, plan_id: str, agency: str, by: str, effective: str) -> None:
        self.subject = subject
        self.sequence = sequence
        self.plan_id = plan_id
        self.agency = agency
        self.drafted_by = by
        self.drafted_at = effective
        self.status: PlanStatus = "draft"
        self.goals: dict[str, dict[str, Any]] = {}
        self.agreed_goals: set[str] = set()
        self.achieved: dict[str, str] = {}  # goal_id -> when
        self.measures: dict[str, dict[str, Any]] = {}
        self.signed_at: str | None = None
        self.signed_by: str | None = None
        self.agreements = 0
        self.reassessed_at: str | None = None
        self.closed_reason: str | None = None
        self.closed_at: str | None = None

    # ---- commands --------------------------------------------------------------------

    def set_goal(self, actor: Actor, goal: Mapping[str, Any], effective: str) -> None:
        """`goal` as the catalogue's Goal: goal_id, kind, target, due (YYYY-MM-DD)."""
        self._require_agency(actor)
        if self.status not in ("draft", "revision"):
            raise PlanError("goals_frozen", "goal", f"goals can be set only while the plan is a draft or "
                            f"under revision after a re-assessment; plan {self.plan_id} is {self.status}")
        if goal["goal_id"] in self.goals:
            raise PlanError("goal_exists", "goal_id", f"goal {goal['goal_id']} is already set in plan {self.plan_id}",
                            goal_id=goal["goal_id"])
        self._goal_set(goal=dict(goal), **self._stamp(actor, effective))

    def remove_goal(self, actor: Actor, goal_id: str, effective: str) -> None:
        self._require_agency(actor)
        if goal_id not in self.goals:
            raise PlanError("unknown_goal", "goal_id", f"goal {goal_id} was never set in plan {self.plan_id}",
                            goal_id=goal_id)
        if goal_id in self.agreed_goals or self.status not in ("draft", "revision"):
            raise PlanError("goal_agreed", "goal_id", f"goal {goal_id} is part of the signed agreement and "
                            "stays; only goals not yet signed can be removed", goal_id=goal_id)
        self._goal_removed(goal_id=goal_id, **self._stamp(actor, effective))

    def sign(self, actor: Actor, effective: str) -> None:
        self._require_agency(actor)
        if self.status not in ("draft", "revision"):
            raise PlanError("not_signable", "plan", f"plan {self.plan_id} is {self.status}; it can be signed as a "
                            "draft or after a re-assessment")
        if not self.goals:
            raise PlanError("no_goals", "goals", "an integration agreement needs at least one goal")
        self._signed(goals=[self.goals[g] for g in self.goals], **self._stamp(actor, effective))

    def assign_measure(self, actor: Actor, measure: Mapping[str, Any], effective: str) -> None:
        """`measure` as the catalogue's MeasureAssigned data."""
        if not may_assign_measures(actor.agency):
            raise PlanError("agency_may_not", "agency", f"agency {actor.agency} may not assign measures",
                            kind="forbidden")
        self._require_open()
        if measure["measure_id"] in self.measures:
            raise PlanError("measure_exists", "measure_id",
                            f"measure {measure['measure_id']} is already assigned", measure_id=measure["measure_id"])
        self._measure_assigned(measure=dict(measure), **self._stamp(actor, effective))

    def complete_measure(self, actor: Actor, measure_id: str, outcome: str, effective: str) -> None:
        self._require_open()
        measure = self.measures.get(measure_id)
        if measure is None:
            raise PlanError("unknown_measure", "measure_id", f"measure {measure_id} was never assigned in plan "
                            f"{self.plan_id}", measure_id=measure_id)
        if measure["assigned_by_agency"] != actor.agency:
            raise PlanError("not_measure_agency", "agency", f"measure {measure_id} was assigned by "
                            f"{measure['assigned_by_agency']}; only that agency records its end", kind="forbidden")
        if measure.get("outcome"):
            raise PlanError("measure_ended", "measure_id", f"measure {measure_id} has already ended "
                            f"({measure['outcome']})", measure_id=measure_id)
        self._measure_completed(measure_id=measure_id, outcome=outcome, **self._stamp(actor, effective))

    def achieve_goal(self, actor: Actor, goal_id: str, effective: str) -> None:
        self._require_agency(actor)
        self._require_open()
        if goal_id not in self.goals:
            raise PlanError("unknown_goal", "goal_id", f"goal {goal_id} was never set in plan {self.plan_id}",
                            goal_id=goal_id)
        if goal_id not in self.agreed_goals:
            raise PlanError("goal_not_agreed", "goal_id", f"goal {goal_id} is not part of a signed agreement yet; "
                            "sign the plan first", goal_id=goal_id)
        if goal_id in self.achieved:
            raise PlanError("goal_achieved", "goal_id", f"goal {goal_id} was already achieved", goal_id=goal_id)
        self._goal_achieved(goal_id=goal_id, **self._stamp(actor, effective))

    def reassess(self, actor: Actor, profile: Mapping[str, Any], effective: str) -> None:
        """`profile` as the catalogue's ReAssessmentCompleted data; opens the goals for revision."""
        self._require_agency(actor)
        self._require_open()
        if self.status == "draft":
            raise PlanError("not_signed", "plan", f"plan {self.plan_id} is still a draft; a re-assessment "
                            "follows a signed agreement (record the first profile instead)")
        self._reassessed(profile=dict(profile), **self._stamp(actor, effective))

    def close_case(self, actor: Actor, reason: str, effective: str) -> None:
        self._require_agency(actor)
        self._require_open()
        self._case_closed(reason=reason, **self._stamp(actor, effective))

    def discard(self, actor: Actor, effective: str) -> None:
        self._require_agency(actor)
        if self.status != "draft" or self.agreements:
            raise PlanError("not_a_draft", "plan", f"plan {self.plan_id} is {self.status}; only an unsigned draft "
                            "can be discarded")
        self._discarded(**self._stamp(actor, effective))

    # ---- checks ----------------------------------------------------------------------

    def _stamp(self, actor: Actor, effective: str) -> dict[str, str]:
        return {"subject": self.subject, "plan_id": self.plan_id, "agency": actor.agency, "by": actor.sub,
                "effective": effective}

    def _require_agency(self, actor: Actor) -> None:
        if actor.agency != self.agency:
            raise PlanError("not_plan_agency", "agency", f"plan {self.plan_id} is kept by {self.agency}; only its "
                            "case managers change it", kind="forbidden", agency=self.agency)

    def _require_open(self) -> None:
        if self.status == "closed":
            raise PlanError("case_closed", "subject", f"the case of person {self.subject} is closed "
                            f"({self.closed_reason}); nothing can be added to plan {self.plan_id}")
        if self.status == "discarded":
            raise PlanError("no_plan", "plan", f"plan {self.plan_id} was discarded")

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def to_dict(self) -> dict[str, Any]:
        """The plan as the API shows it; goals with their state (draft, agreed, achieved)."""
        goals = [{**goal, "status": "achieved" if goal["goal_id"] in self.achieved else
                  "agreed" if goal["goal_id"] in self.agreed_goals else "draft",
                  "achieved_at": self.achieved.get(goal["goal_id"])} for goal in self.goals.values()]
        return {"plan_id": self.plan_id, "subject": self.subject, "agency": self.agency, "status": self.status,
                "drafted_by": self.drafted_by, "drafted_at": self.drafted_at, "signed_at": self.signed_at,
                "signed_by": self.signed_by, "reassessed_at": self.reassessed_at,
                "closed_reason": self.closed_reason, "closed_at": self.closed_at, "goals": goals,
                "measures": list(self.measures.values())}

    def next_goal_id(self) -> str:
        return _next_free("g", self.goals)

    def next_measure_id(self) -> str:
        # Measure ids travel on their own (MeasureCompleted names only the id), so they carry the plan's.
        return _next_free(f"{self.plan_id}-m", self.measures)

    # ---- events (applied on replay too: no checks below) -------------------------------

    # Every event carries who did it, when it took effect and which plan of which person
    # it is about, so that the relay can publish it without loading the aggregate.

    @event("GoalSet")
    def _goal_set(self, goal: dict[str, Any], subject: str, plan_id: str, agency: str, by: str,
                  effective: str) -> None:
        self.goals[goal["goal_id"]] = goal

    @event("GoalRemoved")
    def _goal_removed(self, goal_id: str, subject: str, plan_id: str, agency: str, by: str, effective: str) -> None:
        del self.goals[goal_id]

    @event("AgreementSigned")
    def _signed(self, goals: list[dict[str, Any]], subject: str, plan_id: str, agency: str, by: str,
                effective: str) -> None:
        self.status = "signed"
        self.agreed_goals = {g["goal_id"] for g in goals}
        self.signed_at, self.signed_by = effective, by
        self.agreements += 1

    @event("MeasureAssigned")
    def _measure_assigned(self, measure: dict[str, Any], subject: str, plan_id: str, agency: str, by: str,
                          effective: str) -> None:
        self.measures[measure["measure_id"]] = {**measure, "assigned_by_agency": agency, "outcome": None,
                                                "ended_at": None}

    @event("MeasureCompleted")
    def _measure_completed(self, measure_id: str, outcome: str, subject: str, plan_id: str, agency: str, by: str,
                           effective: str) -> None:
        self.measures[measure_id] = {**self.measures[measure_id], "outcome": outcome,
                                     "ended_at": effective}

    @event("GoalAchieved")
    def _goal_achieved(self, goal_id: str, subject: str, plan_id: str, agency: str, by: str, effective: str) -> None:
        self.achieved[goal_id] = effective

    @event("ReAssessed")
    def _reassessed(self, profile: dict[str, Any], subject: str, plan_id: str, agency: str, by: str,
                    effective: str) -> None:
        self.status = "revision"
        self.reassessed_at = effective

    @event("CaseClosed")
    def _case_closed(self, reason: str, subject: str, plan_id: str, agency: str, by: str, effective: str) -> None:
        self.status = "closed"
        self.closed_reason, self.closed_at = reason, effective

    @event("Discarded")
    def _discarded(self, subject: str, plan_id: str, agency: str, by: str, effective: str) -> None:
        self.status = "discarded"


def _next_free(prefix: str, taken: Mapping[str, Any]) -> str:
    number = len(taken) + 1
    while f"{prefix}{number}" in taken:
        number += 1
    return f"{prefix}{number}"


def catalogue_event(domain_event: Any) -> tuple[str, dict[str, Any]] | None:
    """(EventName, data) of the catalogue event a plan event stands for; None for internal steps."""
    name = type(domain_event).__name__
    if name == "AgreementSigned":
        return "IntegrationAgreementSigned", {"plan_id": domain_event.plan_id, "goals": domain_event.goals}
    if name == "MeasureAssigned":
        return "MeasureAssigned", dict(domain_event.measure)
    if name == "MeasureCompleted":
        return "MeasureCompleted", {"measure_id": domain_event.measure_id, "outcome": domain_event.outcome}
    if name == "GoalAchieved":
        return "GoalAchieved", {"plan_id": domain_event.plan_id, "goal_id": domain_event.goal_id}
    if name == "ReAssessed":
        return "ReAssessmentCompleted", dict(domain_event.profile)
    if name == "CaseClosed":
        return "CaseClosed", {"reason": domain_event.reason}
    return None
