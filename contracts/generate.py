"""Generate the published schemas from the models.

    python -m contracts.generate           # (re)write contracts/schemas/
    python -m contracts.generate --check   # exit 1 and name the stale files

Writes one JSON Schema (draft 2020-12) per event type, `<EventName>.v<major>.json`,
describing the whole envelope with that type's data, `envelope.json` for any
event, and `asyncapi.yaml` (AsyncAPI 3.0.0) for the Kafka topics. Output is
deterministic, so the check can compare bytes.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any, Iterable

import orjson
import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema

from contracts.catalogue import Agency, agency_topic, service_topic
from contracts.envelope import CloudEvent
from contracts.events import CATALOGUE, DERIVED, EventData
from contracts.fields import SUBJECT_PATTERN

SCHEMA_DIR = Path(__file__).parent / "schemas"
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ID_PREFIX = "urn:kim:schema:"
ASYNCAPI_FILE = "asyncapi.yaml"
ENVELOPE_FILE = "envelope.json"


class _SchemaGenerator(GenerateJsonSchema):
    # Titles pydantic derives from field names ("Birth Year") add nothing to the descriptions.
    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def _model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema with every `$defs` reference inlined.

    Inlined schemas stay valid when embedded in the AsyncAPI document, where
    `#/$defs/…` would point to the wrong place.
    """
    schema = model.model_json_schema(schema_generator=_SchemaGenerator)
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                siblings = {k: v for k, v in node.items() if k != "$ref"}
                return inline({**copy.deepcopy(defs[ref.removeprefix("#/$defs/")]), **siblings})
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    return inline(schema)


def _summary(model: type[BaseModel]) -> str:
    return (model.__doc__ or "").strip().split("\n\n")[0]


def _publisher(model: type[EventData]) -> str:
    if model.service is not None:
        return f"Published by the KIM {model.service} service on {service_topic(model.service)}."
    return "Emitted by: " + ", ".join(a.value for a in Agency if a in model.emitters) + "."


def envelope_schema() -> dict[str, Any]:
    """JSON Schema of any KIM event (the envelope; `data` any object)."""
    schema = _model_schema(CloudEvent)
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": ID_PREFIX + "envelope",
        **schema,
        "title": "KIM event envelope",
        "description": (
            "CloudEvents 1.0 in JSON structured mode as every KIM event carries it. "
            "Extension attributes not named here are kept and passed through."
        ),
    }


def event_schema(model: type[EventData]) -> dict[str, Any]:
    """JSON Schema of a whole event of `model`'s type: envelope plus typed data."""
    schema = _model_schema(CloudEvent)
    schema["properties"]["type"] = {"type": "string", "const": model.event_type}
    schema["properties"]["data"] = _model_schema(model)
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": ID_PREFIX + model.event_type,
        **schema,
        "title": model.event_type,
        "description": (
            f"{_summary(model)} {_publisher(model)} CloudEvents 1.0 envelope with the event's data."
        ),
    }


def _file_name(model: type[EventData]) -> str:
    return f"{model.event_name}.v{model.version}.json"


def _message(model: type[EventData]) -> dict[str, Any]:
    return {
        "name": model.event_name,
        "title": model.event_type,
        "summary": _summary(model),
        "description": _publisher(model),
        "contentType": "application/cloudevents+json",
        "payload": {"$ref": f"#/components/schemas/{model.event_name}.v{model.version}"},
        "correlationId": {"location": "$message.payload#/correlationid"},
        "bindings": {
            "kafka": {
                "bindingVersion": "0.5.0",
                "key": {
                    "type": "string",
                    "pattern": SUBJECT_PATTERN,
                    "description": "The event's subject: the person's pseudonym.",
                },
            }
        },
    }


def _channel_and_operations(
    topic: str, producer: str, models: Iterable[type[EventData]]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    names = [model.event_name for model in models]
    channel = {
        "address": topic,
        "title": topic,
        "description": f"Events {producer} publishes. Key: the subject; value: the envelope as UTF-8 JSON.",
        "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in names},
    }
    messages = [{"$ref": f"#/channels/{topic}/messages/{name}"} for name in names]
    operations = {
        f"send.{topic}": {
            "action": "send",
            "channel": {"$ref": f"#/channels/{topic}"},
            "summary": f"Publishing by {producer}.",
            "messages": messages,
        },
        f"receive.{topic}": {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{topic}"},
            "summary": "KIM services consume the topic; they tolerate duplicates and late events.",
            "messages": copy.deepcopy(messages),
        },
    }
    return channel, operations


def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of the KIM topics."""
    models = (*CATALOGUE, *DERIVED)
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    producers: list[tuple[str, str, list[type[EventData]]]] = [
        (agency_topic(agency), f"the agency {agency.value}", [m for m in CATALOGUE if agency in m.emitters])
        for agency in Agency
    ]
    services = sorted({m.service for m in DERIVED if m.service is not None})
    producers += [
        (service_topic(service), f"the KIM {service} service", [m for m in DERIVED if m.service == service])
        for service in services
    ]
    for topic, producer, produced in producers:
        channels[topic], ops = _channel_and_operations(topic, producer, produced)
        operations.update(ops)
    schemas = {}
    for model in models:
        schema = event_schema(model)
        del schema["$schema"], schema["$id"]
        schemas[f"{model.event_name}.v{model.version}"] = schema
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "KIM event exchange",
            "version": "1.0.0",
            "description": (
                "Agencies of a district publish CloudEvents about persons in KIM case management, "
                "each on its own topic kim.<agency id>.events; KIM services publish derived events "
                "on kim.<service>.events. All topics have the same partition count and use the "
                "subject as key, so one person's events share a partition number across topics."
            ),
        },
        "defaultContentType": "application/cloudevents+json",
        "servers": {
            "local": {
                "host": "localhost:9092",
                "protocol": "kafka",
                "description": "The broker `kim up` starts; KIM_KAFKA_BOOTSTRAP names another.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": {model.event_name: _message(model) for model in models},
            "schemas": schemas,
        },
    }


class _NoAliasDumper(yaml.SafeDumper):
    # Anchors and aliases would make the document harder to read for no gain.
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _json(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def render() -> dict[str, bytes]:
    """Every generated file by name, as bytes."""
    files = {_file_name(model): _json(event_schema(model)) for model in (*CATALOGUE, *DERIVED)}
    files[ENVELOPE_FILE] = _json(envelope_schema())
    files[ASYNCAPI_FILE] = yaml.dump(
        asyncapi(), Dumper=_NoAliasDumper, sort_keys=True, allow_unicode=True, width=100
    ).encode()
    return files


def stale_files(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of files in `directory` that differ from, lack or are not in the generated set."""
    expected = render()
    present = {p.name for p in directory.glob("*") if p.is_file()} if directory.is_dir() else set()
    stale = [
        name
        for name, content in expected.items()
        if name not in present or (directory / name).read_bytes() != content
    ]
    stale.extend(present - expected.keys())
    return sorted(stale)


def write(directory: Path = SCHEMA_DIR) -> None:
    """Write the generated files and remove files the generator no longer makes."""
    directory.mkdir(parents=True, exist_ok=True)
    expected = render()
    for name, content in expected.items():
        path = directory / name
        if not path.exists() or path.read_bytes() != content:
            path.write_bytes(content)
    for path in directory.glob("*"):
        if path.is_file() and path.name not in expected:
            path.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m contracts.generate", description="Generate the published schemas from the models."
    )
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if any file is stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for name in stale:
            print(f"stale: {SCHEMA_DIR / name}", file=sys.stderr)
        if stale:
            print("run: python -m contracts.generate", file=sys.stderr)
        return 1 if stale else 0
    write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
