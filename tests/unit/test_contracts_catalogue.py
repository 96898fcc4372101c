"""The tables of interfaces.md §1 and the emitter column of §3."""

from __future__ import annotations

import pytest

from contracts import (
    AREA_HOLDERS,
    CATALOGUE,
    DERIVED,
    EVENT_TYPES,
    Agency,
    Area,
    Cefr,
    LegalDomain,
    agencies_that_can_hold,
    agency_topic,
    can_hold,
    legal_domains_for,
    service_topic,
)

A, R, L = Agency, Area, LegalDomain

# Every (agency, area, legal domain) the spec allows, spelled out by hand.
ALLOWED = {
    (A.INTEGRATION_CENTER, R.CASE_MANAGEMENT, L.NONE),
    (A.JOB_CENTER, R.CASE_MANAGEMENT, L.SGB_II),
    (A.SOCIAL_WELFARE_OFFICE, R.BENEFITS, L.ASYLBLG),
    (A.SOCIAL_WELFARE_OFFICE, R.BENEFITS, L.SGB_XII),
    (A.JOB_CENTER, R.BENEFITS, L.SGB_II),
    (A.EMPLOYMENT_AGENCY, R.BENEFITS, L.SGB_III),
    (A.INTEGRATION_CENTER, R.LABOUR_MARKET, L.NONE),
    (A.JOB_CENTER, R.LABOUR_MARKET, L.SGB_II),
    (A.EMPLOYMENT_AGENCY, R.LABOUR_MARKET, L.SGB_III),
    (A.YOUTH_OFFICE, R.YOUTH, L.SGB_VIII),
}


@pytest.mark.parametrize("agency", list(Agency))
@pytest.mark.parametrize("area", list(Area))
@pytest.mark.parametrize("legal_domain", list(LegalDomain))
def test_can_hold_matches_both_tables(agency: Agency, area: Area, legal_domain: LegalDomain) -> None:
    assert can_hold(agency, area, legal_domain) == ((agency, area, legal_domain) in ALLOWED)


def test_can_hold_takes_plain_strings_and_rejects_unknown_ids() -> None:
    assert can_hold("social_welfare_office", "benefits", "ASYLBLG")
    assert not can_hold("job_center", "benefits", "ASYLBLG")
    assert not can_hold("town_hall", "benefits", "SGB_II")
    assert not can_hold("job_center", "housing", "SGB_II")
    assert not can_hold("job_center", "benefits", "SGB_IX")


def test_agencies_that_can_hold() -> None:
    assert agencies_that_can_hold(R.BENEFITS) == {A.SOCIAL_WELFARE_OFFICE, A.JOB_CENTER, A.EMPLOYMENT_AGENCY}
    assert agencies_that_can_hold("case_management") == {A.INTEGRATION_CENTER, A.JOB_CENTER}
    assert agencies_that_can_hold(R.YOUTH) == {A.YOUTH_OFFICE}
    assert AREA_HOLDERS == set(Agency) - {A.FOREIGNERS_OFFICE}


def test_legal_domains_for() -> None:
    assert legal_domains_for(A.SOCIAL_WELFARE_OFFICE, R.BENEFITS) == {L.ASYLBLG, L.SGB_XII}
    assert legal_domains_for(A.FOREIGNERS_OFFICE, R.BENEFITS) == frozenset()


CASE = {A.INTEGRATION_CENTER, A.JOB_CENTER}
MEASURES = {A.INTEGRATION_CENTER, A.JOB_CENTER, A.EMPLOYMENT_AGENCY}
EMITTERS = {
    "PersonRegistered": CASE,
    "ConsentRecorded": CASE,
    "ConsentWithdrawn": CASE,
    "ProfileCompleted": CASE,
    "ReAssessmentCompleted": CASE,
    "IntegrationAgreementSigned": CASE,
    "MeasureAssigned": MEASURES,
    "MeasureCompleted": MEASURES,
    "GoalAchieved": CASE,
    "LanguageLevelReached": MEASURES,
    "ResidenceTitleGranted": {A.FOREIGNERS_OFFICE},
    "NaturalisationCompleted": {A.FOREIGNERS_OFFICE},
    "EmploymentStarted": MEASURES,
    "CaseOpenedByAgency": set(Agency) - {A.FOREIGNERS_OFFICE},
    "HandedOverToAgency": set(Agency) - {A.FOREIGNERS_OFFICE},
    "HandoverAccepted": set(Agency) - {A.FOREIGNERS_OFFICE},
    "HandoverRejected": set(Agency) - {A.FOREIGNERS_OFFICE},
    "CaseClosedByAgency": set(Agency) - {A.FOREIGNERS_OFFICE},
    "CaseClosed": CASE,
}


def test_catalogue_emitters_match_the_spec_table() -> None:
    assert {model.event_name: set(model.emitters) for model in CATALOGUE} == EMITTERS
    assert all(model.version == 1 and model.service is None for model in CATALOGUE)


def test_derived_events_have_no_agency_emitter() -> None:
    assert [model.event_name for model in DERIVED] == [
        "HandoverExpected",
        "HandoverOverdue",
        "JurisdictionGapOpened",
        "JurisdictionGapClosed",
        "ReviewDue",
    ]
    assert all(model.emitters == frozenset() and model.service == "referral" for model in DERIVED)


def test_event_types_are_keyed_by_cloudevents_type() -> None:
    assert EVENT_TYPES["de.kim.LanguageLevelReached.v1"].__name__ == "LanguageLevelReached"
    assert len(EVENT_TYPES) == len(CATALOGUE) + len(DERIVED)


def test_topics() -> None:
    assert agency_topic(A.JOB_CENTER) == "kim.job_center.events"
    assert agency_topic("youth_office") == "kim.youth_office.events"
    assert service_topic("referral") == "kim.referral.events"


def test_cefr_levels_are_ordered() -> None:
    assert [level.value for level in Cefr] == ["A1", "A2", "B1", "B2", "C1", "C2"]
    assert Cefr.B2.rank > Cefr.B1.rank > Cefr.A2.rank
