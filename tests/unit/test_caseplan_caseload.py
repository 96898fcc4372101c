"""The caseload's pure side: a person's summary, the alerts due, who may see them, and the chart."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from services.caseplan.caseload import PersonSummary, alerts, summarise
from services.caseplan.chart import responsibility_svg
from services.caseplan.labels import alert_text, describe, german_date, plan_error, validation_errors

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
EVERYONE = lambda origin, named: True  # noqa: E731 - a filter that lets every alert through


class History:
    """One person's events, as published."""

    def __init__(self, subject: str = "P-1") -> None:
        self.subject = subject
        self.events: list[dict] = []

    def add(self, source: str, name: str, time: str, data: dict) -> History:
        self.events.append({"specversion": "1.0", "id": f"e{len(self.events)}", "source": source,
                            "type": f"de.kim.{name}.v1", "subject": self.subject, "time": time,
                            "recordedtime": time, "datacontenttype": "application/json", "data": data})
        return self

    def agency(self, agency: str, name: str, time: str, **data) -> History:
        return self.add(f"urn:kim:{agency}:x", name, time, data)

    def derived(self, name: str, time: str, **data) -> History:
        return self.add("urn:kim:service:referral", name, time, data)


def registered() -> History:
    return (History().agency("integration_center", "PersonRegistered", "2026-01-05T09:00:00Z", municipality="Laupheim",
                             birth_year=1990, arrival_date="2025-11-02", country_of_origin="SY")
            .agency("integration_center", "CaseOpenedByAgency", "2026-01-05T10:00:00Z", area="case_management",
                    legal_domain="NONE"))


def kinds(found) -> list[str]:
    return [a.kind for a in found]


def test_holders_follow_openings_accepted_handovers_closures_and_legal_ends():
    history = (registered()
               .agency("social_welfare_office", "CaseOpenedByAgency", "2026-01-10T00:00:00Z", area="benefits",
                       legal_domain="ASYLBLG")
               .agency("integration_center", "CaseOpenedByAgency", "2026-01-10T00:00:00Z", area="labour_market",
                       legal_domain="NONE")
               .derived("HandoverExpected", "2026-03-10T10:00:00Z", handover_id="x1", area="benefits",
                        from_agency="social_welfare_office", to_agency="job_center", to_legal_domain="SGB_II",
                        deadline="2026-03-31T22:00:00Z", rule="R1")
               .agency("integration_center", "HandedOverToAgency", "2026-04-01T00:00:00Z", handover_id="h2",
                       area="labour_market", to_agency="employment_agency", to_legal_domain="SGB_III", reason="B1")
               .agency("employment_agency", "HandoverAccepted", "2026-04-03T00:00:00Z", handover_id="h2")
               .derived("JurisdictionGapOpened", "2026-03-31T22:00:00Z", gap_id="g1", area="benefits",
                        since="2026-03-31T22:00:00Z", last_agency="social_welfare_office", reason="legal_end"))
    summary = summarise(reversed(history.events))  # arrival order does not matter
    assert summary.registered_by == "integration_center" and summary.municipality == "Laupheim"
    assert summary.holders == {"case_management": "integration_center", "labour_market": "employment_agency"}
    assert [g["gap_id"] for g in summary.gaps] == ["g1"]
    history.agency("job_center", "HandoverAccepted", "2026-04-10T00:00:00Z", handover_id="x1")
    history.derived("JurisdictionGapClosed", "2026-04-10T00:00:00Z", gap_id="g1", area="benefits",
                    since="2026-03-31T22:00:00Z", until="2026-04-10T00:00:00Z", last_agency="social_welfare_office",
                    reason="legal_end", closed_by="job_center")
    summary = summarise(history.events)
    assert summary.holders["benefits"] == "job_center" and summary.gaps == []


def overdue(history: History, kind: str = "expected") -> History:
    return (history.agency("social_welfare_office", "CaseOpenedByAgency", "2026-01-10T00:00:00Z", area="benefits",
                           legal_domain="ASYLBLG")
            .derived("HandoverExpected", "2026-03-10T10:00:00Z", handover_id="x1", area="benefits",
                     from_agency="social_welfare_office", to_agency="job_center", to_legal_domain="SGB_II",
                     deadline="2026-03-31T22:00:00Z", rule="R1")
            .derived("HandoverOverdue", "2026-03-31T22:00:00Z", handover_id="x1", kind=kind, area="benefits",
                     from_agency="social_welfare_office", to_agency="job_center", deadline="2026-03-31T22:00:00Z"))


def test_an_overdue_handover_stays_until_decided_replaced_or_overtaken():
    assert kinds(alerts("P-1", summarise(overdue(registered()).events), NOW, EVERYONE)) == ["handover_overdue"]
    settled_by = {
        "accepted": ("job_center", "HandoverAccepted", {"handover_id": "x1"}),
        "rejected": ("job_center", "HandoverRejected", {"handover_id": "x1", "reason": "no"}),
        "replaced": ("social_welfare_office", "HandedOverToAgency",
                     {"handover_id": "h9", "area": "benefits", "to_agency": "job_center", "to_legal_domain": "SGB_II",
                      "reason": "recognised"}),
        "taken": ("job_center", "CaseOpenedByAgency", {"area": "benefits", "legal_domain": "SGB_II"}),
        "sgb_xii": ("social_welfare_office", "CaseOpenedByAgency", {"area": "benefits", "legal_domain": "SGB_XII"}),
        "need_ended": ("social_welfare_office", "CaseClosedByAgency", {"area": "benefits", "reason": "need_ended"}),
        "case_closed": ("integration_center", "CaseClosed", {"reason": "moved_away"}),
    }
    for why, (agency, name, data) in settled_by.items():
        history = overdue(registered()).agency(agency, name, "2026-04-05T00:00:00Z", **data)
        assert summarise(history.events).overdue_handovers == [], why
    not_settling = overdue(registered()).agency("social_welfare_office", "CaseClosedByAgency", "2026-04-05T00:00:00Z",
                                                area="benefits", reason="not_competent")
    assert len(summarise(not_settling.events).overdue_handovers) == 1


def test_goals_measures_and_reviews_fall_due_with_time():
    history = (registered()
               .agency("integration_center", "IntegrationAgreementSigned", "2026-02-01T10:00:00Z", plan_id="pl",
                       goals=[{"goal_id": "g1", "kind": "language", "target": "B1", "due": "2026-06-30"},
                              {"goal_id": "g2", "kind": "employment", "target": "Job", "due": "2026-12-31"},
                              {"goal_id": "g3", "kind": "housing", "target": "Wohnung", "due": "2026-03-31"}])
               .agency("integration_center", "GoalAchieved", "2026-03-01T10:00:00Z", plan_id="pl", goal_id="g3")
               .agency("job_center", "MeasureAssigned", "2026-02-01T10:00:00Z", measure_id="m1", kind="fim",
                       provider="Stadt", starts="2026-02-01", ends="2026-12-31")
               .agency("job_center", "MeasureCompleted", "2026-10-30T10:00:00Z", measure_id="m1", outcome="completed")
               .derived("ReviewDue", "2026-11-01T00:00:00Z", area="case_management", agency="integration_center",
                        held_since="2024-11-01T00:00:00Z", due="2026-11-01T00:00:00Z"))
    found = alerts("P-1", summarise(history.events), NOW, EVERYONE)
    assert kinds(found) == ["review_due", "goal_overdue", "measure_without_follow_up"]
    assert found[1].facts["goal_id"] == "g1"
    assert found[2].facts["waiting_days"] == 21 and found[2].since == "2026-10-30"
    # a follow-up measure, a re-assessment and employment settle them; a closed case has none
    history.agency("job_center", "MeasureAssigned", "2026-11-15T10:00:00Z", measure_id="m2", kind="internship",
                   provider="Firma", starts="2026-12-01", ends=None)
    history.agency("integration_center", "ReAssessmentCompleted", "2026-11-10T10:00:00Z", language_levels={},
                   qualifications=[], work_experience_years=1, inclinations=[], support_needs=[])
    assert kinds(alerts("P-1", summarise(history.events), NOW, EVERYONE)) == ["goal_overdue"]
    history.agency("integration_center", "CaseClosed", "2026-11-12T10:00:00Z", reason="moved_away")
    assert alerts("P-1", summarise(history.events), NOW, EVERYONE) == []


def test_the_viewer_filter_decides_per_alert_and_summaries_round_trip():
    history = overdue(registered()).agency("integration_center", "IntegrationAgreementSigned", "2026-02-01T10:00:00Z",
                                           plan_id="pl", goals=[{"goal_id": "g1", "kind": "language",
                                                                 "target": "B1", "due": "2026-06-30"}])
    summary = PersonSummary.from_json(summarise(history.events).to_json())
    assert summary == summarise(history.events)
    only_derived = alerts("P-1", summary, NOW, lambda origin, named: origin is None and "job_center" in named)
    assert kinds(only_derived) == ["handover_overdue"]
    assert kinds(alerts("P-1", summary, NOW, lambda origin, named: origin == "integration_center")) == ["goal_overdue"]


def test_the_chart_draws_a_lane_per_area_agencies_in_colour_and_gaps_in_red():
    responsibility = {"subject": "P-1", "areas": {
        "benefits": [{"agency": "social_welfare_office", "legal_domain": "ASYLBLG", "from": "2026-01-10T00:00:00Z",
                      "to": "2026-03-31T22:00:00Z"},
                     {"agency": "job_center", "legal_domain": "SGB_II", "from": "2026-04-10T00:00:00Z", "to": None}],
        "case_management": [{"agency": "integration_center", "legal_domain": "NONE", "from": "2026-01-05T10:00:00Z",
                             "to": None}]}}
    gaps = [{"gap_id": "g1", "subject": "P-1", "area": "benefits", "since": "2026-03-31T22:00:00Z",
             "until": "2026-04-10T00:00:00Z", "last_agency": "social_welfare_office", "reason": "legal_end"}]
    svg = responsibility_svg(responsibility, gaps, NOW)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    lanes = re.findall(r'class="lane">([^<]+)<', svg)
    assert lanes == ["Fallmanagement", "Leistungen"]
    assert svg.count('class="interval"') == 3 and svg.count('class="gap"') == 1
    assert "Lücke (niemand zuständig)" in svg and "Sozialamt (AsylbLG)" in svg and "Jan 2026" in svg
    assert "niemand zuständig seit 01.04.2026 bis 10.04.2026" in svg  # German dates, German time
    assert responsibility_svg({"subject": "P-1", "areas": {}}, [], NOW) is None


def test_german_wording_of_dates_events_alerts_and_errors():
    assert german_date("2026-03-31T22:00:00Z") == "01.04.2026" and german_date("2026-12-24") == "24.12.2026"
    event = registered().events[1]
    assert describe(event) == "Bereich Fallmanagement (KIM)"
    found = alerts("P-1", summarise(overdue(registered()).events), NOW, EVERYONE)
    assert alert_text(found[0]) == "Übergabe Leistungen von Sozialamt an Jobcenter überfällig seit 01.04.2026"
    assert plan_error("plan_open", {"plan_id": "pl-1"}) == (
        "Für diese Person gibt es bereits einen offenen Integrationsplan (pl-1).")
    assert validation_errors([{"loc": ("body", "due"), "msg": "must be a date YYYY-MM-DD", "type": "date_format"},
                              {"loc": ("body", "target"), "msg": "Field required", "type": "missing"}]) == (
        "fällig am: ungültige Angabe (must be a date YYYY-MM-DD). Ziel: Angabe fehlt.")
