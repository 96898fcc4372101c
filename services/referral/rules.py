"""District configuration of the jurisdiction-change rules R1-R3 (interfaces.md §4).

A district names a TOML file in `KIM_RULES_FILE`; every key it leaves out keeps
the default below, and no file at all means all defaults. Anything the file says
that this module does not understand is an error naming the rule and the key, so
a typo cannot silently switch a rule to its default.
"""

from __future__ import annotations

import calendar
import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

BERLIN = ZoneInfo("Europe/Berlin")

CEFR_LEVELS: tuple[str, ...] = ("A1", "A2", "B1", "B2", "C1", "C2")
"""CEFR levels in ascending order, so that the index compares levels."""

RESIDENCE_CATEGORIES = frozenset(
    {"protection", "humanitarian", "employment", "family", "opportunity", "toleration", "other"}
)

# Who can take `benefits` after AsylbLG (§1); R1's target must be one of these.
_R1_TARGETS = frozenset({("job_center", "SGB_II"), ("social_welfare_office", "SGB_XII"),
                         ("employment_agency", "SGB_III")})

_DURATION_RE = re.compile(
    r"P(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:[.,]\d{1,6})?)S)?)?"
)


class RulesConfigError(ValueError):
    """The rules file is unreadable or says something this service cannot apply."""


@dataclass(frozen=True)
class IsoDuration:
    """An ISO 8601 duration; years and months are calendar units, the rest exact.

    Added as XML Schema adds a duration to a dateTime, in UTC: first the months
    (the day clamped to the length of the target month, so 31 Jan + P1M = 28/29
    Feb), then days and the time part as exact lengths.
    """

    text: str
    months: int = 0
    exact: timedelta = timedelta(0)

    @classmethod
    def parse(cls, text: str) -> IsoDuration:
        """Parse e.g. `P20D`, `PT30S`, `P2Y`, `P1M`, `P1Y2M3DT4H5M6.5S`, `P2W`; ValueError otherwise."""
        match = _DURATION_RE.fullmatch(text)
        # `P` and `P1DT` match the pattern but name no length.
        if match is None or text == "P" or text.endswith("T") or not any(match.groupdict().values()):
            raise ValueError(text)
        parts = {name: value for name, value in match.groupdict().items() if value is not None}
        if "weeks" in parts and len(parts) > 1:
            raise ValueError(text)  # ISO 8601 allows weeks only on their own
        seconds = Decimal(parts.get("seconds", "0").replace(",", "."))
        months = 12 * int(parts.get("years", 0)) + int(parts.get("months", 0))
        exact = timedelta(
            weeks=int(parts.get("weeks", 0)),
            days=int(parts.get("days", 0)),
            hours=int(parts.get("hours", 0)),
            minutes=int(parts.get("minutes", 0)),
            microseconds=int(seconds * 1_000_000),
        )
        if months == 0 and exact == timedelta(0):
            raise ValueError(text)
        return cls(text=text, months=months, exact=exact)

    def after(self, instant: datetime) -> datetime:
        """The instant this duration after `instant` (aware), in UTC."""
        moment = instant.astimezone(timezone.utc)
        if self.months:
            month_index = moment.month - 1 + self.months
            year, month = moment.year + month_index // 12, month_index % 12 + 1
            day = min(moment.day, calendar.monthrange(year, month)[1])
            moment = moment.replace(year=year, month=month, day=day)
        return moment + self.exact


def end_of_month(instant: datetime) -> datetime:
    """The first instant of the calendar month after `instant`'s month in Berlin, in UTC."""
    local = instant.astimezone(BERLIN)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return datetime(year, month, 1, tzinfo=BERLIN).astimezone(timezone.utc)


@dataclass(frozen=True)
class R1Rule:
    """AsylbLG → SGB II / SGB XII after a residence title (§ 1 Abs. 3 AsylbLG)."""

    enabled: bool = True
    categories: frozenset[str] = frozenset({"protection"})
    to_agency: str = "job_center"
    to_legal_domain: str = "SGB_II"
    legal_end: IsoDuration | Literal["end_of_month"] = "end_of_month"

    def legal_end_after(self, title_time: datetime) -> datetime:
        """When the AsylbLG responsibility ends by law for a title effective at `title_time`."""
        if self.legal_end == "end_of_month":
            return end_of_month(title_time)
        return self.legal_end.after(title_time)


@dataclass(frozen=True)
class R2Rule:
    """German language level reached → labour market to the regular services."""

    enabled: bool = True
    min_level: str = "B1"
    deadline: IsoDuration = IsoDuration.parse("P20D")


@dataclass(frozen=True)
class R3Rule:
    """Case management held for a long time → a review is due."""

    enabled: bool = True
    after: IsoDuration = IsoDuration.parse("P2Y")


@dataclass(frozen=True)
class RulesConfig:
    """The district's rules; `RulesConfig()` is the all-defaults configuration."""

    r1: R1Rule = field(default_factory=R1Rule)
    r2: R2Rule = field(default_factory=R2Rule)
    r3: R3Rule = field(default_factory=R3Rule)

    @classmethod
    def from_toml(cls, text: str) -> RulesConfig:
        """Parse the TOML text of a rules file (tables `[rules.r1]`, `[rules.r2]`, `[rules.r3]`)."""
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise RulesConfigError(f"rules file is not valid TOML: {error}") from None
        # Other top-level tables belong to other parts of a district's configuration.
        rules = document.get("rules", {})
        if not isinstance(rules, dict):
            raise RulesConfigError("rules: must be a table such as [rules.r1]")
        _reject_unknown("rules", rules, {"r1", "r2", "r3"}, "rule")
        return cls(
            r1=_parse_r1(_table(rules, "r1")),
            r2=_parse_r2(_table(rules, "r2")),
            r3=_parse_r3(_table(rules, "r3")),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> RulesConfig:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise RulesConfigError(f"{path}: cannot read rules file ({error.strerror})") from None
        except UnicodeDecodeError:
            raise RulesConfigError(f"{path}: rules file is not UTF-8") from None
        try:
            return cls.from_toml(text)
        except RulesConfigError as error:
            raise RulesConfigError(f"{path}: {error}") from None


def load_rules(path: str | Path | None) -> RulesConfig:
    """The rules of the file `path` (e.g. `KIM_RULES_FILE`), or all defaults without one."""
    return RulesConfig() if path is None else RulesConfig.from_file(path)


def _table(rules: dict[str, Any], name: str) -> dict[str, Any]:
    table = rules.get(name, {})
    if not isinstance(table, dict):
        raise RulesConfigError(f"rules.{name}: must be a table [rules.{name}]")
    return table


def _reject_unknown(prefix: str, table: dict[str, Any], known: set[str], what: str = "key") -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise RulesConfigError(f"{prefix}.{unknown[0]}: unknown {what} (known: {', '.join(sorted(known))})")


def _enabled(rule: str, table: dict[str, Any], default: bool) -> bool:
    value = table.get("enabled", default)
    if not isinstance(value, bool):
        raise RulesConfigError(f"rules.{rule}.enabled: {value!r} is not true or false")
    return value


def _duration(rule: str, key: str, value: Any) -> IsoDuration:
    if isinstance(value, str):
        try:
            return IsoDuration.parse(value)
        except ValueError:
            pass
    raise RulesConfigError(
        f"rules.{rule}.{key}: {value!r} is not an ISO 8601 duration such as P20D "
        "(a positive length: P2Y, P1M, P20D, PT30S)"
    )


def _parse_r1(table: dict[str, Any]) -> R1Rule:
    default = R1Rule()
    _reject_unknown("rules.r1", table, {"enabled", "categories", "to_agency", "to_legal_domain", "legal_end"})
    categories = table.get("categories", sorted(default.categories))
    if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
        raise RulesConfigError(f"rules.r1.categories: {categories!r} is not a list of residence title categories")
    for category in categories:
        if category not in RESIDENCE_CATEGORIES:
            raise RulesConfigError(
                f"rules.r1.categories: {category!r} is not a residence title category "
                f"({', '.join(sorted(RESIDENCE_CATEGORIES))})"
            )
    to_agency = table.get("to_agency", default.to_agency)
    to_legal_domain = table.get("to_legal_domain", default.to_legal_domain)
    if (to_agency, to_legal_domain) not in _R1_TARGETS:
        targets = ", ".join(f"{agency} {domain}" for agency, domain in sorted(_R1_TARGETS))
        key = "to_agency" if "to_agency" in table else "to_legal_domain"
        raise RulesConfigError(
            f"rules.r1.{key}: {to_agency!r} in {to_legal_domain!r} cannot take benefits after AsylbLG "
            f"(possible: {targets})"
        )
    legal_end: IsoDuration | Literal["end_of_month"] = "end_of_month"
    raw_end = table.get("legal_end", "end_of_month")
    if raw_end != "end_of_month":
        if not isinstance(raw_end, str) or not raw_end.startswith("P"):
            raise RulesConfigError(
                f"rules.r1.legal_end: {raw_end!r} is neither \"end_of_month\" nor an ISO 8601 duration such as P1M"
            )
        legal_end = _duration("r1", "legal_end", raw_end)
    return R1Rule(
        enabled=_enabled("r1", table, default.enabled),
        categories=frozenset(categories),
        to_agency=to_agency,
        to_legal_domain=to_legal_domain,
        legal_end=legal_end,
    )


def _parse_r2(table: dict[str, Any]) -> R2Rule:
    default = R2Rule()
    _reject_unknown("rules.r2", table, {"enabled", "min_level", "deadline"})
    min_level = table.get("min_level", default.min_level)
    if min_level not in CEFR_LEVELS:
        raise RulesConfigError(f"rules.r2.min_level: {min_level!r} is not a CEFR level ({' '.join(CEFR_LEVELS)})")
    deadline = _duration("r2", "deadline", table["deadline"]) if "deadline" in table else default.deadline
    return R2Rule(enabled=_enabled("r2", table, default.enabled), min_level=min_level, deadline=deadline)


def _parse_r3(table: dict[str, Any]) -> R3Rule:
    default = R3Rule()
    _reject_unknown("rules.r3", table, {"enabled", "after"})
    after = _duration("r3", "after", table["after"]) if "after" in table else default.after
    return R3Rule(enabled=_enabled("r3", table, default.enabled), after=after)
