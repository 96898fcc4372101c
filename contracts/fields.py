"""Field types shared by the envelope and the event payloads.

Validators raise errors whose message is already the rule an integrator reads
(see `contracts.validation`), so the wording here is part of the interface.
Strings for dates and instants are checked with explicit patterns because
Python's `fromisoformat` also accepts forms (week dates, naive times) that the
interface does not.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timezone
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, Strict, StringConstraints, WithJsonSchema
from pydantic_core import PydanticCustomError

from contracts.catalogue import Agency

DATE_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
SUBJECT_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
COUNTRY_PATTERN = r"^[A-Z]{2}$"
LANGUAGE_PATTERN = r"^[a-z]{2}$"
SERVICE_PATTERN = r"[a-z][a-z0-9_-]*"
SOURCE_PATTERN = (
    r"^urn:kim:(?:(" + "|".join(a.value for a in Agency) + r")|service:(" + SERVICE_PATTERN + r"))"
    r"(?::([A-Za-z0-9_.-]+))?$"
)
TYPE_PATTERN = r"^de\.kim\.([A-Za-z][A-Za-z0-9]*)\.v([1-9][0-9]*)$"
EXTENSION_NAME_PATTERN = r"^[a-z0-9]+$"

_DATE_RE = re.compile(DATE_PATTERN)
_RFC3339_RE = re.compile(RFC3339_PATTERN)
SOURCE_RE = re.compile(SOURCE_PATTERN)
TYPE_RE = re.compile(TYPE_PATTERN)

DATE_RULE = "must be a date YYYY-MM-DD"
RFC3339_RULE = (
    "must be an RFC 3339 date-time with a UTC offset, e.g. 2026-08-01T00:00:00Z "
    "or 2026-08-01T00:00:00+02:00"
)

PATTERN_RULES: dict[str, str] = {
    SUBJECT_PATTERN: "must be the person's pseudonym: 1-64 characters of A-Z, a-z, 0-9, '_' and '-'",
    COUNTRY_PATTERN: "must be an ISO 3166-1 alpha-2 country code of two uppercase letters, e.g. SY",
    LANGUAGE_PATTERN: "must be an ISO 639-1 language code of two lowercase letters, e.g. de",
    SOURCE_PATTERN: (
        "must be urn:kim:<agency id> optionally followed by :<office>, e.g. "
        "urn:kim:job_center:nordhorn; agency ids: " + ", ".join(a.value for a in Agency)
        + " (KIM services use urn:kim:service:<service>)"
    ),
    RFC3339_PATTERN: RFC3339_RULE,
    TYPE_PATTERN: "must be de.kim.<EventName>.v<major>, e.g. de.kim.LanguageLevelReached.v1",
}
"""Plain-words rule for each pattern, keyed by the pattern as pydantic reports it."""


def rfc3339(instant: datetime) -> str:
    """Format an aware datetime as RFC 3339 in UTC with `Z`, as the interface answers times."""
    if instant.tzinfo is None:
        raise ValueError("naive datetime: an instant needs a UTC offset")
    if instant.tzinfo is not timezone.utc:
        instant = instant.astimezone(timezone.utc)
    return instant.isoformat().removesuffix("+00:00") + "Z"


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 string (already known to match the pattern) into an aware UTC datetime."""
    parsed = _parse_with_offset(text)
    # Most instants come with `Z`, parsed as UTC already: computing persons parses hundreds of thousands.
    return parsed if parsed.tzinfo is timezone.utc else parsed.astimezone(timezone.utc)


def _parse_with_offset(text: str) -> datetime:
    """`text` as an aware datetime in its own offset; ValueError for impossible calendar values."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:  # fromisoformat rejects the lowercase `z` RFC 3339 allows
        return datetime.fromisoformat(text.upper())


def _check_timestamp(value: str) -> str:
    # The pattern has been checked already; this catches impossible calendar values. Parsing alone
    # (0.15 us) tells, without the conversion to UTC (0.6 us in all) that only a reader needs.
    try:
        _parse_with_offset(value)
    except ValueError:
        raise PydanticCustomError("rfc3339", RFC3339_RULE) from None
    return value


def _to_instant(value: Any) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            return value.astimezone(timezone.utc)
    elif isinstance(value, str) and _RFC3339_RE.fullmatch(value):
        try:
            return parse_rfc3339(value)
        except ValueError:
            pass
    raise PydanticCustomError("rfc3339", RFC3339_RULE)


def _to_date(value: Any) -> date:
    # datetime is a subclass of date but carries a time the interface has no place for.
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _DATE_RE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise PydanticCustomError("date_invalid", "must be a valid calendar date YYYY-MM-DD") from None
    raise PydanticCustomError("date_format", DATE_RULE)


def _not_in_future(year: int) -> int:
    if year > date.today().year:
        raise PydanticCustomError("year_future", "must not be after the current year")
    return year


Timestamp = Annotated[
    str,
    StringConstraints(pattern=RFC3339_PATTERN),
    AfterValidator(_check_timestamp),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": RFC3339_PATTERN}),
]
"""An RFC 3339 instant kept as the exact string the producer sent."""

Instant = Annotated[
    datetime,
    BeforeValidator(_to_instant),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": RFC3339_PATTERN}),
]
"""An RFC 3339 instant in event data, held as an aware datetime in UTC."""

Date = Annotated[
    date,
    BeforeValidator(_to_date),
    WithJsonSchema({"type": "string", "format": "date", "pattern": DATE_PATTERN}),
]
"""A calendar date, written YYYY-MM-DD and nothing else."""

Subject = Annotated[str, StringConstraints(pattern=SUBJECT_PATTERN)]
CountryCode = Annotated[str, StringConstraints(pattern=COUNTRY_PATTERN)]
LanguageCode = Annotated[str, StringConstraints(pattern=LANGUAGE_PATTERN)]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=128)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=500)]
Count = Annotated[int, Strict(), Field(ge=0)]
BirthYear = Annotated[int, Strict(), Field(ge=1900), AfterValidator(_not_in_future)]
