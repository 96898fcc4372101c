"""The figures' definitions on small, hand-made histories, and the properties the live service relies on."""

from __future__ import annotations

import random
from datetime import datetime, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import parse_rfc3339
from kim.demo import generate_district
from services.referral.rules import RulesConfig
from services.reporting.application import HelperGone, Query, Reporting, to_csv
from services.reporting.domain import (
    TOTAL,
    Contribution,
    PersonLog,
    Tally,
    assess,
    month_index,
    month_name,
    parse_month,
    record_of,
)
from services.reporting.helper import holds
from services.reporting.messaging import kept_records

RULES = RulesConfig()


class History:
    """One person's events, as agencies would publish them."""

    def __init__(self, subject: str = "P-1") -> None:
        self.subject = subject
        self.events: list[dict] = []

    def add(self, agency: str, name: str, time: str, data: dict, recorded: str | None = None) -> History:
        self.events.append({"source": f"urn:kim:{agency}:test", "id": f"{self.subject}-{len(self.events)}",
                            "type": f"de.kim.{name}.v1", "subject": self.subject, "time": time,
                            "recordedtime": recorded or time, "data": data})
        return self

    def log(self) -> PersonLog:
        log = PersonLog(self.subject)
        for e in self.events:
            record = record_of(e["type"].split(".")[2], e["source"], e["id"], parse_rfc3339(e["time"]),
                               parse_rfc3339(e["recordedtime"]), e["data"])
            if record is not None:
                log.add(record)
        return log


def figures(logs: list[PersonLog], as_of: str, known_at: str | None = None) -> dict[tuple, float]:
    moment = parse_rfc3339(as_of)
    tally = Tally()
    for log in logs:
        tally.add(assess(log, RULES, moment, as_of=moment,
                         known_at=parse_rfc3339(known_at) if known_at else None).contribution)
    return {(c.kpi, month_name(c.month), *c.dims): c.value
            for c in tally.cells(month_index(moment), {"integration_center": 2.0})}


def months(first: str, last: str) -> list[str]:
    return [month_name(m) for m in range(parse_month(first), parse_month(last) + 1)]


def refugee(subject: str = "P-1") -> History:
    """Registered in Laupheim in January, AsylbLG benefits handed over to the Jobcenter after recognition."""
    return (History(subject)
            .add("integration_center", "PersonRegistered", "2025-01-15T09:00:00+01:00",
                 {"municipality": "Laupheim", "birth_year": 1990, "arrival_date": "2024-11-01",
                  "country_of_origin": "SY"})
            .add("integration_center", "CaseOpenedByAgency", "2025-01-15T09:00:00+01:00",
                 {"area": "case_management", "legal_domain": "NONE"})
            .add("social_welfare_office", "CaseOpenedByAgency", "2025-01-15T09:00:00+01:00",
                 {"area": "benefits", "legal_domain": "ASYLBLG"})
            .add("integration_center", "ProfileCompleted", "2025-01-20T10:00:00+01:00",
                 {"language_levels": {"de": "A1", "ar": "C2"}, "qualifications": [], "work_experience_years": 3,
                  "inclinations": [], "support_needs": []})
            .add("foreigners_office", "ResidenceTitleGranted", "2025-03-10T10:00:00+01:00",
                 {"title": "§ 25 Abs. 2 AufenthG", "category": "protection", "valid_until": None})
            .add("social_welfare_office", "HandedOverToAgency", "2025-03-12T10:00:00+01:00",
                 {"handover_id": "h1", "area": "benefits", "to_agency": "job_center", "to_legal_domain": "SGB_II",
                  "reason": "recognised"})
            .add("job_center", "HandoverAccepted", "2025-03-25T10:00:00+01:00", {"handover_id": "h1"},
                 recorded="2025-04-20T10:00:00+02:00"))


def test_persons_active_by_area_and_agency_and_the_caseload_at_month_end():
    f = figures([refugee().log()], "2025-05-15T12:00:00Z")
    for month in months("2025-01", "2025-05"):
        for place in ("Laupheim", TOTAL):
            assert f[("persons_active", month, place, "benefits")] == 1
            assert f[("persons_active", month, place, TOTAL)] == 1
            assert f[("caseload", month, place, "integration_center")] == 1
    assert [m for m in months("2025-01", "2025-05") if ("persons_by_agency", m, "Laupheim", "social_welfare_office")
            in f] == months("2025-01", "2025-03")
    assert [m for m in months("2025-01", "2025-05") if ("persons_by_agency", m, "Laupheim", "job_center") in f] == \
        months("2025-03", "2025-05")
    assert ("persons_active", "2024-12", "Laupheim", "benefits") not in f
    assert ("persons_by_agency", "2025-03", TOTAL, TOTAL) not in f  # it would repeat persons_active's total
    assert f[("caseload_per_case_manager", "2025-05", TOTAL, "integration_center")] == 0.5


def test_a_handover_counts_in_the_month_of_its_acceptance_with_its_duration_from_the_first_expectation():
    f = figures([refugee().log()], "2025-05-15T12:00:00Z")
    route = "social_welfare_office>job_center"
    assert f[("handovers_completed", "2025-03", "Laupheim", route)] == 1
    assert f[("handovers_completed", "2025-03", TOTAL, TOTAL)] == 1
    # R1 expected the handover with the title on 10 March; it was accepted on 25 March: 15 days.
    assert f[("handover_days_median", "2025-03", "Laupheim", route)] == 15.0
    assert f[("handover_days_p90", "2025-03", TOTAL, TOTAL)] == 15.0


def test_known_at_leaves_out_what_was_recorded_later():
    # Known on 1 April, the acceptance (recorded 20 April) is unknown: R1's legal end opened a gap.
    f = figures([refugee().log()], "2025-04-15T12:00:00Z", known_at="2025-04-01T00:00:00Z")
    assert ("handovers_completed", "2025-03", TOTAL, TOTAL) not in f
    # The legal end, 1 April 00:00 in Berlin, opened a gap and made the handover overdue: both in April.
    assert f[("gaps_opened", "2025-04", "Laupheim", "benefits")] == 1
    assert f[("handovers_overdue", "2025-04", "Laupheim", "benefits")] == 1
    assert f[("gaps_open", "2025-04", TOTAL, "benefits")] == 1


def test_gap_days_count_calendar_days_with_an_open_gap_and_add_up_over_areas():
    history = refugee().add("job_center", "CaseClosedByAgency", "2025-06-10T10:00:00+02:00",
                            {"area": "benefits", "reason": "not_competent"})
    f = figures([history.log()], "2025-07-03T12:00:00Z")
    assert f[("gaps_opened", "2025-06", "Laupheim", "benefits")] == 1
    assert f[("gaps_open", "2025-06", "Laupheim", "benefits")] == 1
    assert f[("gaps_open", "2025-07", "Laupheim", "benefits")] == 1  # still open at the as-of instant
    assert f[("gap_days", "2025-06", "Laupheim", "benefits")] == 21  # 10 to 30 June
    assert f[("gap_days", "2025-07", "Laupheim", "benefits")] == 3  # 1 to 3 July
    assert f[("gap_days", "2025-07", TOTAL, TOTAL)] == 3


def test_course_demand_is_the_next_german_level_and_reached_levels_count_in_their_month():
    history = refugee().add("integration_center", "LanguageLevelReached", "2025-04-05T10:00:00+02:00",
                            {"language": "de", "level": "A2", "certificate": None})
    f = figures([history.log()], "2025-05-15T12:00:00Z")
    assert [f.get(("course_demand", m, "Laupheim", "A2")) for m in months("2025-01", "2025-05")] == \
        [1, 1, 1, None, None]
    assert [f.get(("course_demand", m, "Laupheim", "B1")) for m in months("2025-01", "2025-05")] == \
        [None, None, None, 1, 1]
    assert f[("course_demand", "2025-05", TOTAL, TOTAL)] == 1
    assert f[("language_level_reached", "2025-04", "Laupheim", "A2")] == 1


def test_a_closed_case_needs_no_course():
    history = refugee().add("integration_center", "CaseClosed", "2025-03-03T10:00:00+01:00",
                            {"reason": "moved_away"})
    f = figures([history.log()], "2025-05-15T12:00:00Z")
    assert [m for m in months("2025-01", "2025-05") if ("course_demand", m, TOTAL, TOTAL) in f] == \
        months("2025-01", "2025-02")


def test_measures_their_waiting_time_and_employment():
    history = (refugee()
               .add("integration_center", "MeasureAssigned", "2025-01-25T10:00:00+01:00",
                    {"measure_id": "m1", "kind": "integration_course", "provider": "VHS", "starts": "2025-02-01",
                     "ends": "2025-04-30"})
               .add("integration_center", "MeasureCompleted", "2025-04-30T12:00:00+02:00",
                    {"measure_id": "m1", "outcome": "completed"})
               .add("job_center", "MeasureAssigned", "2025-05-02T10:00:00+02:00",
                    {"measure_id": "m2", "kind": "language_course", "provider": "VHS", "starts": "2025-05-12",
                     "ends": None})
               .add("job_center", "EmploymentStarted", "2025-05-20T08:00:00+02:00",
                    {"kind": "internship", "hours_per_week": 30.0}))
    f = figures([history.log()], "2025-05-31T12:00:00Z")
    assert f[("measures_started", "2025-02", "Laupheim", "integration_course")] == 1
    assert f[("measures_started", "2025-05", "Laupheim", "language_course")] == 1
    assert f[("measures_completed", "2025-04", "Laupheim", "integration_course")] == 1
    assert f[("measure_wait_days_median", "2025-05", "Laupheim")] == 11  # 1 to 11 May without a measure
    assert f[("employment_started", "2025-05", TOTAL, "internship")] == 1
    assert f[("employment_started", "2025-05", TOTAL, TOTAL)] == 1


def test_persons_count_once_per_cell_and_the_municipality_total_adds_up():
    logs = [refugee(f"P-{n}").log() for n in range(3)]
    other = refugee("P-9")
    other.events[0]["data"] = {**other.events[0]["data"], "municipality": "Biberach an der Riß"}
    f = figures(logs + [other.log()], "2025-05-15T12:00:00Z")
    assert f[("persons_active", "2025-04", "Laupheim", TOTAL)] == 3
    assert f[("persons_active", "2025-04", "Biberach an der Riß", TOTAL)] == 1
    assert f[("persons_active", "2025-04", TOTAL, TOTAL)] == 4


@settings(max_examples=25, deadline=None)
@given(st.randoms(use_true_random=False))
def test_the_figures_do_not_depend_on_the_order_of_events_nor_on_repeats(rng: random.Random):
    history = refugee()
    expected = figures([history.log()], "2025-05-15T12:00:00Z")
    events = history.events + rng.sample(history.events, 3)
    rng.shuffle(events)
    history.events = events
    assert figures([history.log()], "2025-05-15T12:00:00Z") == expected


def test_taking_a_contribution_back_leaves_nothing_and_tallies_merge():
    now = parse_rfc3339("2025-05-15T12:00:00Z")
    one, two = (assess(refugee(s).log(), RULES, now).contribution for s in ("P-1", "P-2"))
    tally = Tally()
    tally.add(one)
    tally.add(one, -1)
    assert tally.cells(month_index(now)) == []
    first, second, both = Tally(), Tally(), Tally()
    first.add(one), second.add(two), both.add(one), both.add(two)
    first.merge(second)
    assert first.cells(month_index(now)) == both.cells(month_index(now))


def test_a_tally_of_changes_carries_changed_amounts_and_samples_of_the_same_persons():
    now = parse_rfc3339("2025-05-15T12:00:00Z")
    month = month_index(now)
    gap_days, handover_days = ("gap_days", ("Laupheim", "benefits")), ("handover_days", ("Laupheim", "a>b"))
    old = Contribution(amounts=((gap_days, month, 3),), samples=((handover_days, month, (86400,)),))
    new = Contribution(amounts=((gap_days, month, 9),), samples=((handover_days, month, (5 * 86400,)),))
    change = Tally()  # as a helper reports a recomputed person: the same persons, other values
    change.add(old, -1)
    change.add(new)
    live, fresh = Tally(), Tally()
    live.add(old)
    live.merge(change)
    fresh.add(new)
    assert live.cells(month) == fresh.cells(month)


def test_the_live_service_computes_the_same_figures_incrementally():
    now = parse_rfc3339("2025-05-15T12:00:00Z")
    histories = [refugee(f"P-{n}") for n in range(6)]
    reporting = Reporting(RULES, clock=lambda: now)
    items = [(h.subject, r, None) for h in histories for r in h.log().records.values()]
    reporting.add(items[: len(items) // 2])
    reporting.refresh()
    reporting.add(items[len(items) // 2:] + items[:5])  # later events, and repeats
    assert not reporting.current()
    reporting.refresh()
    assert reporting.current()
    expected = Reporting(RULES, clock=lambda: now)
    expected.add(items)
    expected.refresh()
    assert reporting.published() == expected.published()
    assert reporting.query(Query(parse_month("2025-03"), parse_month("2025-03"), "Laupheim")) == [
        c for c in expected.published() if c["dims"]["month"] == "2025-03" and c["dims"]["municipality"] == "Laupheim"]


class InProcessHelper:
    """The helper process's part, in this process: a second `Reporting` keeping its half of the persons."""

    def __init__(self, clock) -> None:
        self.kept = Reporting(RULES, clock=clock)
        self.gone = False
        self.on_gone = None

    def holds(self, subject: str) -> bool:
        return not self.gone and holds(subject)

    def add(self, items) -> None:
        self.kept.add(item for item in items if holds(item[0]))

    def recompute(self, subjects, now):
        if self.gone:
            raise HelperGone()
        return lambda: self.kept.recompute(subjects, now)

    def die(self, reporting: Reporting) -> None:
        self.gone = True
        reporting.reclaim()


def test_a_helper_computing_half_of_the_persons_gives_the_same_figures():
    # A demo district: gaps, overdue and completed handovers, measures, all changing between refreshes.
    now = parse_rfc3339("2026-01-20T12:00:00Z")
    events = sorted(generate_district(300, 1.0, 11), key=lambda e: e["recordedtime"])
    items = [(subject, record, None)
             for _, subject, record in kept_records([orjson.dumps(e) for e in events], [])]
    assert 0 < sum(holds(subject) for subject, _, _ in items) < len(items)
    expected = Reporting(RULES, clock=lambda: now)
    expected.add(items)
    expected.refresh()

    reporting, helper = Reporting(RULES, clock=lambda: now), InProcessHelper(lambda: now)
    parts = [items[i:i + len(items) // 8] for i in range(0, len(items), len(items) // 8)] + [items[:50]]  # repeats
    for part in parts:
        helper.add(part)  # the helper sees every event first (it validates them)
        reporting.add(part)
        reporting.refresh(helper)
    assert reporting.current()
    assert reporting.published() == expected.published()

    helper.die(reporting)  # its persons are computed by the service from now on
    assert not reporting.current()
    reporting.refresh(helper)
    assert reporting.published() == expected.published()


def test_passing_time_recomputes_a_person():
    clock = [parse_rfc3339("2025-05-15T12:00:00Z")]
    reporting = Reporting(RULES, clock=lambda: clock[0])
    reporting.add((h.subject, r, None) for h in [refugee()] for r in h.log().records.values())
    reporting.refresh()
    assert not reporting.due()
    clock[0] = parse_rfc3339("2025-06-02T12:00:00Z")  # a new month: still active in June
    assert reporting.due() and reporting.refresh() == 1
    assert any(c["dims"]["month"] == "2025-06" and c["kpi"] == "persons_active" for c in reporting.published())


def test_csv_has_a_column_per_dimension_and_marks_suppressed_cells():
    cells = [{"kpi": "persons_active", "dims": {"month": "2025-01", "municipality": "*", "area": "benefits"},
              "value": None, "suppressed": True},
             {"kpi": "measure_wait_days_median", "dims": {"month": "2025-01", "municipality": "Laupheim"},
              "value": 4.5, "suppressed": False}]
    assert to_csv(cells).splitlines() == [
        "kpi,month,municipality,area,agency,route,level,kind,value,suppressed",
        "persons_active,2025-01,*,benefits,,,,,,true",
        "measure_wait_days_median,2025-01,Laupheim,,,,,,4.5,false",
    ]


@pytest.mark.parametrize("text", ["2025-13", "2025-1", "25-01", "2025_01", ""])
def test_months_are_yyyy_mm(text):
    with pytest.raises(ValueError):
        parse_month(text)
    assert month_name(parse_month("2025-12")) == "2025-12"
    assert month_index(datetime(2025, 12, 31, 23, 30, tzinfo=timezone.utc)) == parse_month("2026-01")  # Berlin
