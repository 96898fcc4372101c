"""The integration plan aggregate: its life cycle, its invariants and the events it publishes."""

from __future__ import annotations

import pytest

from contracts import EVENT_TYPES, validate
from services.caseplan.domain import Actor, IntegrationPlan, PlanError, catalogue_event, plan_aggregate_id
from services.caseplan.messaging import envelope_for

IC = Actor("m.yilmaz", "integration_center")
JC = Actor("k.weber", "job_center")
EA = Actor("s.braun", "employment_agency")
T = "2026-03-02T09:00:00Z"
GOAL = {"goal_id": "g1", "kind": "language", "target": "Deutsch B1 (DTZ)", "due": "2026-12-31"}
MEASURE = {"measure_id": "plan-P-1-1-m1", "kind": "integration_course", "provider": "VHS Biberach",
           "starts": "2026-04-01", "ends": "2026-09-30"}


def drafted() -> IntegrationPlan:
    return IntegrationPlan(subject="P-1", sequence=1, plan_id="plan-P-1-1", agency=IC.agency, by=IC.sub, effective=T)


def signed() -> IntegrationPlan:
    plan = drafted()
    plan.set_goal(IC, GOAL, T)
    plan.sign(IC, T)
    return plan


def rule_of(call) -> PlanError:
    with pytest.raises(PlanError) as caught:
        call()
    return caught.value


def test_a_plan_runs_from_draft_to_closed_case_and_publishes_the_catalogue_events():
    plan = signed()
    plan.assign_measure(IC, MEASURE, T)
    plan.complete_measure(IC, MEASURE["measure_id"], "completed", T)
    plan.achieve_goal(IC, "g1", T)
    plan.reassess(IC, {"language_levels": {"de": "B1"}, "qualifications": [], "work_experience_years": 3,
                       "inclinations": [], "support_needs": []}, T)
    assert plan.status == "revision"
    plan.set_goal(IC, {**GOAL, "goal_id": "g2", "kind": "employment", "target": "Arbeit als Elektriker"}, T)
    plan.sign(IC, T)
    plan.close_case(IC, "regular_services_reached", T)
    events = plan.collect_events()
    names = [catalogue_event(e)[0] if catalogue_event(e) else None for e in events]
    assert names == [None, None, "IntegrationAgreementSigned", "MeasureAssigned", "MeasureCompleted", "GoalAchieved",
                     "ReAssessmentCompleted", None, "IntegrationAgreementSigned", "CaseClosed"]
    second_agreement = catalogue_event(events[8])[1]
    assert [g["goal_id"] for g in second_agreement["goals"]] == ["g1", "g2"]
    assert plan.to_dict()["goals"][0]["status"] == "achieved"


def test_every_published_event_is_a_valid_catalogue_event_of_the_acting_agency():
    plan = signed()
    plan.assign_measure(EA, {**MEASURE, "measure_id": "m-ea"}, T)
    mapper_ic, mapper_ea = envelope_for("integration_center"), envelope_for("employment_agency")
    published = []
    for domain_event in plan.collect_events():
        for mapper in (mapper_ic, mapper_ea):
            envelope = mapper(domain_event, f"id-{domain_event.originator_version}")
            if envelope is not None:
                published.append(envelope)
    assert [(e["type"], e["source"]) for e in published] == [
        ("de.kim.IntegrationAgreementSigned.v1", "urn:kim:integration_center:caseplan"),
        ("de.kim.MeasureAssigned.v1", "urn:kim:employment_agency:caseplan")]
    for envelope in published:
        checked = validate(envelope)
        assert not isinstance(checked, list), checked
        assert checked.subject == "P-1" and checked.envelope.time == T
        assert type(checked.data) is EVENT_TYPES[envelope["type"]]


@pytest.mark.parametrize("case, code", [
    (lambda p: p.achieve_goal(IC, "g9", T), "unknown_goal"),
    (lambda p: p.set_goal(IC, GOAL, T), "goals_frozen"),
    (lambda p: p.remove_goal(IC, "g1", T), "goal_agreed"),
    (lambda p: p.sign(IC, T), "not_signable"),
    (lambda p: p.complete_measure(IC, "m-unknown", "completed", T), "unknown_measure"),
    (lambda p: p.discard(IC, T), "not_a_draft"),
    (lambda p: p.sign(JC, T), "not_plan_agency"),
    (lambda p: p.assign_measure(Actor("x", "youth_office"), MEASURE, T), "agency_may_not"),
])
def test_a_broken_rule_names_the_field_and_changes_nothing(case, code):
    plan = signed()
    plan.collect_events()
    error = rule_of(lambda: case(plan))
    assert error.code == code and error.field and error.rule
    assert plan.collect_events() == []


def test_no_goal_achieved_that_was_never_set_or_not_yet_agreed_or_twice():
    plan = drafted()
    plan.set_goal(IC, GOAL, T)
    assert rule_of(lambda: plan.achieve_goal(IC, "g1", T)).code == "goal_not_agreed"
    plan.sign(IC, T)
    plan.achieve_goal(IC, "g1", T)
    assert rule_of(lambda: plan.achieve_goal(IC, "g1", T)).code == "goal_achieved"
    assert rule_of(lambda: plan.achieve_goal(IC, "nope", T)).field == "goal_id"


def test_no_measure_on_a_closed_case():
    plan = signed()
    plan.close_case(IC, "moved_away", T)
    error = rule_of(lambda: plan.assign_measure(IC, MEASURE, T))
    assert error.code == "case_closed" and "closed" in error.rule
    assert rule_of(lambda: plan.achieve_goal(IC, "g1", T)).code == "case_closed"


def test_signing_needs_a_goal_and_a_measure_ends_once_by_its_agency():
    plan = drafted()
    assert rule_of(lambda: plan.sign(IC, T)).code == "no_goals"
    plan.assign_measure(IC, MEASURE, T)
    assert rule_of(lambda: plan.complete_measure(JC, MEASURE["measure_id"], "aborted", T)).kind == "forbidden"
    plan.complete_measure(IC, MEASURE["measure_id"], "aborted", T)
    assert rule_of(lambda: plan.complete_measure(IC, MEASURE["measure_id"], "completed", T)).code == "measure_ended"
    assert rule_of(lambda: plan.assign_measure(IC, MEASURE, T)).code == "measure_exists"


def test_ids_are_stable_and_free():
    plan = drafted()
    assert plan.id == plan_aggregate_id("P-1", 1) != plan_aggregate_id("P-1", 2)
    plan.set_goal(IC, GOAL, T)
    plan.set_goal(IC, {**GOAL, "goal_id": "g3"}, T)
    assert plan.next_goal_id() == "g4"
    plan.remove_goal(IC, "g1", T)
    assert plan.next_goal_id() == "g2"
    assert plan.next_measure_id() == "plan-P-1-1-m1"
