"""Validating incoming events: the one entry point every service uses.

`validate` checks an envelope and its payload against the contract and
reports every problem with a JSON path and a rule in plain words.
`authorisation_problems` checks what the tables of §1 and §3 say about who may
publish what; the gateway answers 403 for those, 422 for `validate`'s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Mapping, TypeVar

import orjson
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from contracts.catalogue import AREA_AGENCIES, Agency, Area, LegalDomain, can_hold, legal_domains_for
from contracts.envelope import CloudEvent, extension_problems
from contracts.envelope import to_json_bytes as _envelope_to_json_bytes
from contracts.events import (
    EVENT_TYPES,
    CaseClosedByAgency,
    CaseOpenedByAgency,
    EventData,
    HandedOverToAgency,
)
from contracts.fields import PATTERN_RULES
from contracts.upcasting import UPCASTERS, Upcaster, upcast

D = TypeVar("D", bound=EventData)

_MAX_VALUE_CHARS = 100
_IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KNOWN_TYPES = ", ".join(EVENT_TYPES)


@dataclass(frozen=True, slots=True)
class ValidationProblem:
    """One thing wrong with an event.

    `path` is a JSON path into the event (`$.data.goals[0].due`), `rule` says
    in plain words what the value must be, `value` is the offending value when
    it is short and scalar (never for fields that are not allowed at all,
    which may carry personal data).
    """

    path: str
    rule: str
    value: str | int | float | bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form for error responses; `value` only when there is one."""
        out: dict[str, Any] = {"path": self.path, "rule": self.rule}
        if self.value is not None:
            out["value"] = self.value
        return out


class InvalidEvent(ValueError):
    """Raised by `decode` for an event that breaks the contract."""

    def __init__(self, problems: list[ValidationProblem]) -> None:
        super().__init__("; ".join(f"{p.path}: {p.rule}" for p in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class ValidatedEvent(Generic[D]):
    """An event that passed `validate`: the envelope as published and its typed payload."""

    envelope: CloudEvent
    data: D

    @property
    def id(self) -> str:
        return self.envelope.id

    @property
    def source(self) -> str:
        return self.envelope.source

    @property
    def type(self) -> str:
        return self.envelope.type

    @property
    def subject(self) -> str:
        return self.envelope.subject

    @property
    def event_name(self) -> str:
        return self.data.event_name

    @property
    def agency(self) -> Agency | None:
        return self.envelope.agency

    @property
    def effective_time(self) -> datetime:
        return self.envelope.effective_time

    @property
    def recorded_time(self) -> datetime:
        return self.envelope.recorded_time

    @property
    def topic(self) -> str:
        return self.envelope.topic

    def to_json_bytes(self) -> bytes:
        return _envelope_to_json_bytes(self.envelope)


def validate(
    envelope: Mapping[str, Any] | bytes | bytearray | memoryview | str,
    *,
    upcasters: Mapping[tuple[str, int], Upcaster] = UPCASTERS,
) -> ValidatedEvent[Any] | list[ValidationProblem]:
    """Validate one structured-mode CloudEvent (JSON text or an already parsed object).

    Older major versions are first upcast (see `contracts.upcasting`), so a
    valid result is always of the current version. Returns the validated
    event, or every problem found (never an empty list).
    """
    raw = _parse(envelope)
    if isinstance(raw, ValidationProblem):
        return [raw]
    if not isinstance(raw, dict):
        return [ValidationProblem("$", "must be a JSON object (one CloudEvent)")]
    return _validate_object(raw, upcasters)


def validate_batch(
    batch: list[Any] | bytes | bytearray | memoryview | str,
    *,
    upcasters: Mapping[tuple[str, int], Upcaster] = UPCASTERS,
) -> tuple[list[ValidatedEvent[Any]], list[ValidationProblem]]:
    """Validate a CloudEvents JSON batch (an array of events).

    Returns the valid events and the problems of the others, whose paths start
    with the event's index (`$[3].data.area`). The batch is good when there
    are no problems.
    """
    raw = _parse(batch)
    if isinstance(raw, ValidationProblem):
        return [], [raw]
    if not isinstance(raw, list):
        return [], [ValidationProblem("$", "must be a JSON array of CloudEvents")]
    events: list[ValidatedEvent[Any]] = []
    problems: list[ValidationProblem] = []
    for index, item in enumerate(raw):
        result = (
            _validate_object(item, upcasters)
            if isinstance(item, dict)
            else [ValidationProblem("$", "must be a JSON object (one CloudEvent)")]
        )
        if isinstance(result, ValidatedEvent):
            events.append(result)
        else:
            problems.extend(
                ValidationProblem(f"$[{index}]{p.path[1:]}", p.rule, p.value) for p in result
            )
    return events, problems


def decode(value: bytes | bytearray | memoryview | str) -> ValidatedEvent[Any]:
    """Decode a Kafka record value into a validated event; raises `InvalidEvent`."""
    result = validate(value)
    if isinstance(result, list):
        raise InvalidEvent(result)
    return result


def authorisation_problems(event: ValidatedEvent[Any], agency: Agency | str) -> list[ValidationProblem]:
    """What forbids `agency` (the authenticated caller) from publishing `event`.

    Checks only what the tables say (§1, §3): that `source` names the caller,
    that the caller may emit the type, and for area events that the agencies
    involved can hold the area in the legal domain. Whether the event fits the
    person's history is not checked here.
    """
    caller = _AGENCIES.get(agency)  # a third of the time of `Agency(agency)`, once per event
    if caller is None:
        rule = f"the caller's agency '{agency}' is not an agency id"
        return [ValidationProblem("$.source", rule, str(agency))]
    problems: list[ValidationProblem] = []
    if event.envelope.agency != caller:
        rule = f"must name the caller's agency: urn:kim:{caller.value}[:<office>]"
        problems.append(ValidationProblem("$.source", rule, event.source))
    data = event.data
    if caller not in data.emitters:
        if data.service is not None:
            rule = f"{data.event_name} is a derived event, published only by the KIM {data.service} service"
        else:
            allowed = ", ".join(sorted(data.emitters))
            rule = f"agency {caller.value} may not emit {data.event_name}; emitted by: {allowed}"
        problems.append(ValidationProblem("$.type", rule, event.type))
        return problems
    holding: list[ValidationProblem | None] = []
    if isinstance(data, CaseOpenedByAgency):
        holding.append(
            _area_problem(caller, data.area, "$.data.area")
            or _domain_problem(caller, data.area, data.legal_domain, "$.data.legal_domain")
        )
    elif isinstance(data, HandedOverToAgency):
        holding.append(_area_problem(caller, data.area, "$.data.area"))
        holding.append(
            _area_problem(data.to_agency, data.area, "$.data.to_agency")
            or _domain_problem(data.to_agency, data.area, data.to_legal_domain, "$.data.to_legal_domain")
        )
    elif isinstance(data, CaseClosedByAgency):
        holding.append(_area_problem(caller, data.area, "$.data.area"))
    problems.extend(problem for problem in holding if problem is not None)
    return problems


_AGENCIES: dict[str, Agency] = {agency.value: agency for agency in Agency}


def _area_problem(agency: Agency, area: Area, path: str) -> ValidationProblem | None:
    if legal_domains_for(agency, area):
        return None
    holders = ", ".join(sorted(AREA_AGENCIES[area]))
    rule = f"agency {agency.value} cannot hold area {area.value}; agencies that can: {holders}"
    return ValidationProblem(path, rule, area.value)


def _domain_problem(
    agency: Agency, area: Area, legal_domain: LegalDomain, path: str
) -> ValidationProblem | None:
    if can_hold(agency, area, legal_domain):
        return None
    allowed = ", ".join(sorted(legal_domains_for(agency, area)))
    rule = f"agency {agency.value} can hold area {area.value} only under {allowed}"
    return ValidationProblem(path, rule, legal_domain.value)


def _parse(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview, str)):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            return ValidationProblem("$", f"must be valid UTF-8 JSON ({exc})")
    return value


def _validate_object(
    raw: dict[str, Any], upcasters: Mapping[tuple[str, int], Upcaster]
) -> ValidatedEvent[Any] | list[ValidationProblem]:
    try:
        raw = upcast(raw, upcasters)
    except Exception as exc:  # an upcaster meeting an old event it cannot read
        return [ValidationProblem("$", f"cannot be upgraded to the current version of its type ({exc})")]
    return _valid_event(raw) or _checked(raw)


def _valid_event(raw: dict[str, Any]) -> ValidatedEvent[Any] | None:
    """The event if it is valid, else None; the quick way for the many valid events,
    as it collects no problems (the envelope's own validator checks the extensions)."""
    type_ = raw.get("type")
    model = EVENT_TYPES.get(type_) if isinstance(type_, str) else None
    if model is None:
        return None
    try:
        return ValidatedEvent(CloudEvent.model_validate(raw), model.model_validate(raw["data"]))
    except ValidationError:
        return None


def _checked(raw: dict[str, Any]) -> ValidatedEvent[Any] | list[ValidationProblem]:
    """The event, or every problem it has."""
    problems: list[ValidationProblem] = []
    type_ = raw.get("type")
    model = EVENT_TYPES.get(type_) if isinstance(type_, str) else None
    type_unknown = isinstance(type_, str) and model is None
    if type_unknown:
        rule = f"unknown event type '{type_}'; known types: {_KNOWN_TYPES}"
        problems.append(ValidationProblem("$.type", rule, _short(type_)))

    # Checked here rather than left to the model, whose check runs only once
    # every field is valid, so that one answer names all problems.
    problems.extend(ValidationProblem(_json_path((name,)), rule) for name, rule in extension_problems(raw))

    envelope: CloudEvent | None = None
    try:
        envelope = CloudEvent.model_validate(raw)
    except ValidationError as exc:
        errors = [error for error in exc.errors() if error["type"] != "extension"]
        problems.extend(p for p in _problems(errors, ()) if not (type_unknown and p.path == "$.type"))

    data: EventData | None = None
    raw_data = raw.get("data")
    if model is not None and isinstance(raw_data, dict):
        try:
            data = model.model_validate(raw_data)
        except ValidationError as exc:
            problems.extend(_problems(exc.errors(), ("data",)))

    if problems or envelope is None or data is None:
        return problems
    return ValidatedEvent(envelope, data)


def _problems(errors: list[ErrorDetails], prefix: tuple[str, ...]) -> list[ValidationProblem]:
    problems = []
    for error in errors:
        loc: tuple[int | str, ...] = prefix + tuple(error["loc"])
        kind = error["type"]
        ctx = error.get("ctx") or {}
        rule = _rule(kind, error["msg"], ctx)
        if loc and loc[-1] == "[key]":
            loc, rule = loc[:-1], f"key {rule}"
        value = None if kind in ("missing", "extra_forbidden") else _short(error.get("input"))
        problems.append(ValidationProblem(_json_path(loc), rule, value))
    return problems


def _rule(kind: str, message: str, ctx: Mapping[str, Any]) -> str:
    """The plain-words rule for a pydantic error."""
    match kind:
        case "missing":
            return "field required"
        case "extra_forbidden":
            return "extra field not allowed"
        case "string_type":
            return "must be a string"
        case "int_type" | "int_from_float" | "int_parsing":
            return "must be an integer"
        case "float_type" | "float_parsing":
            return "must be a number"
        case "dict_type" | "model_type" | "model_attributes_type":
            return "must be a JSON object"
        case "list_type":
            return "must be a JSON array"
        case "literal_error" | "enum":
            expected = ctx["expected"]
            return f"must be one of {expected}" if " or " in expected else f"must be {expected}"
        case "string_pattern_mismatch":
            return PATTERN_RULES.get(ctx["pattern"], f"must match the pattern {ctx['pattern']}")
        case "string_too_short":
            if ctx["min_length"] == 1:
                return "must not be empty"
            return f"must be at least {ctx['min_length']} characters"
        case "string_too_long":
            return f"must be at most {ctx['max_length']} characters"
        case "too_short":
            return f"must have at least {ctx['min_length']} item(s)"
        case "too_long":
            return f"must have at most {ctx['max_length']} item(s)"
        case "greater_than_equal":
            return f"must be >= {_number(ctx['ge'])}"
        case "less_than_equal":
            return f"must be <= {_number(ctx['le'])}"
        case "greater_than":
            return f"must be > {_number(ctx['gt'])}"
        case "less_than":
            return f"must be < {_number(ctx['lt'])}"
    # Our own validators already word their messages as rules.
    return message[:1].lower() + message[1:]


def _number(bound: Any) -> Any:
    # Float fields report their bounds as floats; "must be >= 0" reads better than ">= 0.0".
    return int(bound) if isinstance(bound, float) and bound.is_integer() else bound


def _json_path(loc: tuple[int | str, ...]) -> str:
    parts = ["$"]
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif _IDENTIFIER_RE.fullmatch(item):
            parts.append(f".{item}")
        else:
            escaped = item.replace("\\", "\\\\").replace("'", "\\'")
            parts.append(f"['{escaped}']")
    return "".join(parts)


def _short(value: Any) -> str | int | float | bool | None:
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str) and len(value) <= _MAX_VALUE_CHARS:
        return value
    return None
