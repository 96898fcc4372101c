"""The steering group's dashboard (German): the figures as charts and tables, suppressed cells marked.

A browser cannot send a bearer header, so the dashboard also takes the token
from an HttpOnly cookie that its sign-in form sets; the same roles as the API
may read it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from jinja2 import Environment
from markupsafe import Markup

from kim.auth import AuthError, Principal
from services.reporting.api import READERS, FromMonth, Municipality, ToMonth, parse_query
from services.reporting.application import Query, Reporting, to_csv
from services.reporting.charts import bar_chart, german_number, line_chart
from services.reporting.domain import KPI_BY_NAME, TOTAL, month_name, parse_month

router = APIRouter(include_in_schema=False)

COOKIE = "kim_token"
AREAS = {"case_management": "Fallmanagement", "benefits": "Leistungen", "labour_market": "Arbeitsmarkt",
         "youth": "Jugendhilfe", TOTAL: "alle Bereiche"}
AGENCIES = {"integration_center": "Integrationszentrum", "job_center": "Jobcenter",
            "employment_agency": "Agentur für Arbeit", "foreigners_office": "Ausländerbehörde",
            "youth_office": "Jugendamt", "social_welfare_office": "Sozialamt", TOTAL: "alle Behörden"}
KINDS = {"employment": "sozialversicherungspflichtig", "minijob": "Minijob", "apprenticeship": "Ausbildung",
         "internship": "Praktikum", "self_employed": "selbständig", "integration_course": "Integrationskurs",
         "language_course": "Sprachkurs", "fim": "FIM", "work_opportunity": "Arbeitsgelegenheit",
         "recognition_counselling": "Anerkennungsberatung", "psychosocial_counselling": "psychosoziale Beratung",
         "other": "sonstige", TOTAL: "insgesamt"}
LEVELS = ("A1", "A2", "B1", "B2", "C1")


def _label(mapping: dict[str, str], value: str) -> str:
    return mapping.get(value, value)


SHORT = {"integration_center": "IZ", "job_center": "JC", "employment_agency": "AA", "foreigners_office": "ABH",
         "youth_office": "JA", "social_welfare_office": "SozA"}


def _route(value: str, names: dict[str, str] = AGENCIES) -> str:
    if value == TOTAL:
        return "alle Wege"
    sender, _, receiver = value.partition(">")
    return f"{_label(names, sender)} → {_label(names, receiver)}"


class _Cells:
    """Lookup of published cells by (kpi, month, municipality, third dimension)."""

    def __init__(self, cells: list[dict[str, Any]]) -> None:
        self.by_key: dict[tuple[str, str, str, str | None], dict[str, Any]] = {}
        for cell in cells:
            kpi = KPI_BY_NAME[cell["kpi"]]
            dims = cell["dims"]
            third = dims.get(kpi.dimension) if kpi.dimension else None
            self.by_key[(cell["kpi"], dims["month"], dims["municipality"], third)] = cell

    def point(self, kpi: str, month: str, municipality: str, third: str | None = TOTAL) -> tuple[float | None, bool]:
        if KPI_BY_NAME[kpi].dimension is None:
            third = None
        cell = self.by_key.get((kpi, month, municipality, third))
        if cell is None:
            return (0 if KPI_BY_NAME[kpi].measure in ("persons", "amount") else None), False
        return cell["value"], cell["suppressed"]

    def values(self, kpi: str, municipality: str, months: list[str]) -> list[str]:
        """The values of the third dimension that occur, totals last."""
        found = {k[3] for k in self.by_key if k[0] == kpi and k[2] == municipality and k[1] in months}
        return sorted(v for v in found if v not in (None, TOTAL)) + ([TOTAL] if TOTAL in found else [])

    def text(self, kpi: str, month: str, municipality: str, third: str | None = TOTAL) -> Markup:
        value, suppressed = self.point(kpi, month, municipality, third)
        if suppressed:
            return Markup('<span class="suppressed" title="unterdrückt: weniger als 5 Personen oder aus '
                          'Summen ableitbar">●</span>')
        return Markup("–") if value is None else Markup(german_number(value))


PAGE = Environment(autoescape=True).from_string("""<!doctype html>
<html lang="de"><head><meta charset="utf-8"><title>KIM Kennzahlen</title>
<style>
body{font-family:sans-serif;margin:1.5em;max-width:1100px;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}.suppressed{color:#999}.note{color:#555;font-size:.9em}
form.filter{background:#f4f4f4;padding:.6em;display:flex;gap:1em;align-items:end;flex-wrap:wrap}
</style></head><body>
<h1>KIM – Kennzahlen für die Lenkungsgruppe</h1>
<p class="note">Angemeldet: {{ principal.sub }} ({{ principal.agency }}). Personen werden je Zelle einmal gezählt.
<span class="suppressed">●</span> = unterdrückt (Geheimhaltung: weniger als 5 Personen, oder aus Summen und anderen
Zellen ableitbar). „–“ = keine Angabe.</p>
<form class="filter" method="get" action="/">
<label>Von<br><input name="from" value="{{ first }}" pattern="[0-9]{4}-[0-9]{2}" size="8"></label>
<label>Bis<br><input name="to" value="{{ last }}" pattern="[0-9]{4}-[0-9]{2}" size="8"></label>
<label>Gemeinde<br><select name="municipality">
{% for m in municipalities %}<option value="{{ m }}" {% if m == municipality %}selected{% endif %}>
{{ 'Landkreis gesamt' if m == '*' else m }}</option>{% endfor %}</select></label>
<button>Anzeigen</button>
<a href="/export.csv?from={{ first }}&to={{ last }}&municipality={{ municipality | urlencode }}">CSV herunterladen</a>
</form>
{% if not months %}<p>Noch keine Kennzahlen.</p>{% else %}
<h2>Aktive Personen je Bereich</h2>{{ charts.active }}
<h2>Fallbestand und Betreuungsschlüssel ({{ last }})</h2>
<table><tr><th>Behörde (Fallmanagement)</th><th>Personen am Monatsende</th><th>Personen je Fallmanager (VZÄ)</th></tr>
{% for agency, label in caseload %}<tr><td>{{ label }}</td><td>{{ cells.text('caseload', last, municipality, agency) }}</td>
<td>{{ cells.text('caseload_per_case_manager', last, '*', agency) if municipality == '*' else '–' }}</td></tr>{% endfor %}
</table>
{% if not staffed %}<p class="note">Betreuungsschlüssel: die Zahl der Fallmanager je Behörde steht nicht in der
Bezirkskonfiguration ([reporting.case_managers]).</p>{% endif %}
<h2>Übergaben zwischen Behörden</h2>{{ charts.handovers }}
<table><tr><th>Weg ({{ last }})</th><th>abgeschlossen (Personen)</th><th>Dauer Median (Tage)</th><th>90. Perzentil (Tage)</th></tr>
{% for route, label in routes %}<tr><td>{{ label }}</td><td>{{ cells.text('handovers_completed', last, municipality, route) }}</td>
<td>{{ cells.text('handover_days_median', last, municipality, route) }}</td>
<td>{{ cells.text('handover_days_p90', last, municipality, route) }}</td></tr>{% endfor %}</table>
<h2>Zuständigkeitslücken und überfällige Übergaben</h2>{{ charts.gaps }}
<table><tr><th>Bereich ({{ last }})</th><th>neue Lücken</th><th>offen am Monatsende</th><th>Lückentage</th>
<th>überfällige Übergaben</th></tr>
{% for area, label in areas %}<tr><td>{{ label }}</td><td>{{ cells.text('gaps_opened', last, municipality, area) }}</td>
<td>{{ cells.text('gaps_open', last, municipality, area) }}</td><td>{{ cells.text('gap_days', last, municipality, area) }}</td>
<td>{{ cells.text('handovers_overdue', last, municipality, area) }}</td></tr>{% endfor %}</table>
<h2>Deutsch: Kursbedarf je Niveau (Bedarfsplanung Volkshochschule, {{ last }})</h2>{{ charts.courses }}
<table><tr><th>Niveau</th>{% for level in levels %}<th>{{ level }}</th>{% endfor %}<th>insgesamt</th></tr>
<tr><td>Kursbedarf (Personen)</td>{% for level in levels + ['*'] %}<td>{{ cells.text('course_demand', last, municipality, level) }}</td>{% endfor %}</tr>
<tr><td>erreicht im Monat</td>{% for level in levels + ['*'] %}<td>{{ cells.text('language_level_reached', last, municipality, level) }}</td>{% endfor %}</tr></table>
<h2>Maßnahmen und Beschäftigung</h2>{{ charts.measures }}
<table><tr><th>Art ({{ last }})</th><th>Maßnahmen begonnen</th><th>Maßnahmen abgeschlossen</th><th>Beschäftigung aufgenommen</th></tr>
{% for kind, label in kinds %}<tr><td>{{ label }}</td><td>{{ cells.text('measures_started', last, municipality, kind) }}</td>
<td>{{ cells.text('measures_completed', last, municipality, kind) }}</td>
<td>{{ cells.text('employment_started', last, municipality, kind) }}</td></tr>{% endfor %}</table>
<p>Wartezeit zwischen zwei Maßnahmen (Median, {{ last }}): {{ cells.text('measure_wait_days_median', last, municipality) }} Tage</p>
<h2>Gemeinden im Vergleich ({{ last }})</h2>
<table><tr><th>Gemeinde</th><th>aktive Personen</th><th>Fallbestand</th><th>offene Lücken</th><th>Kursbedarf</th>
<th>Beschäftigung aufgenommen</th></tr>
{% for m in municipalities %}<tr><td>{{ 'Landkreis gesamt' if m == '*' else m }}</td>
<td>{{ cells.text('persons_active', last, m) }}</td><td>{{ cells.text('caseload', last, m) }}</td>
<td>{{ cells.text('gaps_open', last, m) }}</td><td>{{ cells.text('course_demand', last, m) }}</td>
<td>{{ cells.text('employment_started', last, m) }}</td></tr>{% endfor %}</table>
{% endif %}
<form method="post" action="/abmelden"><button>Abmelden</button></form>
</body></html>""")

SIGN_IN = Environment(autoescape=True).from_string("""<!doctype html>
<html lang="de"><head><meta charset="utf-8"><title>KIM Kennzahlen – Anmeldung</title></head>
<body style="font-family:sans-serif;margin:2em;max-width:40em">
<h1>KIM – Kennzahlen für die Lenkungsgruppe</h1>
{% if problem %}<p style="color:#a00">{{ problem }}</p>{% endif %}
<p>Bitte mit einem Zugangstoken der Rolle Lenkungsgruppe (<code>steering_group</code>) oder Prüfung
(<code>auditor</code>) anmelden.</p>
<form method="post" action="/anmelden"><textarea name="token" rows="4" cols="70" required></textarea><br>
<button>Anmelden</button></form></body></html>""")


def _principal(request: Request) -> tuple[Principal | None, str | None]:
    """The caller from the bearer header or the sign-in cookie; or why there is none."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else request.cookies.get(COOKIE, "")
    if not token:
        return None, None
    try:
        return request.app.state.token_verifier.verify(token), None
    except AuthError as exc:
        return None, f"Anmeldung nicht möglich: {exc}"


def _forbidden(principal: Principal) -> HTMLResponse:
    return HTMLResponse(f"<p>Die Kennzahlen sehen nur die Rollen {', '.join(READERS)}; "
                        f"Ihr Token hat: {', '.join(sorted(principal.roles)) or 'keine'}.</p>", status_code=403)


def _reader(request: Request) -> Principal | Response:
    principal, problem = _principal(request)
    if principal is None:
        return HTMLResponse(SIGN_IN.render(problem=problem), status_code=401)
    if not principal.has_any(*READERS):
        return _forbidden(principal)
    return principal


@router.get("/", response_class=HTMLResponse)
def dashboard(request: Request, first: FromMonth = None, last: ToMonth = None,
              municipality: Municipality = None) -> Response:
    principal = _reader(request)
    if isinstance(principal, Response):
        return principal
    reporting: Reporting = request.app.state.reporting
    query = parse_query(first, last, None)
    published = reporting.published()
    all_months = sorted({c["dims"]["month"] for c in published})
    end = query.last if query.last is not None else (parse_month(all_months[-1]) if all_months else None)
    start = query.first if query.first is not None else (end - 11 if end is not None else None)
    months = [month_name(m) for m in range(start, end + 1)] if start is not None and end is not None else []
    place = municipality or TOTAL
    cells = _Cells(reporting.query(Query(start, end)))
    municipalities = [TOTAL] + sorted({c["dims"]["municipality"] for c in published} - {TOTAL})
    last_month = months[-1] if months else ""
    charts: dict[str, Markup] = {}
    if months:
        charts["active"] = Markup(line_chart("Aktive Personen je Bereich", months, [
            (_label(AREAS, area), [cells.point("persons_active", m, place, area) for m in months])
            for area in cells.values("persons_active", place, months)]))
        charts["handovers"] = Markup(line_chart("Abgeschlossene Übergaben je Weg (Personen)", months, [
            (_route(route, SHORT), [cells.point("handovers_completed", m, place, route) for m in months])
            for route in cells.values("handovers_completed", place, months)]))
        charts["gaps"] = Markup(line_chart("Lücken und überfällige Übergaben (alle Bereiche)", months, [
            ("neue Lücken", [cells.point("gaps_opened", m, place) for m in months]),
            ("offene Lücken am Monatsende", [cells.point("gaps_open", m, place) for m in months]),
            ("überfällige Übergaben", [cells.point("handovers_overdue", m, place) for m in months])]))
        charts["courses"] = Markup(bar_chart("Kursbedarf Deutsch je Niveau", [
            (level, cells.point("course_demand", last_month, place, level)) for level in LEVELS]))
        charts["measures"] = Markup(line_chart("Maßnahmen und Beschäftigung", months, [
            ("Maßnahmen begonnen", [cells.point("measures_started", m, place) for m in months]),
            ("Maßnahmen abgeschlossen", [cells.point("measures_completed", m, place) for m in months]),
            ("Beschäftigung aufgenommen", [cells.point("employment_started", m, place) for m in months])]))
    html = PAGE.render(
        principal=principal, first=months[0] if months else "", last=last_month, municipality=place,
        staffed=bool(reporting.case_managers),
        municipalities=municipalities, months=months, cells=cells, charts=charts, levels=list(LEVELS),
        caseload=[(a, _label(AGENCIES, a)) for a in cells.values("caseload", place, [last_month])],
        routes=[(r, _route(r)) for r in cells.values("handovers_completed", place, [last_month])],
        areas=[(a, _label(AREAS, a)) for a in cells.values("gaps_open", place, [last_month])
               or cells.values("gaps_opened", place, [last_month])],
        kinds=[(k, _label(KINDS, k)) for k in sorted(set(cells.values("measures_started", place, [last_month]))
                                                     | set(cells.values("employment_started", place, [last_month])),
                                                     key=lambda k: (k == TOTAL, k))],
    )
    return HTMLResponse(html)


@router.get("/export.csv")
def export(request: Request, first: FromMonth = None, last: ToMonth = None,
           municipality: Municipality = None) -> Response:
    """The dashboard's CSV download: `/v1/kpis.csv` for a signed-in browser."""
    principal = _reader(request)
    if isinstance(principal, Response):
        return principal
    # The district view downloads every municipality, a municipality's view its own cells.
    cells = request.app.state.reporting.query(parse_query(first, last, None if municipality == TOTAL else municipality))
    return PlainTextResponse(to_csv(cells), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": 'attachment; filename="kim-kennzahlen.csv"'})


@router.post("/anmelden")
def sign_in(request: Request, token: Annotated[str, Form()]) -> Response:
    try:
        request.app.state.token_verifier.verify(token.strip())
    except AuthError as exc:
        return HTMLResponse(SIGN_IN.render(problem=f"Anmeldung nicht möglich: {exc}"), status_code=401)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, token.strip(), httponly=True, samesite="strict")
    return response


@router.post("/abmelden")
def sign_out() -> Response:
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(COOKIE)
    return response
