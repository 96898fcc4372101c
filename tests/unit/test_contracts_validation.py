"""`validate`, `decode` and the envelope: good events pass, bad ones get a path and a rule."""

from __future__ import annotations

import copy
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from contracts import (
    Agency,
    CloudEvent,
    InvalidEvent,
    ValidatedEvent,
    ValidationProblem,
    build_event,
    decode,
    rfc3339,
    to_json_bytes,
    validate,
    validate_batch,
)
from contracts.events import (
    HandoverExpected,
    IntegrationAgreementSigned,
    JurisdictionGapOpened,
    LanguageLevelReached,
    ReviewDue,
)
from contracts.fields import RFC3339_RULE

EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "examples"
EXAMPLE_FILES = sorted(p for p in EXAMPLES.glob("*.json") if p.name != "batch.cloudevents-batch.json")


def example(name: str) -> dict[str, Any]:
    return orjson.loads((EXAMPLES / f"{name}.json").read_bytes())


def ok(envelope: Any) -> ValidatedEvent[Any]:
    result = validate(envelope)
    assert isinstance(result, ValidatedEvent), result
    return result


def problems(envelope: Any) -> dict[str, ValidationProblem]:
    result = validate(envelope)
    assert isinstance(result, list) and result, result
    return {problem.path: problem for problem in result}


# --- valid events -------------------------------------------------------------------


def test_there_is_one_example_per_catalogue_type() -> None:
    assert len(EXAMPLE_FILES) == 19


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_every_example_validates_from_bytes_str_and_dict(path: Path) -> None:
    raw = path.read_bytes()
    for form in (raw, raw.decode(), orjson.loads(raw)):
        event = ok(form)
        assert event.event_name == path.stem
        assert type(event.data).__name__ == path.stem
        assert event.envelope.version == 1


def test_batch_items_validate() -> None:
    events, found = validate_batch((EXAMPLES / "batch.cloudevents-batch.json").read_bytes())
    assert found == []
    assert [e.event_name for e in events] == ["CaseOpenedByAgency", "HandedOverToAgency"]


def test_validated_event_gives_typed_data_and_parsed_envelope() -> None:
    event = ok(example("HandoverAccepted"))
    assert event.agency is Agency.JOB_CENTER
    assert event.envelope.office == "nordhorn"
    assert event.envelope.service is None
    assert event.topic == "kim.job_center.events"
    assert event.data.handover_id == "ho-2026-0042"
    # The agency wrote midnight Berlin time; the effective instant is 22:00 UTC.
    assert event.effective_time == datetime(2026, 7, 31, 22, 0, tzinfo=timezone.utc)
    assert event.recorded_time == datetime(2026, 7, 24, 11, 0, tzinfo=timezone.utc)
    assert event.envelope.time == "2026-08-01T00:00:00+02:00"


def test_payload_types() -> None:
    data = ok(example("IntegrationAgreementSigned")).data
    assert isinstance(data, IntegrationAgreementSigned)
    assert data.goals[0].due == date(2026, 12, 31)
    level = ok(example("LanguageLevelReached")).data
    assert isinstance(level, LanguageLevelReached)
    assert level.level == "B1" and level.per_skill is not None and level.per_skill["writing"] == "A2"


def test_models_are_frozen() -> None:
    event = ok(example("CaseClosed"))
    with pytest.raises(ValidationError):
        event.data.reason = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        event.envelope.subject = "P-OTHER"  # type: ignore[misc]


def test_optional_and_nullable_fields() -> None:
    event = example("LanguageLevelReached")
    del event["data"]["per_skill"]
    event["data"]["certificate"] = None
    ok(event)
    event = example("MeasureAssigned")
    event["data"]["ends"] = None
    ok(event)


def test_any_utc_offset_and_lowercase_separators_are_accepted() -> None:
    event = example("CaseClosed")
    event["time"] = "2028-06-01t02:00:00.25+02:00"
    event["recordedtime"] = "2028-06-02t09:00:00z"
    validated = ok(event)
    assert validated.effective_time == datetime(2028, 6, 1, 0, 0, 0, 250000, tzinfo=timezone.utc)
    assert validated.envelope.time == "2028-06-01t02:00:00.25+02:00"


def test_optional_envelope_attributes() -> None:
    event = example("GoalAchieved") | {
        "dataschema": "urn:kim:schema:de.kim.GoalAchieved.v1",
        "correlationid": "case-4711",
        "causationid": "int-integr-0001",
        "dataclassification": "confidential",
    }
    assert ok(event).envelope.correlationid == "case-4711"


# --- pass-through of unknown extensions ------------------------------------------------


def test_unknown_extension_attributes_round_trip() -> None:
    extensions = {"traceparent": "00-0af7651916cd43dd-b7ad6b7169203331-01", "priority": 3, "urgent": True}
    event = example("MeasureAssigned") | extensions
    validated = ok(event)
    assert validated.envelope.extensions == extensions
    out = orjson.loads(to_json_bytes(validated.envelope))
    assert out == event
    assert orjson.loads(validated.to_json_bytes()) == event
    assert ok(to_json_bytes(validated.envelope)).envelope == validated.envelope


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_serialisation_gives_back_what_was_published(path: Path) -> None:
    published = orjson.loads(path.read_bytes())
    assert orjson.loads(to_json_bytes(ok(published).envelope)) == published


def test_bad_extension_attributes() -> None:
    event = example("CaseClosed") | {"Given_Name": "x", "family name": "y", "nested": {"a": 1}, "ratio": 0.5}
    found = problems(event)
    assert found["$.Given_Name"].rule.startswith("unknown attribute; extension attribute names must be")
    assert found["$.Given_Name"].value is None
    assert "$['family name']" in found
    assert found["$.nested"].rule == "extension attribute must be a string, integer or boolean"
    assert found["$.ratio"].rule == "extension attribute must be a string, integer or boolean"
    assert len(found) == 4


def test_direct_construction_checks_extensions_too() -> None:
    with pytest.raises(ValidationError, match="extension attribute names"):
        CloudEvent.model_validate(example("CaseClosed") | {"given_name": "x"})


# --- problems ------------------------------------------------------------------------


def test_wrong_date() -> None:
    event = example("IntegrationAgreementSigned")
    event["data"]["goals"][0]["due"] = "31.12.2026"
    event["data"]["goals"][2]["due"] = "2027-02-30"
    found = problems(event)
    assert found["$.data.goals[0].due"] == ValidationProblem(
        "$.data.goals[0].due", "must be a date YYYY-MM-DD", "31.12.2026"
    )
    assert found["$.data.goals[2].due"].rule == "must be a valid calendar date YYYY-MM-DD"


@pytest.mark.parametrize("value", ["2026-05-20T00:00:00Z", 20260520, "2026-5-20", "20260520"])
def test_dates_are_strictly_yyyy_mm_dd(value: Any) -> None:
    event = example("PersonRegistered")
    event["data"]["arrival_date"] = value
    assert problems(event)["$.data.arrival_date"].rule == "must be a date YYYY-MM-DD"


def test_unknown_type() -> None:
    event = example("CaseClosed") | {"type": "de.kim.Foo.v1"}
    found = problems(event)
    assert list(found) == ["$.type"]
    rule = found["$.type"].rule
    assert rule.startswith("unknown event type 'de.kim.Foo.v1'; known types: ")
    assert "de.kim.CaseClosed.v1" in rule
    assert found["$.type"].value == "de.kim.Foo.v1"


def test_unknown_major_version_is_an_unknown_type() -> None:
    found = problems(example("CaseClosed") | {"type": "de.kim.CaseClosed.v2"})
    assert found["$.type"].rule.startswith("unknown event type 'de.kim.CaseClosed.v2'")


def test_missing_recordedtime() -> None:
    event = example("CaseClosed")
    del event["recordedtime"]
    assert problems(event) == {"$.recordedtime": ValidationProblem("$.recordedtime", "field required")}


def test_name_like_extra_field_in_data() -> None:
    event = example("PersonRegistered")
    event["data"]["family_name"] = "Al-Sayed"
    problem = problems(event)["$.data.family_name"]
    assert problem.rule == "extra field not allowed"
    # The offending value may be personal data: it is not echoed.
    assert problem.value is None
    assert "value" not in problem.to_dict()


def test_extra_field_in_empty_payload() -> None:
    event = example("NaturalisationCompleted")
    event["data"]["name"] = "x"
    assert problems(event)["$.data.name"].rule == "extra field not allowed"


def test_bad_subject() -> None:
    event = example("CaseClosed") | {"subject": "Fatima Al-Sayed"}
    problem = problems(event)["$.subject"]
    assert problem.rule.startswith("must be the person's pseudonym")
    event = example("CaseClosed") | {"subject": "x" * 65}
    assert "$.subject" in problems(event)


@pytest.mark.parametrize("field", ["time", "recordedtime"])
@pytest.mark.parametrize(
    "value", ["2028-06-01T00:00:00", "2028-06-01 00:00:00Z", "2028-06-01", "2028-02-30T00:00:00Z", 1780000000]
)
def test_naive_or_malformed_time(field: str, value: Any) -> None:
    problem = problems(example("CaseClosed") | {field: value})[f"$.{field}"]
    expected = "must be a string" if isinstance(value, int) else RFC3339_RULE
    assert problem.rule.startswith(expected)


@pytest.mark.parametrize(
    "source",
    [
        "urn:kim:jobcenter",
        "urn:kim:job_center:",
        "urn:kim:JOB_CENTER",
        "https://jobcenter.example",
        "urn:kim:job_center:nord horn",
    ],
)
def test_source_of_wrong_agency_format(source: str) -> None:
    problem = problems(example("HandoverAccepted") | {"source": source})["$.source"]
    assert problem.rule.startswith("must be urn:kim:<agency id> optionally followed by :<office>")
    assert "job_center" in problem.rule
    assert problem.value == source


def test_service_sources_are_well_formed() -> None:
    event = ok(example("CaseClosed") | {"source": "urn:kim:service:referral"})
    assert event.agency is None and event.envelope.service == "referral"
    assert event.topic == "kim.referral.events"


def test_envelope_constants() -> None:
    found = problems(example("CaseClosed") | {"specversion": "0.3", "datacontenttype": "text/xml"})
    assert found["$.specversion"].rule == "must be '1.0'"
    assert found["$.datacontenttype"].rule == "must be 'application/json'"


def test_missing_data_and_non_object_data() -> None:
    event = example("CaseClosed")
    del event["data"]
    assert problems(event)["$.data"].rule == "field required"
    event = example("CaseClosed") | {"data": ["regular_services_reached"]}
    assert problems(event)["$.data"].rule == "must be a JSON object"


def test_empty_id() -> None:
    assert problems(example("CaseClosed") | {"id": ""})["$.id"].rule == "must not be empty"


def test_enum_and_literal_rules_list_the_allowed_values() -> None:
    event = example("LanguageLevelReached")
    event["data"]["level"] = "B3"
    event["data"]["per_skill"]["speaking"] = "X1"
    found = problems(event)
    assert found["$.data.level"].rule == "must be one of 'A1', 'A2', 'B1', 'B2', 'C1' or 'C2'"
    assert found["$.data.per_skill.speaking"].rule == "must be one of 'A1', 'A2', 'B1', 'B2', 'C1' or 'C2'"


def test_map_keys_are_checked() -> None:
    event = example("ProfileCompleted")
    event["data"]["language_levels"]["German"] = "B1"
    assert problems(event)["$.data.language_levels.German"].rule.startswith(
        "key must be an ISO 639-1 language code"
    )


def test_country_and_language_codes() -> None:
    event = example("PersonRegistered")
    event["data"]["country_of_origin"] = "SYR"
    rule = problems(event)["$.data.country_of_origin"].rule
    assert rule.startswith("must be an ISO 3166-1 alpha-2 country code")
    event = example("LanguageLevelReached")
    event["data"]["language"] = "DE"
    assert problems(event)["$.data.language"].rule.startswith("must be an ISO 639-1 language code")


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("1991", "must be an integer"),
        (1991.0, "must be an integer"),
        (True, "must be an integer"),
        (1899, "must be >= 1900"),
        (date.today().year + 1, "must not be after the current year"),
    ],
)
def test_birth_year(value: Any, rule: str) -> None:
    event = example("PersonRegistered")
    event["data"]["birth_year"] = value
    assert problems(event)["$.data.birth_year"].rule == rule


def test_counts_are_not_negative_and_hours_are_numbers() -> None:
    event = example("ProfileCompleted")
    event["data"]["work_experience_years"] = -1
    assert problems(event)["$.data.work_experience_years"].rule == "must be >= 0"
    event = example("EmploymentStarted")
    event["data"]["hours_per_week"] = "39"
    assert problems(event)["$.data.hours_per_week"].rule == "must be a number"
    event["data"]["hours_per_week"] = 19.5
    ok(event)


def test_lists_of_agency_ids() -> None:
    event = example("ConsentRecorded")
    event["data"]["shared_with"] = ["job_center", "town_hall"]
    assert problems(event)["$.data.shared_with[1]"].rule.startswith("must be one of 'integration_center'")
    event["data"]["shared_with"] = []
    assert problems(event)["$.data.shared_with"].rule == "must have at least 1 item(s)"


def test_measure_may_not_end_before_it_starts() -> None:
    event = example("MeasureAssigned")
    event["data"]["ends"] = "2026-06-30"
    assert problems(event)["$.data.ends"].rule == "must not be before starts"


def test_goal_ids_are_unique_within_a_plan() -> None:
    event = example("IntegrationAgreementSigned")
    event["data"]["goals"][1]["goal_id"] = "g1"
    assert problems(event)["$.data.goals"].rule == "goal_id 'g1' appears more than once"


def test_all_problems_are_reported_at_once() -> None:
    event = example("IntegrationAgreementSigned") | {"subject": "no spaces", "time": "yesterday"}
    del event["recordedtime"]
    event["data"]["goals"][0]["due"] = "soon"
    event["data"]["given_name"] = "x"
    assert set(problems(event)) == {
        "$.subject",
        "$.time",
        "$.recordedtime",
        "$.data.goals[0].due",
        "$.data.given_name",
    }


@pytest.mark.parametrize(
    ("raw", "rule"),
    [
        (b"{not json", "must be valid UTF-8 JSON"),
        (b"[]", "must be a JSON object (one CloudEvent)"),
        ("42", "must be a JSON object (one CloudEvent)"),
    ],
)
def test_not_an_event(raw: Any, rule: str) -> None:
    result = validate(raw)
    assert isinstance(result, list) and result[0].path == "$" and result[0].rule.startswith(rule)


def test_long_values_are_not_echoed() -> None:
    event = example("CaseClosed")
    event["data"]["reason"] = "x" * 500
    assert problems(event)["$.data.reason"].value is None


def test_input_is_not_mutated() -> None:
    event = example("IntegrationAgreementSigned") | {"traceparent": "x"}
    before = copy.deepcopy(event)
    ok(event)
    assert event == before


# --- batch and decode --------------------------------------------------------------------


def test_batch_problems_name_the_event_index() -> None:
    batch = orjson.loads((EXAMPLES / "batch.cloudevents-batch.json").read_bytes())
    batch[1]["data"]["to_agency"] = "town_hall"
    batch.append("not an event")
    events, found = validate_batch(orjson.dumps(batch))
    assert [p.path for p in found] == ["$[1].data.to_agency", "$[2]"]
    assert [e.event_name for e in events] == ["CaseOpenedByAgency"]
    assert validate_batch(b"{}")[1][0].rule == "must be a JSON array of CloudEvents"
    assert validate_batch(b"[]") == ([], [])


def test_decode() -> None:
    raw = (EXAMPLES / "ResidenceTitleGranted.json").read_bytes()
    assert decode(raw).data.category == "protection"
    bad = orjson.dumps(orjson.loads(raw) | {"subject": "bad subject"})
    with pytest.raises(InvalidEvent) as caught:
        decode(bad)
    assert caught.value.problems[0].path == "$.subject"
    assert "$.subject: must be the person's pseudonym" in str(caught.value)


# --- derived events, as the services build them ----------------------------------------------


T0 = datetime(2026, 7, 2, 8, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "data",
    [
        HandoverExpected(
            handover_id="exp-1",
            area="benefits",
            from_agency="social_welfare_office",
            to_agency="job_center",
            to_legal_domain="SGB_II",
            deadline="2026-08-01T00:00:00+02:00",
            rule="R1",
        ),
        JurisdictionGapOpened(
            gap_id="gap-1", area="benefits", since=T0, last_agency="social_welfare_office", reason="legal_end"
        ),
        ReviewDue(area="case_management", held_since=T0, due=T0 + timedelta(days=730)),
    ],
    ids=lambda d: type(d).__name__,
)
def test_derived_events_round_trip(data: Any) -> None:
    envelope = build_event(
        data,
        id="ref-1",
        source="urn:kim:service:referral",
        subject="P-7Q2K9D4M1X",
        time=T0,
        recordedtime=T0,
        causationid="for-reside-0001",
    )
    assert envelope.time == "2026-07-02T08:00:00Z"
    event = decode(to_json_bytes(envelope))
    assert event.data == data
    assert event.envelope.causationid == "for-reside-0001"
    assert event.topic == "kim.referral.events"


def test_instants_in_data_are_utc_and_need_an_offset() -> None:
    expected = HandoverExpected(
        handover_id="exp-1",
        area="benefits",
        from_agency="social_welfare_office",
        to_agency="job_center",
        to_legal_domain="SGB_II",
        deadline="2026-08-01T00:00:00+02:00",
        rule="R1",
    )
    assert expected.deadline == datetime(2026, 7, 31, 22, 0, tzinfo=timezone.utc)
    assert expected.model_dump(mode="json")["deadline"] == "2026-07-31T22:00:00Z"
    with pytest.raises(ValidationError, match="RFC 3339"):
        ReviewDue(area="case_management", held_since=datetime(2026, 1, 1), due=T0)


def test_rfc3339_formatting() -> None:
    assert rfc3339(datetime(2026, 8, 1, tzinfo=timezone(timedelta(hours=2)))) == "2026-07-31T22:00:00Z"
    with pytest.raises(ValueError):
        rfc3339(datetime(2026, 8, 1))
