"""The upcasting hook, exercised with a test-local registry."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson

from contracts import UPCASTERS, ValidatedEvent, upcast, validate
from contracts.events import LanguageLevelReached

EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "examples"


def legacy_event() -> dict[str, Any]:
    """A pretend retired type whose successor is LanguageLevelReached.v1."""
    raw = orjson.loads((EXAMPLES / "LanguageLevelReached.json").read_bytes())
    raw["type"] = "de.kim.LanguageTestPassed.v1"
    raw["data"] = {"lang": "de", "cefr": "B1"}
    return raw


def language_test_v1_to_level_reached(envelope: dict[str, Any]) -> dict[str, Any]:
    data = envelope["data"]
    return {
        **envelope,
        "type": "de.kim.LanguageLevelReached.v1",
        "data": {"language": data["lang"], "level": data["cefr"], "certificate": None},
    }

REGISTRY = {("LanguageTestPassed", 1): language_test_v1_to_level_reached}


def test_production_registry_is_empty_while_all_types_are_v1() -> None:
    assert UPCASTERS == {}


def test_validate_applies_upcasters_before_the_models() -> None:
    raw = legacy_event()
    before = copy.deepcopy(raw)
    event = validate(raw, upcasters=REGISTRY)
    assert isinstance(event, ValidatedEvent)
    assert event.type == "de.kim.LanguageLevelReached.v1"
    assert event.data == LanguageLevelReached(language="de", level="B1", certificate=None)
    assert raw == before


def test_without_the_upcaster_the_old_type_is_unknown() -> None:
    result = validate(legacy_event())
    assert isinstance(result, list) and result[0].path == "$.type"


def test_upcasters_chain() -> None:
    raw = legacy_event() | {"type": "de.kim.LanguageTestPassed.v0x"}
    assert upcast(raw, REGISTRY) is raw  # not a recognisable type: untouched
    older = legacy_event() | {"type": "de.kim.LanguageTestPassed.v2"}
    chain = {
        ("LanguageTestPassed", 2): lambda e: {**e, "type": "de.kim.LanguageTestPassed.v1"},
        **REGISTRY,
    }
    assert upcast(older, chain)["type"] == "de.kim.LanguageLevelReached.v1"


def test_a_cycle_of_upcasters_ends() -> None:
    cycle = {
        ("Ping", 1): lambda e: {**e, "type": "de.kim.Pong.v1"},
        ("Pong", 1): lambda e: {**e, "type": "de.kim.Ping.v1"},
    }
    assert upcast({"type": "de.kim.Ping.v1"}, cycle)["type"] == "de.kim.Ping.v1"


def test_an_upcaster_failing_on_a_malformed_old_event_is_a_problem() -> None:
    raw = legacy_event()
    del raw["data"]["cefr"]
    result = validate(raw, upcasters=REGISTRY)
    assert isinstance(result, list)
    assert result[0].path == "$"
    assert result[0].rule.startswith("cannot be upgraded to the current version of its type")
