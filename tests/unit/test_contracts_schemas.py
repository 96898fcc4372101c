"""Generated JSON Schemas and AsyncAPI document: current, and agreeing with the models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from jsonschema import Draft202012Validator

from contracts import CATALOGUE, DERIVED, Agency, agency_topic
from contracts.generate import SCHEMA_DIR, main, render, stale_files, write

EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "examples"
EXAMPLE_FILES = sorted(p for p in EXAMPLES.glob("*.json") if p.name != "batch.cloudevents-batch.json")


def schema_for(name: str) -> dict[str, Any]:
    return orjson.loads((SCHEMA_DIR / f"{name}.v1.json").read_bytes())


def example(name: str) -> dict[str, Any]:
    return orjson.loads((EXAMPLES / f"{name}.json").read_bytes())


@pytest.fixture(scope="module")
def asyncapi() -> dict[str, Any]:
    return yaml.safe_load((SCHEMA_DIR / "asyncapi.yaml").read_bytes())


@pytest.fixture(scope="module")
def generated() -> dict[str, bytes]:
    return render()


SCHEMA_FILES = sorted(f"{m.event_name}.v1.json" for m in (*CATALOGUE, *DERIVED)) + ["envelope.json"]


# --- the committed files are current ---------------------------------------------------------


def test_committed_files_are_not_stale(generated: dict[str, bytes]) -> None:
    committed = {path.name: path.read_bytes() for path in SCHEMA_DIR.iterdir() if path.is_file()}
    assert committed == generated, "run: python -m contracts.generate"


def test_generation_is_deterministic(generated: dict[str, bytes]) -> None:
    assert render() == generated


def test_a_file_per_type(generated: dict[str, bytes]) -> None:
    assert set(generated) == set(SCHEMA_FILES) | {"asyncapi.yaml"}


def test_check_names_stale_files(tmp_path: Path) -> None:
    write(tmp_path)
    assert stale_files(tmp_path) == []
    (tmp_path / "CaseClosed.v1.json").write_text("{}")
    (tmp_path / "Obsolete.v1.json").write_text("{}")
    (tmp_path / "asyncapi.yaml").unlink()
    assert stale_files(tmp_path) == ["CaseClosed.v1.json", "Obsolete.v1.json", "asyncapi.yaml"]
    write(tmp_path)
    assert stale_files(tmp_path) == []


def test_check_exit_status_for_the_committed_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--check"]) == 0
    assert capsys.readouterr().err == ""


# --- JSON Schemas ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_generated_schemas_are_valid(generated: dict[str, bytes], name: str) -> None:
    schema = orjson.loads(generated[name])
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].startswith("urn:kim:schema:")
    assert schema["title"] and schema["description"]
    assert "$defs" not in schema


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_every_example_matches_its_schema_and_the_envelope_schema(path: Path) -> None:
    instance = orjson.loads(path.read_bytes())
    Draft202012Validator(schema_for(path.stem)).validate(instance)
    Draft202012Validator(orjson.loads((SCHEMA_DIR / "envelope.json").read_bytes())).validate(instance)


def test_batch_items_match_their_schemas() -> None:
    for item in orjson.loads((EXAMPLES / "batch.cloudevents-batch.json").read_bytes()):
        name = item["type"].split(".")[2]
        Draft202012Validator(schema_for(name)).validate(item)


def test_example_does_not_match_another_types_schema() -> None:
    assert not Draft202012Validator(schema_for("CaseClosed")).is_valid(example("CaseClosedByAgency"))


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("CaseClosed", {"time": "2028-06-01T00:00:00"}),
        ("CaseClosed", {"subject": "Fatima Al-Sayed"}),
        ("CaseClosed", {"source": "urn:kim:jobcenter"}),
        ("CaseClosed", {"given_name": "Fatima"}),
        ("CaseClosed", {"trace": {"nested": True}}),
        (
            "PersonRegistered",
            {
                "data": {
                    "municipality": "Nordhorn",
                    "birth_year": 1991,
                    "arrival_date": "20.05.2026",
                    "country_of_origin": "SY",
                }
            },
        ),
        ("NaturalisationCompleted", {"data": {"name": "x"}}),
    ],
)
def test_schemas_reject_what_validate_rejects(name: str, change: dict[str, Any]) -> None:
    assert not Draft202012Validator(schema_for(name)).is_valid(example(name) | change)


def test_schema_accepts_unknown_extensions() -> None:
    instance = example("CaseClosed") | {"traceparent": "00-ab-cd-01", "priority": 3}
    Draft202012Validator(schema_for("CaseClosed")).validate(instance)


def test_recordedtime_is_required_in_the_schema() -> None:
    assert "recordedtime" in schema_for("GoalAchieved")["required"]


# --- AsyncAPI ----------------------------------------------------------------------------------


def test_asyncapi_version_and_server(asyncapi: dict[str, Any]) -> None:
    assert asyncapi["asyncapi"] == "3.0.0"
    assert asyncapi["servers"]["local"]["host"] == "localhost:9092"
    assert asyncapi["servers"]["local"]["protocol"] == "kafka"


def test_asyncapi_has_a_channel_per_topic(asyncapi: dict[str, Any]) -> None:
    topics = {agency_topic(agency) for agency in Agency} | {"kim.referral.events"}
    assert set(asyncapi["channels"]) == topics
    assert all(asyncapi["channels"][topic]["address"] == topic for topic in topics)


def test_agency_channels_carry_what_the_agency_may_emit(asyncapi: dict[str, Any]) -> None:
    for agency in Agency:
        channel = asyncapi["channels"][agency_topic(agency)]
        assert set(channel["messages"]) == {m.event_name for m in CATALOGUE if agency in m.emitters}
    assert set(asyncapi["channels"]["kim.foreigners_office.events"]["messages"]) == {
        "ResidenceTitleGranted",
        "NaturalisationCompleted",
    }
    assert set(asyncapi["channels"]["kim.referral.events"]["messages"]) == {m.event_name for m in DERIVED}


def test_operations_reference_their_channel_messages(asyncapi: dict[str, Any]) -> None:
    for operation in asyncapi["operations"].values():
        channel_ref = operation["channel"]["$ref"]
        channel = asyncapi["channels"][channel_ref.removeprefix("#/channels/")]
        for message in operation["messages"]:
            assert message["$ref"].startswith(channel_ref + "/messages/")
            assert message["$ref"].rsplit("/", 1)[1] in channel["messages"]
    actions = {(op["action"], op["channel"]["$ref"]) for op in asyncapi["operations"].values()}
    assert ("send", "#/channels/kim.job_center.events") in actions
    assert ("receive", "#/channels/kim.referral.events") in actions


def resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_each_message_payload_validates_its_example(asyncapi: dict[str, Any], path: Path) -> None:
    message = asyncapi["components"]["messages"][path.stem]
    assert message["contentType"] == "application/cloudevents+json"
    assert message["bindings"]["kafka"]["key"]["type"] == "string"
    payload = resolve(asyncapi, message["payload"]["$ref"])
    Draft202012Validator.check_schema(payload)
    Draft202012Validator(payload).validate(orjson.loads(path.read_bytes()))
