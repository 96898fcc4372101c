"""`authorisation_problems`: the emitter column of §3 and the can-hold rules of §1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from contracts import Agency, ValidatedEvent, authorisation_problems, validate

EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "examples"
EXAMPLE_FILES = sorted(p for p in EXAMPLES.glob("*.json") if p.name != "batch.cloudevents-batch.json")


def event(name: str, agency: str | None = None, **data: Any) -> ValidatedEvent[Any]:
    """The example of `name`, published by `agency` (default: the example's own), data amended."""
    raw = orjson.loads((EXAMPLES / f"{name}.json").read_bytes())
    if agency is not None:
        raw["source"] = f"urn:kim:{agency}:nordhorn"
    raw["data"].update(data)
    result = validate(raw)
    assert isinstance(result, ValidatedEvent), result
    return result


def problems_for(validated: ValidatedEvent[Any]) -> dict[str, str]:
    assert validated.agency is not None
    return {p.path: p.rule for p in authorisation_problems(validated, validated.agency)}


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_every_example_is_authorised_for_its_source(path: Path) -> None:
    assert problems_for(event(path.stem)) == {}


def test_foreigners_office_may_not_emit_profile_completed() -> None:
    found = problems_for(event("ProfileCompleted", "foreigners_office"))
    assert found == {
        "$.type": (
            "agency foreigners_office may not emit ProfileCompleted; "
            "emitted by: integration_center, job_center"
        )
    }


def test_only_the_foreigners_office_grants_residence_titles() -> None:
    assert "$.type" in problems_for(event("ResidenceTitleGranted", "job_center"))


def test_job_center_may_not_open_benefits_under_asylblg() -> None:
    found = problems_for(event("CaseOpenedByAgency", "job_center", area="benefits", legal_domain="ASYLBLG"))
    assert found == {"$.data.legal_domain": "agency job_center can hold area benefits only under SGB_II"}


@pytest.mark.parametrize("legal_domain", ["ASYLBLG", "SGB_XII"])
def test_social_welfare_office_may_open_benefits(legal_domain: str) -> None:
    validated = event(
        "CaseOpenedByAgency", "social_welfare_office", area="benefits", legal_domain=legal_domain
    )
    assert problems_for(validated) == {}


def test_social_welfare_office_may_not_open_labour_market() -> None:
    opened = event(
        "CaseOpenedByAgency", "social_welfare_office", area="labour_market", legal_domain="SGB_XII"
    )
    found = problems_for(opened)
    assert found["$.data.area"] == (
        "agency social_welfare_office cannot hold area labour_market; "
        "agencies that can: employment_agency, integration_center, job_center"
    )


def test_foreigners_office_may_not_emit_area_events() -> None:
    for name in (
        "CaseOpenedByAgency",
        "HandedOverToAgency",
        "HandoverAccepted",
        "HandoverRejected",
        "CaseClosedByAgency",
    ):
        assert "$.type" in problems_for(event(name, "foreigners_office")), name


def test_handover_to_job_center_under_sgb_iii_is_refused() -> None:
    found = problems_for(event("HandedOverToAgency", to_agency="job_center", to_legal_domain="SGB_III"))
    assert found == {"$.data.to_legal_domain": "agency job_center can hold area benefits only under SGB_II"}


def test_handover_to_an_agency_that_cannot_hold_the_area_is_refused() -> None:
    found = problems_for(event("HandedOverToAgency", to_agency="youth_office", to_legal_domain="SGB_VIII"))
    assert list(found) == ["$.data.to_agency"]


def test_handover_sender_must_be_able_to_hold_the_area() -> None:
    found = problems_for(event("HandedOverToAgency", "youth_office"))
    assert list(found) == ["$.data.area"]


def test_social_welfare_office_may_hand_benefits_to_itself_under_sgb_xii() -> None:
    validated = event("HandedOverToAgency", to_agency="social_welfare_office", to_legal_domain="SGB_XII")
    assert problems_for(validated) == {}


def test_case_closed_by_agency_needs_a_holder_of_the_area() -> None:
    assert list(problems_for(event("CaseClosedByAgency", "youth_office"))) == ["$.data.area"]
    assert problems_for(event("CaseClosedByAgency", "youth_office", area="youth")) == {}


def test_acceptance_is_not_checked_against_history() -> None:
    # An acceptance may arrive before its offer: the tables are all the gateway checks.
    assert problems_for(event("HandoverAccepted", "employment_agency", handover_id="unknown")) == {}


def test_source_must_name_the_callers_agency() -> None:
    validated = event("CaseClosed")
    found = {p.path: p for p in authorisation_problems(validated, Agency.JOB_CENTER)}
    assert found["$.source"].rule == "must name the caller's agency: urn:kim:job_center[:<office>]"
    assert found["$.source"].value == "urn:kim:integration_center:nordhorn"
    assert authorisation_problems(validated, "integration_center") == []


def test_agencies_may_not_publish_derived_events() -> None:
    raw = orjson.loads((EXAMPLES / "CaseClosed.json").read_bytes())
    raw["type"] = "de.kim.ReviewDue.v1"
    raw["data"] = {
        "area": "case_management",
        "held_since": "2026-06-01T00:00:00Z",
        "due": "2028-06-01T00:00:00Z",
    }
    validated = validate(raw)
    assert isinstance(validated, ValidatedEvent)
    found = {p.path: p.rule for p in authorisation_problems(validated, "integration_center")}
    assert found == {"$.type": "ReviewDue is a derived event, published only by the KIM referral service"}


def test_service_source_is_not_an_agency() -> None:
    raw = orjson.loads((EXAMPLES / "CaseClosed.json").read_bytes()) | {"source": "urn:kim:service:referral"}
    validated = validate(raw)
    assert isinstance(validated, ValidatedEvent)
    assert list(authorisation_problems(validated, "integration_center")) != []


def test_unknown_caller() -> None:
    found = authorisation_problems(event("CaseClosed"), "town_hall")
    assert [p.rule for p in found] == ["the caller's agency 'town_hall' is not an agency id"]
