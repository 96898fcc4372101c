"""German wording of the case managers' screens: names, dates, event summaries, messages."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from contracts import parse_rfc3339
from services.caseplan.caseload import BERLIN, Alert, event_name

AGENCY_NAMES = {
    "integration_center": "Kommunales Integrationszentrum",
    "job_center": "Jobcenter",
    "employment_agency": "Agentur für Arbeit",
    "foreigners_office": "Ausländerbehörde",
    "youth_office": "Jugendamt",
    "social_welfare_office": "Sozialamt",
}
AREA_NAMES = {
    "case_management": "Fallmanagement",
    "benefits": "Leistungen",
    "labour_market": "Arbeitsmarkt",
    "youth": "Jugendhilfe",
}
LEGAL_DOMAINS = {"NONE": "KIM", "SGB_II": "SGB II", "SGB_III": "SGB III", "SGB_VIII": "SGB VIII",
                 "SGB_XII": "SGB XII", "ASYLBLG": "AsylbLG"}
ROLE_NAMES = {"case_manager": "Fallmanagement", "auditor": "Prüfung (Revision)", "agency_system": "Fachverfahren",
              "steering_group": "Lenkungsgruppe", "admin": "Administration"}
GOAL_KINDS = {"language": "Sprache", "employment": "Arbeit", "training": "Ausbildung",
              "recognition": "Anerkennung", "housing": "Wohnen", "social": "Soziale Teilhabe", "health": "Gesundheit"}
MEASURE_KINDS = {"integration_course": "Integrationskurs", "language_course": "Sprachkurs",
                 "internship": "Praktikum", "fim": "FIM (Flüchtlingsintegrationsmaßnahme)",
                 "work_opportunity": "Arbeitsgelegenheit", "recognition_counselling": "Anerkennungsberatung",
                 "psychosocial_counselling": "Psychosoziale Beratung", "other": "Sonstige Maßnahme"}
OUTCOMES = {"completed": "abgeschlossen", "aborted": "abgebrochen"}
CASE_CLOSURE_REASONS = {"regular_services_reached": "in Regeldienste übergegangen", "moved_away": "verzogen",
                        "naturalised": "eingebürgert", "withdrew": "Mitwirkung beendet", "deceased": "verstorben",
                        "other": "sonstiger Grund"}
AREA_CLOSURE_REASONS = {"need_ended": "Bedarf entfallen", "moved_away": "verzogen",
                        "not_competent": "nicht zuständig", "other": "sonstiger Grund"}
GAP_REASONS = {"closed_not_competent": "geschlossen als „nicht zuständig“",
               "closed_other": "geschlossen aus sonstigem Grund",
               "legal_end": "AsylbLG-Zuständigkeit endete kraft Gesetzes"}
PLAN_STATUS = {"draft": "Entwurf", "signed": "unterschrieben", "revision": "in Überarbeitung (nach Re-Assessment)",
               "closed": "Fall abgeschlossen", "discarded": "verworfen"}
GOAL_STATUS = {"draft": "Entwurf", "agreed": "vereinbart", "achieved": "erreicht"}
CEFR = ("A1", "A2", "B1", "B2", "C1", "C2")
RESIDENCE_CATEGORIES = {"protection": "Schutzstatus", "humanitarian": "humanitär", "employment": "Beschäftigung",
                        "family": "Familiennachzug", "opportunity": "Chancen-Aufenthaltsrecht",
                        "toleration": "Duldung", "other": "sonstiger Titel"}
EMPLOYMENT_KINDS = {"employment": "sozialversicherungspflichtige Beschäftigung", "minijob": "Minijob",
                    "apprenticeship": "Ausbildung", "internship": "Praktikum", "self_employed": "Selbstständigkeit"}
EVENT_NAMES = {
    "PersonRegistered": "Person registriert",
    "ConsentRecorded": "Einwilligung erteilt",
    "ConsentWithdrawn": "Einwilligung widerrufen",
    "ProfileCompleted": "Erstprofil erstellt",
    "ReAssessmentCompleted": "Re-Assessment durchgeführt",
    "IntegrationAgreementSigned": "Integrationsvereinbarung unterschrieben",
    "MeasureAssigned": "Maßnahme zugewiesen",
    "MeasureCompleted": "Maßnahme beendet",
    "GoalAchieved": "Ziel erreicht",
    "LanguageLevelReached": "Sprachniveau erreicht",
    "ResidenceTitleGranted": "Aufenthaltstitel erteilt",
    "NaturalisationCompleted": "Eingebürgert",
    "EmploymentStarted": "Beschäftigung aufgenommen",
    "CaseOpenedByAgency": "Zuständigkeit übernommen",
    "HandedOverToAgency": "Übergabe angeboten",
    "HandoverAccepted": "Übergabe angenommen",
    "HandoverRejected": "Übergabe abgelehnt",
    "CaseClosedByAgency": "Zuständigkeit beendet",
    "CaseClosed": "Fall abgeschlossen",
}
FIELD_NAMES = {
    "given_name": "Vorname", "family_name": "Nachname", "birth_date": "Geburtsdatum",
    "municipality": "Wohnort (Gemeinde)", "arrival_date": "Einreisedatum", "country_of_origin": "Herkunftsland",
    "phone": "Telefon", "email": "E-Mail", "address": "Anschrift", "notes": "Notizen", "language": "Sprache",
    "shared_with": "Behörden", "purposes": "Zwecke", "valid_until": "gültig bis", "kind": "Art",
    "target": "Ziel", "due": "fällig am", "goal_id": "Ziel", "provider": "Träger", "starts": "Beginn",
    "ends": "Ende", "measure_id": "Maßnahme", "outcome": "Ergebnis", "reason": "Grund",
    "language_levels": "Sprachniveau", "work_experience_years": "Berufserfahrung (Jahre)",
    "inclinations": "Neigungen", "support_needs": "Unterstützungsbedarf", "qualifications": "Qualifikationen",
    "subject": "Person", "plan": "Plan", "goals": "Ziele", "agency": "Behörde", "goal": "Ziel",
}

# What a broken plan rule means, for the case manager (codes of `domain.PlanError`).
PLAN_ERRORS = {
    "plan_open": "Für diese Person gibt es bereits einen offenen Integrationsplan{plan_id}.",
    "case_closed": "Der Fall dieser Person ist abgeschlossen; es kann nichts mehr hinzugefügt werden.",
    "no_plan": "Für diese Person gibt es keinen offenen Integrationsplan. Bitte zuerst einen Plan entwerfen.",
    "goals_frozen": "Ziele können nur im Entwurf oder nach einem Re-Assessment geändert werden.",
    "goal_exists": "Dieses Ziel ist bereits im Plan enthalten.",
    "unknown_goal": "Dieses Ziel wurde im Plan nie festgelegt.",
    "goal_agreed": "Dieses Ziel ist Teil der unterschriebenen Vereinbarung und bleibt bestehen.",
    "goal_not_agreed": "Dieses Ziel ist noch nicht vereinbart; bitte den Plan zuerst unterschreiben lassen.",
    "goal_achieved": "Dieses Ziel wurde bereits als erreicht vermerkt.",
    "not_signable": "Der Plan kann in diesem Zustand nicht unterschrieben werden.",
    "no_goals": "Eine Integrationsvereinbarung braucht mindestens ein Ziel.",
    "measure_exists": "Diese Maßnahme ist bereits zugewiesen.",
    "unknown_measure": "Diese Maßnahme wurde nie zugewiesen.",
    "measure_ended": "Diese Maßnahme ist bereits beendet.",
    "not_measure_agency": "Das Ende einer Maßnahme trägt die Behörde ein, die sie zugewiesen hat.",
    "not_signed": "Ein Re-Assessment folgt auf eine unterschriebene Vereinbarung.",
    "not_a_draft": "Nur ein nicht unterschriebener Entwurf kann verworfen werden.",
    "not_plan_agency": "Diesen Plan führt {agency}; nur deren Fallmanagement kann ihn ändern.",
    "agency_may_not": "Ihre Behörde darf diesen Schritt nicht ausführen.",
    "unknown_person": "Diese Person ist (noch) nicht registriert. Bitte in einigen Sekunden erneut versuchen.",
    "no_consent": "Für Ihre Behörde liegt keine gültige Einwilligung dieser Person vor.",
    "concurrent_change": "Der Plan wurde gleichzeitig von jemand anderem geändert. Bitte neu laden und wiederholen.",
}

_MONTHS = ("Jan", "Feb", "Mär", "Apr", "Mai", "Jun", "Jul", "Aug", "Sep", "Okt", "Nov", "Dez")


def agency_name(agency: str | None) -> str:
    return AGENCY_NAMES.get(agency or "", agency or "–")


def area_name(area: str) -> str:
    return AREA_NAMES.get(area, area)


def german_date(value: str | date | datetime | None) -> str:
    """31.07.2026 for a date, an instant (in German time) or their ISO strings; '–' for none."""
    if value is None or value == "":
        return "–"
    if isinstance(value, str):
        value = parse_rfc3339(value) if "T" in value.upper() else date.fromisoformat(value)
    if isinstance(value, datetime):
        value = value.astimezone(BERLIN).date()
    return value.strftime("%d.%m.%Y")


def german_datetime(value: str | None) -> str:
    if not value:
        return "–"
    return parse_rfc3339(value).astimezone(BERLIN).strftime("%d.%m.%Y %H:%M")


def month_label(day: date) -> str:
    return f"{_MONTHS[day.month - 1]} {day.year}"


def plan_error(code: str, params: Mapping[str, str]) -> str:
    text = PLAN_ERRORS.get(code, "Der Schritt ist nicht möglich.")
    return text.format(plan_id=f" ({params['plan_id']})" if params.get("plan_id") else "",
                       agency=agency_name(params.get("agency")))


def validation_errors(errors: list[Mapping[str, Any]]) -> str:
    """Pydantic's or a service's field errors as one German sentence per field."""
    lines = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ()) if part not in ("body", "query", "path")]
        name = FIELD_NAMES.get(loc[0], loc[0]) if loc else "Eingabe"
        if error.get("type") == "missing":
            lines.append(f"{name}: Angabe fehlt.")
        else:
            lines.append(f"{name}: ungültige Angabe ({error.get('msg', '')}).")
    return " ".join(lines) or "Bitte die Eingaben prüfen."


def alert_text(alert: Alert) -> str:
    facts = alert.facts
    if alert.kind == "gap":
        return (f"Zuständigkeitslücke im Bereich {area_name(facts['area'])} seit {german_date(alert.since)} – "
                f"zuletzt {agency_name(facts['last_agency'])}, {GAP_REASONS.get(facts['reason'], facts['reason'])}")
    if alert.kind == "handover_overdue":
        return (f"Übergabe {area_name(facts['area'])} von {agency_name(facts['from_agency'])} an "
                f"{agency_name(facts['to_agency'])} überfällig seit {german_date(facts['deadline'])}")
    if alert.kind == "review_due":
        return (f"Überprüfung fällig: {area_name(facts['area'])} bei {agency_name(facts['agency'])} seit "
                f"{german_date(facts['held_since'])} (fällig {german_date(alert.since)})")
    if alert.kind == "goal_overdue":
        return (f"Ziel überfällig: {facts['target']} ({GOAL_KINDS.get(facts['goal_kind'], facts['goal_kind'])}), "
                f"fällig am {german_date(facts['due'])}")
    waiting = facts["waiting_days"]
    tail = f"seit {waiting} Tagen ohne Anschluss" if waiting else "ohne Anschlussmaßnahme"
    return (f"Maßnahmenkette: {MEASURE_KINDS.get(facts['measure_kind'], facts['measure_kind'])} "
            f"({facts['provider']}) endet am {german_date(facts['ends'])} – {tail}")


ALERT_TITLES = {"gap": "Lücke", "handover_overdue": "Übergabe überfällig", "review_due": "Überprüfung",
                "goal_overdue": "Ziel überfällig", "measure_without_follow_up": "Maßnahmenkette"}


def _agencies(ids: list[str]) -> str:
    return ", ".join(agency_name(a) for a in ids)


def describe(envelope: Mapping[str, Any]) -> str:
    """One line on what an event says, for the timeline."""
    name, data = event_name(envelope), envelope["data"]
    match name:
        case "PersonRegistered":
            return (f"{data['municipality']}, Jahrgang {data['birth_year']}, aus {data['country_of_origin']}, "
                    f"eingereist {german_date(data['arrival_date'])}")
        case "ConsentRecorded":
            until = f", gültig bis {german_date(data['valid_until'])}" if data.get("valid_until") else ""
            return f"teilt mit: {_agencies(data['shared_with'])}; Zwecke: {', '.join(data['purposes'])}{until}"
        case "ConsentWithdrawn":
            return f"nicht mehr geteilt mit: {_agencies(data['shared_with'])}"
        case "ProfileCompleted" | "ReAssessmentCompleted":
            levels = ", ".join(f"{lang} {level}" for lang, level in data["language_levels"].items()) or "–"
            return (f"Sprachen: {levels}; Berufserfahrung {data['work_experience_years']} Jahre; "
                    f"Bedarf: {', '.join(data['support_needs']) or '–'}")
        case "IntegrationAgreementSigned":
            goals = "; ".join(f"{g['target']} bis {german_date(g['due'])}" for g in data["goals"])
            return f"Plan {data['plan_id']}: {goals}"
        case "MeasureAssigned":
            return (f"{MEASURE_KINDS.get(data['kind'], data['kind'])} bei {data['provider']}, "
                    f"{german_date(data['starts'])} – {german_date(data.get('ends'))}")
        case "MeasureCompleted":
            return f"Maßnahme {data['measure_id']} {OUTCOMES.get(data['outcome'], data['outcome'])}"
        case "GoalAchieved":
            return f"Ziel {data['goal_id']} des Plans {data['plan_id']}"
        case "LanguageLevelReached":
            certificate = f" ({data['certificate']})" if data.get("certificate") else ""
            return f"{data['language']} {data['level']}{certificate}"
        case "ResidenceTitleGranted":
            return (f"{data['title']}, {RESIDENCE_CATEGORIES.get(data['category'], data['category'])}, "
                    f"gültig bis {german_date(data.get('valid_until'))}")
        case "EmploymentStarted":
            hours = f", {data['hours_per_week']:g} Std./Woche" if data.get("hours_per_week") is not None else ""
            return f"{EMPLOYMENT_KINDS.get(data['kind'], data['kind'])}{hours}"
        case "CaseOpenedByAgency":
            domain = LEGAL_DOMAINS.get(data["legal_domain"], data["legal_domain"])
            return f"Bereich {area_name(data['area'])} ({domain})"
        case "HandedOverToAgency":
            return (f"Bereich {area_name(data['area'])} an {agency_name(data['to_agency'])} "
                    f"({LEGAL_DOMAINS.get(data['to_legal_domain'], data['to_legal_domain'])}): {data['reason']}")
        case "HandoverAccepted":
            return f"Übergabe {data['handover_id']}"
        case "HandoverRejected":
            return f"Übergabe {data['handover_id']}: {data['reason']}"
        case "CaseClosedByAgency":
            return (f"Bereich {area_name(data['area'])}: "
                    f"{AREA_CLOSURE_REASONS.get(data['reason'], data['reason'])}")
        case "CaseClosed":
            return CASE_CLOSURE_REASONS.get(data["reason"], data["reason"])
    return ""
