"""Use cases of the caseplan service: plan commands, the timeline, the caseload."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError

from contracts import rfc3339
from contracts.events import Goal, MeasureAssigned
from kim.auth import Principal
from kim.consent import Visibility, visibility
from kim.messaging.chain import CHAIN_ATTRIBUTES
from kim.storage import Database
from services.caseplan.caseload import Alert, PersonSummary, alerts, emitter
from services.caseplan.domain import (
    Actor,
    IntegrationPlan,
    PlanError,
    may_assign_measures,
    may_keep_plans,
    plan_aggregate_id,
)
from services.caseplan.inputs import contract_payload
from services.caseplan.projections import CaseplanStore

Clock = Callable[[], datetime]
INTEGRATION_CENTER = "integration_center"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class CasePlans(Application[UUID]):
    """The event store of the integration plans (table `caseplans_events` on PostgreSQL)."""


class Forbidden(Exception):
    """The caller may not see or do this; the message says why (HTTP 403)."""


# ---- who may see what (§6) -----------------------------------------------------------------

def as_sent(envelope: Mapping[str, Any]) -> dict[str, Any]:
    """The envelope as its producer sent it: without the hash-chain attributes added on publishing."""
    return {k: v for k, v in envelope.items() if k not in CHAIN_ATTRIBUTES}


def may_read_timeline(principal: Principal) -> bool:
    return principal.has_any("auditor", "case_manager", "agency_system")


def sees_events_of(agency: str | None, viewer_agency: str, seen: Visibility) -> bool:
    """§6 for event contents: own events always, other agencies' while a consent shares the person."""
    return agency == viewer_agency or seen.shared


@dataclass(frozen=True)
class CaseloadEntry:
    subject: str
    summary: PersonSummary
    alerts: list[Alert]
    taken_on: bool  # on this case manager's own list

    def to_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "municipality": self.summary.municipality,
                "registered_by": self.summary.registered_by, "holders": self.summary.holders,
                "taken_on": self.taken_on, "alerts": [a.to_dict() for a in self.alerts]}


class CasePlanService:
    """Plan commands on the event-sourced plans, and queries on the read models."""

    def __init__(self, plans: CasePlans, db: Database, clock: Clock = utc_now,
                 on_saved: Callable[[], None] = lambda: None) -> None:
        self.plans = plans
        self._db = db
        self._clock = clock
        self._on_saved = on_saved  # wakes the outbox relays

    # ---- plan commands ---------------------------------------------------------------------

    def draft(self, actor: Actor, subject: str) -> IntegrationPlan:
        if not may_keep_plans(actor.agency):
            raise PlanError("agency_may_not", "agency", f"agency {actor.agency} may not keep integration plans; "
                            "integration_center and job_center do", kind="forbidden")
        summary = self._check_person(actor, subject)
        if summary is not None and summary.case_closed_at is not None:
            raise PlanError("case_closed", "subject", f"the case of person {subject} is closed")
        latest = self._latest(subject)
        if latest is not None and latest.is_open:
            raise PlanError("plan_open", "subject", f"person {subject} already has an open plan {latest.plan_id} "
                            f"(kept by {latest.agency}, {latest.status})", plan_id=latest.plan_id)
        if latest is not None and latest.status == "closed":
            raise PlanError("case_closed", "subject", f"the case of person {subject} is closed")
        ours = {latest.plan_id} if latest is not None else set()
        outside = summary.agreement if summary is not None else None
        if outside is not None and outside["plan_id"] not in ours:
            raise PlanError("plan_open", "subject", f"person {subject} already has an open plan "
                            f"{outside['plan_id']} (signed by {outside['agency']})", plan_id=outside["plan_id"])
        sequence = latest.sequence + 1 if latest is not None else 1
        plan = IntegrationPlan(subject=subject, sequence=sequence, plan_id=f"plan-{subject}-{sequence}",
                               agency=actor.agency, by=actor.sub, effective=self._now())
        self._save(plan, PlanError("plan_open", "subject", f"person {subject} already has an open plan"))
        self._take_on(actor, subject, "plan_drafted")
        return plan

    def set_goal(self, actor: Actor, subject: str, goal: Mapping[str, Any]) -> IntegrationPlan:
        """`goal` as the catalogue's Goal; without `goal_id` the next free one. A goal the
        contract refuses raises pydantic's ValidationError."""
        def command(plan: IntegrationPlan, now: str) -> None:
            goal_id = goal.get("goal_id") or plan.next_goal_id()
            plan.set_goal(actor, contract_payload(Goal, {**goal, "goal_id": goal_id}), now)

        return self._change(actor, subject, command)

    def remove_goal(self, actor: Actor, subject: str, goal_id: str) -> IntegrationPlan:
        return self._change(actor, subject, lambda plan, now: plan.remove_goal(actor, goal_id, now))

    def sign(self, actor: Actor, subject: str) -> IntegrationPlan:
        plan = self._change(actor, subject, lambda plan, now: plan.sign(actor, now))
        self._take_on(actor, subject, "plan_signed")
        return plan

    def assign_measure(self, actor: Actor, subject: str, measure: Mapping[str, Any]) -> IntegrationPlan:
        """`measure` as the catalogue's MeasureAssigned data; without `measure_id` the next free one."""
        if not may_assign_measures(actor.agency):
            raise PlanError("agency_may_not", "agency", f"agency {actor.agency} may not assign measures",
                            kind="forbidden")

        def command(plan: IntegrationPlan, now: str) -> None:
            measure_id = measure.get("measure_id") or plan.next_measure_id()
            plan.assign_measure(actor, contract_payload(MeasureAssigned, {**measure, "measure_id": measure_id}), now)

        return self._change(actor, subject, command, guard_closed=True)

    def complete_measure(self, actor: Actor, subject: str, measure_id: str, outcome: str) -> IntegrationPlan:
        return self._change(actor, subject,
                            lambda plan, now: plan.complete_measure(actor, measure_id, outcome, now))

    def achieve_goal(self, actor: Actor, subject: str, goal_id: str) -> IntegrationPlan:
        return self._change(actor, subject, lambda plan, now: plan.achieve_goal(actor, goal_id, now))

    def reassess(self, actor: Actor, subject: str, profile: Mapping[str, Any]) -> IntegrationPlan:
        return self._change(actor, subject, lambda plan, now: plan.reassess(actor, profile, now))

    def close_case(self, actor: Actor, subject: str, reason: str) -> IntegrationPlan:
        return self._change(actor, subject, lambda plan, now: plan.close_case(actor, reason, now))

    def discard(self, actor: Actor, subject: str) -> IntegrationPlan:
        return self._change(actor, subject, lambda plan, now: plan.discard(actor, now))

    def plan_for(self, principal: Principal, subject: str) -> IntegrationPlan | None:
        """The person's latest plan (open, closed or discarded), if any, when the principal may see
        the events of the agency that keeps it (§6); else Forbidden."""
        plan = self._latest(subject)
        if plan is None or principal.has_any("auditor"):
            return plan
        with self._db.transaction(readonly=True) as tx:
            seen = visibility(tx, subject, principal.agency, self._clock())
        if not sees_events_of(plan.agency, principal.agency, seen):
            raise Forbidden(f"plan {plan.plan_id} is kept by {plan.agency} and no consent in force shares person "
                            f"{subject} with {principal.agency}")
        return plan

    def _change(self, actor: Actor, subject: str, command: Callable[[IntegrationPlan, str], None],
                guard_closed: bool = False) -> IntegrationPlan:
        summary = self._check_person(actor, subject)
        if guard_closed and summary is not None and summary.case_closed_at is not None:
            raise PlanError("case_closed", "subject", f"the case of person {subject} is closed")
        plan = self._latest(subject)
        if plan is None or plan.status == "discarded":
            raise PlanError("no_plan", "subject", f"person {subject} has no open plan; draft one first")
        command(plan, self._now())
        self._save(plan, PlanError("concurrent_change", "plan", f"plan {plan.plan_id} was changed at the same "
                                   "time by someone else; reload it and try again"))
        return plan

    def _check_person(self, actor: Actor, subject: str) -> PersonSummary | None:
        """The person's summary, if any, after checking that the actor's agency may work with them."""
        with self._db.transaction(readonly=True) as tx:
            seen = visibility(tx, subject, actor.agency, self._clock())
            summary = CaseplanStore.summaries(tx, [subject]).get(subject)
        if seen.registered_by is None:
            raise PlanError("unknown_person", "subject", f"no person {subject} is registered (or the registration "
                            "has not arrived yet)", kind="not_found")
        if not seen.personal_data_visible_to(actor.agency):
            raise PlanError("no_consent", "subject", f"person {subject} was registered by {seen.registered_by} "
                            f"and no consent in force shares them with {actor.agency}", kind="forbidden")
        return summary

    def _latest(self, subject: str) -> IntegrationPlan | None:
        latest, sequence = None, 1
        while True:
            try:
                latest = self.plans.repository.get(plan_aggregate_id(subject, sequence))
            except AggregateNotFoundError:
                return latest
            sequence += 1

    def _save(self, plan: IntegrationPlan, conflict: PlanError) -> None:
        try:
            self.plans.save(plan)
        except IntegrityError:
            raise conflict from None
        self._on_saved()

    def _take_on(self, actor: Actor, subject: str, reason: str) -> None:
        with self._db.transaction() as tx:
            CaseplanStore.take_on(tx, actor.sub, actor.agency, subject, reason, self._clock())

    def take_on(self, actor: Actor, subject: str, reason: str) -> None:
        """Put a person on the case manager's caseload (e.g. after registering them)."""
        self._take_on(actor, subject, reason)

    def _now(self) -> str:
        return rfc3339(self._clock())

    # ---- queries ----------------------------------------------------------------------------

    def timeline(self, principal: Principal, subject: str, purpose: str | None = None) -> list[dict[str, Any]]:
        """The person's agency events as `principal` may see them (§6), in timeline order, as their
        producers sent them (derived events are alerts, not the person's history).

        Auditors see everything, and each of their reads is recorded.
        """
        if not may_read_timeline(principal):
            raise Forbidden("the timeline needs the role case_manager, auditor or agency_system; the token has "
                            f"{', '.join(sorted(principal.roles)) or 'none'}")
        now = self._clock()
        auditor = principal.has_any("auditor")
        with self._db.transaction(readonly=not auditor) as tx:
            envelopes = [as_sent(e) for e in CaseplanStore.envelopes_of(tx, [subject])[subject]
                         if emitter(e) is not None]
            if auditor:
                CaseplanStore.record_access(tx, now, principal.sub, principal.agency, principal.roles, subject,
                                            "timeline", purpose)
                return envelopes
            seen = visibility(tx, subject, principal.agency, now)
        return [e for e in envelopes if sees_events_of(emitter(e), principal.agency, seen)]

    def person(self, principal: Principal, subject: str) -> tuple[PersonSummary | None, list[Alert], Visibility]:
        """The person's summary, the alerts the principal may see, and what consent allows it."""
        now = self._clock()
        with self._db.transaction(readonly=True) as tx:
            summary = CaseplanStore.summaries(tx, [subject]).get(subject)
            seen = visibility(tx, subject, principal.agency, now)
        if summary is None:
            return None, [], seen
        return summary, alerts(subject, summary, now, self._alert_filter(principal, summary, seen)), seen

    def caseload(self, principal: Principal) -> list[CaseloadEntry]:
        """The case manager's persons: taken on, held by their agency, or (integration center: any;
        others: naming their agency) with an open gap or overdue handover. Alerts first."""
        if not principal.has_any("case_manager"):
            raise Forbidden("the caseload needs the role case_manager; the token has "
                            f"{', '.join(sorted(principal.roles)) or 'none'}")
        now, agency = self._clock(), principal.agency
        entries = []
        with self._db.transaction(readonly=True) as tx:
            mine = set(CaseplanStore.taken_on_by(tx, principal.sub, agency))
            for subject, summary in CaseplanStore.summaries(tx).items():
                taken_on = subject in mine
                holds = agency in summary.holders.values()
                if summary.case_closed_at is not None and not taken_on:
                    continue
                if not (taken_on or holds or summary.gaps or summary.overdue_handovers):
                    continue  # nothing that could bring the person onto this list
                seen = visibility(tx, subject, agency, now)
                found = alerts(subject, summary, now, self._alert_filter(principal, summary, seen))
                urgent = [a for a in found if a.kind in ("gap", "handover_overdue")]
                if taken_on or holds or (urgent and (agency == INTEGRATION_CENTER or _names(urgent, agency))):
                    entries.append(CaseloadEntry(subject, summary, found, taken_on))
        return sorted(entries, key=lambda e: (not e.alerts, min((a.rank for a in e.alerts), default=0),
                                              min((a.since for a in e.alerts), default=""), e.subject))

    @staticmethod
    def _alert_filter(principal: Principal, summary: PersonSummary, seen: Visibility):
        agency = principal.agency

        def may_see(origin: str | None, named: frozenset[str]) -> bool:
            if principal.has_any("auditor"):
                return True
            if origin is None:  # derived from responsibility: as the referral service shows it (§6)
                return agency == INTEGRATION_CENTER or agency in named or agency in summary.involved
            return origin == agency or seen.shared

        return may_see

    def access_log(self, subject: str | None) -> list[dict[str, Any]]:
        with self._db.transaction(readonly=True) as tx:
            rows = CaseplanStore.access_log(tx, subject)
        keys = ("at", "reader_sub", "reader_agency", "roles", "subject", "action", "purpose")
        # Shaped like intake's access log so that both can be listed together; auditors'
        # reads rest on their role, not on a consent.
        return [{**dict(zip(keys, row)), "at": rfc3339(datetime.fromisoformat(row[0].replace("Z", "+00:00"))),
                 "roles": row[3].split(), "consent_purposes": []} for row in rows]


def _names(found: list[Alert], agency: str) -> bool:
    return any(agency in (a.facts.get("last_agency"), a.facts.get("from_agency"), a.facts.get("to_agency"))
               for a in found)
