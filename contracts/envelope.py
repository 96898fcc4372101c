"""The CloudEvents 1.0 envelope (interfaces.md §2), JSON structured mode."""

from __future__ import annotations

import re
from datetime import datetime
from functools import cached_property, lru_cache
from typing import Annotated, Any, Iterator, Literal, Mapping

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

from contracts.catalogue import Agency, agency_topic, service_topic
from contracts.events import EventData
from contracts.fields import (
    EXTENSION_NAME_PATTERN,
    SOURCE_PATTERN,
    SOURCE_RE,
    TYPE_PATTERN,
    TYPE_RE,
    Subject,
    Timestamp,
    parse_rfc3339,
    rfc3339,
)

EventId = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Source = Annotated[str, StringConstraints(pattern=SOURCE_PATTERN)]
EventTypeName = Annotated[str, StringConstraints(pattern=TYPE_PATTERN)]
NonEmpty = Annotated[str, StringConstraints(min_length=1, max_length=2048)]

_EXTENSION_NAME_RE = re.compile(EXTENSION_NAME_PATTERN)

EXTENSION_VALUE_TYPES = (str, int, bool)
"""JSON types a CloudEvents extension attribute may have (String, Integer, Boolean)."""


def extension_problems(attributes: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(name, rule) for each extension attribute CloudEvents does not allow.

    `attributes` may hold the named context attributes too; they are skipped.
    """
    for name, value in attributes.items():
        if name in CONTEXT_ATTRIBUTES:
            continue
        if not _EXTENSION_NAME_RE.fullmatch(name):
            yield name, "unknown attribute; extension attribute names must be lowercase letters and digits"
        elif not isinstance(value, EXTENSION_VALUE_TYPES):
            yield name, "extension attribute must be a string, integer or boolean"


def _envelope_json_schema(schema: dict[str, Any]) -> None:
    # Unknown extensions pass through, but only with names and value types that
    # CloudEvents allows for attributes; `extension_problems` checks the same.
    schema["propertyNames"] = {"pattern": EXTENSION_NAME_PATTERN}
    schema["additionalProperties"] = {"type": ["string", "integer", "boolean"]}


class CloudEvent(BaseModel):
    """A KIM event as published: CloudEvents 1.0 envelope with its `data` as sent.

    `data` stays the JSON object the producer sent, and unknown extension
    attributes are kept, so that serialising the envelope gives back what the
    agency published; the typed payload is `ValidatedEvent.data`.
    `time` and `recordedtime` keep the producer's strings (any UTC offset);
    `effective_time` and `recorded_time` are the same instants in UTC.
    """

    model_config = ConfigDict(frozen=True, extra="allow", json_schema_extra=_envelope_json_schema)

    specversion: Literal["1.0"]
    id: EventId = Field(description="Unique per producer; (source, id) is the deduplication key, for ever.")
    source: Source = Field(description="urn:kim:<agency id>, optionally followed by :<office>.")
    type: EventTypeName = Field(description="de.kim.<EventName>.v<major>.")
    subject: Subject = Field(description="The person's pseudonym; never a name.")
    time: Timestamp = Field(description="When the fact took effect (effective time), RFC 3339 with offset.")
    recordedtime: Timestamp = Field(description="When the producer recorded the fact, RFC 3339 with offset.")
    datacontenttype: Literal["application/json"]
    data: dict[str, Any]
    dataschema: NonEmpty | None = None
    correlationid: EventId | None = None
    causationid: EventId | None = None
    dataclassification: NonEmpty | None = Field(
        default=None, description="CloudEvents data-classification extension, e.g. confidential."
    )

    @model_validator(mode="after")
    def _check_extensions(self) -> CloudEvent:
        if self.__pydantic_extra__:  # most events have no extension attributes
            for name, rule in extension_problems(self.__pydantic_extra__):
                raise PydanticCustomError("extension", rule, {"name": name})
        return self

    @cached_property
    def effective_time(self) -> datetime:
        """`time` as an aware UTC datetime: when the fact took effect."""
        return parse_rfc3339(self.time)

    @cached_property
    def recorded_time(self) -> datetime:
        """`recordedtime` as an aware UTC datetime: when the producer recorded the fact."""
        return parse_rfc3339(self.recordedtime)

    @property
    def agency(self) -> Agency | None:
        """The agency named in `source`; None for events of KIM services."""
        return _source_parts(self.source)[0]

    @property
    def service(self) -> str | None:
        """The KIM service named in `source` (`urn:kim:service:<service>`), else None."""
        return _source_parts(self.source)[1]

    @property
    def office(self) -> str | None:
        """The office suffix of `source`, e.g. `nordhorn`, if any."""
        return _source_parts(self.source)[2]

    @property
    def topic(self) -> str:
        """The Kafka topic this event belongs on: its producer's own topic (§5)."""
        return _source_parts(self.source)[3]

    @property
    def event_name(self) -> str:
        """EventName part of `type`, e.g. `LanguageLevelReached`."""
        return self._type_parts[0]

    @property
    def version(self) -> int:
        """Major version part of `type`."""
        return self._type_parts[1]

    @cached_property
    def _type_parts(self) -> tuple[str, int]:
        match = TYPE_RE.fullmatch(self.type)
        assert match is not None  # the field's pattern guarantees it
        return match.group(1), int(match.group(2))

    @property
    def extensions(self) -> dict[str, str | int | bool]:
        """Extension attributes the interface does not name, as received."""
        return dict(self.__pydantic_extra__ or {})


@lru_cache(maxsize=4096)  # a district has few sources, and each has many events
def _source_parts(source: str) -> tuple[Agency | None, str | None, str | None, str]:
    """(agency, service, office, topic) of a valid `source`."""
    match = SOURCE_RE.fullmatch(source)
    assert match is not None  # the field's pattern guarantees it
    agency, service, office = match.groups()
    return ((Agency(agency) if agency else None), service, office,
            agency_topic(agency) if agency else service_topic(service or ""))


CONTEXT_ATTRIBUTES = frozenset(CloudEvent.model_fields)
"""Attributes the interface names; anything else is an extension attribute."""


def build_event(
    data: EventData,
    *,
    id: str,
    source: str,
    subject: str,
    time: datetime,
    recordedtime: datetime,
    **attributes: str | int | bool,
) -> CloudEvent:
    """Wrap a payload model in an envelope, e.g. for a service publishing a derived event.

    Times are written as RFC 3339 UTC with `Z`; `attributes` are the optional
    attributes (`correlationid`, `causationid`, …) and extensions.
    """
    return CloudEvent(
        specversion="1.0",
        id=id,
        source=source,
        type=data.event_type,
        subject=subject,
        time=rfc3339(time),
        recordedtime=rfc3339(recordedtime),
        datacontenttype="application/json",
        data=data.model_dump(mode="json"),
        **attributes,
    )


def to_json_bytes(envelope: CloudEvent) -> bytes:
    """Serialise an envelope as UTF-8 JSON (the Kafka value), as it was received.

    Attributes the producer left out stay out; extension attributes and `data`
    are written as received.
    """
    return orjson.dumps(envelope.model_dump(exclude_unset=True))
