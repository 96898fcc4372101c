"""Agencies, areas of responsibility and legal domains (interfaces.md §1).

The tables here are the single source of truth for who may act in which legal
domain and who may hold which area; the gateway, the referral service and the
generated AsyncAPI document all read them.
"""

from __future__ import annotations

from enum import StrEnum
from types import MappingProxyType
from typing import Mapping


class Agency(StrEnum):
    """Agency ids as they appear in `source`, JWT claims and event data."""

    INTEGRATION_CENTER = "integration_center"
    JOB_CENTER = "job_center"
    EMPLOYMENT_AGENCY = "employment_agency"
    FOREIGNERS_OFFICE = "foreigners_office"
    YOUTH_OFFICE = "youth_office"
    SOCIAL_WELFARE_OFFICE = "social_welfare_office"


class Area(StrEnum):
    """Areas of a person's support; at most one agency holds an area at a time."""

    CASE_MANAGEMENT = "case_management"
    BENEFITS = "benefits"
    LABOUR_MARKET = "labour_market"
    YOUTH = "youth"


class LegalDomain(StrEnum):
    """Legal domains (Rechtskreise); NONE is KIM case management without a code."""

    NONE = "NONE"
    SGB_II = "SGB_II"
    SGB_III = "SGB_III"
    SGB_VIII = "SGB_VIII"
    SGB_XII = "SGB_XII"
    ASYLBLG = "ASYLBLG"


class Cefr(StrEnum):
    """Common European Framework of Reference language levels, ascending."""

    A1 = "A1"
    A2 = "A2"
    B1 = "B1"
    B2 = "B2"
    C1 = "C1"
    C2 = "C2"

    @property
    def rank(self) -> int:
        """Position in the scale, so that levels compare (A1 = 0 … C2 = 5)."""
        return _CEFR_ORDER.index(self)


_CEFR_ORDER: tuple[Cefr, ...] = tuple(Cefr)

AGENCY_LEGAL_DOMAINS: Mapping[Agency, frozenset[LegalDomain]] = MappingProxyType(
    {
        Agency.INTEGRATION_CENTER: frozenset({LegalDomain.NONE}),
        Agency.JOB_CENTER: frozenset({LegalDomain.SGB_II}),
        Agency.EMPLOYMENT_AGENCY: frozenset({LegalDomain.SGB_III}),
        Agency.FOREIGNERS_OFFICE: frozenset(),
        Agency.YOUTH_OFFICE: frozenset({LegalDomain.SGB_VIII}),
        Agency.SOCIAL_WELFARE_OFFICE: frozenset({LegalDomain.ASYLBLG, LegalDomain.SGB_XII}),
    }
)
"""First table of §1: the legal domains each agency acts in."""

AREA_AGENCIES: Mapping[Area, frozenset[Agency]] = MappingProxyType(
    {
        Area.CASE_MANAGEMENT: frozenset({Agency.INTEGRATION_CENTER, Agency.JOB_CENTER}),
        Area.BENEFITS: frozenset(
            {Agency.SOCIAL_WELFARE_OFFICE, Agency.JOB_CENTER, Agency.EMPLOYMENT_AGENCY}
        ),
        Area.LABOUR_MARKET: frozenset(
            {Agency.INTEGRATION_CENTER, Agency.JOB_CENTER, Agency.EMPLOYMENT_AGENCY}
        ),
        Area.YOUTH: frozenset({Agency.YOUTH_OFFICE}),
    }
)
"""Second table of §1: the agencies that can hold each area."""

AREA_LEGAL_DOMAINS: Mapping[Area, frozenset[LegalDomain]] = MappingProxyType(
    {
        Area.CASE_MANAGEMENT: frozenset({LegalDomain.NONE, LegalDomain.SGB_II}),
        Area.BENEFITS: frozenset(
            {LegalDomain.ASYLBLG, LegalDomain.SGB_XII, LegalDomain.SGB_II, LegalDomain.SGB_III}
        ),
        Area.LABOUR_MARKET: frozenset({LegalDomain.NONE, LegalDomain.SGB_II, LegalDomain.SGB_III}),
        Area.YOUTH: frozenset({LegalDomain.SGB_VIII}),
    }
)
"""Second table of §1: the legal domains an area can be held in."""

CONTINUOUS_AREAS: frozenset[Area] = frozenset(
    {Area.BENEFITS, Area.CASE_MANAGEMENT, Area.LABOUR_MARKET}
)
"""Areas that must stay covered while the need persists; `youth` may simply end."""


def legal_domains_for(agency: Agency | str, area: Area | str) -> frozenset[LegalDomain]:
    """The legal domains in which `agency` can hold `area`; empty if it cannot hold it."""
    try:
        holder, held = Agency(agency), Area(area)
    except ValueError:
        return frozenset()
    if holder not in AREA_AGENCIES[held]:
        return frozenset()
    return AGENCY_LEGAL_DOMAINS[holder] & AREA_LEGAL_DOMAINS[held]


def can_hold(agency: Agency | str, area: Area | str, legal_domain: LegalDomain | str) -> bool:
    """Whether `agency` can hold `area` under `legal_domain`.

    True only when both tables of §1 allow it: the agency acts in the legal
    domain, the agency can hold the area, and the area exists in the domain.
    """
    return legal_domain in legal_domains_for(agency, area)


def agencies_that_can_hold(area: Area | str) -> frozenset[Agency]:
    """Agencies that can hold `area` in at least one legal domain."""
    return frozenset(agency for agency in Agency if legal_domains_for(agency, area))


AREA_HOLDERS: frozenset[Agency] = frozenset(
    agency for area in Area for agency in agencies_that_can_hold(area)
)
"""Agencies that can hold some area: the emitters of the area events."""


def agency_topic(agency: Agency | str) -> str:
    """The Kafka topic an agency writes (§5)."""
    return f"kim.{Agency(agency).value}.events"


def service_topic(service: str) -> str:
    """The Kafka topic a KIM service writes its derived events to (§5)."""
    return f"kim.{service}.events"
