"""Configuration of the reporting service, on top of the shared `KIM_*` variables.

The district's case managers (for the Betreuungsschlüssel) live in the district
file `KIM_RULES_FILE` next to the rules, as `[reporting.case_managers]`, e.g.
`integration_center = 13.0` (full-time equivalents per agency).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field

from kim.settings import KimSettings


class ReportingSettings(KimSettings):
    reporting_group: str = Field(
        default="kim-reporting", pattern=r"^[A-Za-z0-9_-]+$",
        description="faust application id: the consumer group of the instances and the prefix of their "
                    "changelog topic (KIM_REPORTING_GROUP)")


class DistrictConfigError(ValueError):
    """The district file says something about reporting that cannot be applied."""


def case_managers(path: Path | None) -> dict[str, float]:
    """Full-time case managers per agency from `[reporting.case_managers]` of the district file."""
    if path is None:
        return {}
    from contracts import Agency

    try:
        document: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise DistrictConfigError(f"{path}: cannot read the district file ({error})") from None
    reporting = document.get("reporting", {})
    table = reporting.get("case_managers", {}) if isinstance(reporting, dict) else None
    if not isinstance(table, dict):
        raise DistrictConfigError(f"{path}: reporting.case_managers must be a table of agency = full-time staff")
    agencies = {a.value for a in Agency}
    staff: dict[str, float] = {}
    for agency, value in table.items():
        if agency not in agencies:
            raise DistrictConfigError(f"{path}: reporting.case_managers.{agency}: not an agency id "
                                      f"({', '.join(sorted(agencies))})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise DistrictConfigError(f"{path}: reporting.case_managers.{agency}: {value!r} is not a positive number "
                                      "of full-time case managers")
        staff[agency] = float(value)
    return staff
