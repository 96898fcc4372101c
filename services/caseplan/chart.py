"""The responsibility chart of the person page: one lane per area, one bar per interval.

Drawn on the server as SVG (nothing to download in the browser) from the referral
service's answers: the intervals of `GET /v1/persons/{subject}/responsibility` and
the person's gaps of `GET /v1/gaps`. Bars are coloured by agency; gaps are red.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from html import escape
from typing import Any

from contracts import parse_rfc3339
from services.caseplan.caseload import BERLIN
from services.caseplan.labels import AGENCY_NAMES, AREA_NAMES, LEGAL_DOMAINS, agency_name, german_date, month_label

AGENCY_COLOURS = {
    "integration_center": "#1f5fa8",
    "job_center": "#2e7d32",
    "employment_agency": "#6a3d9a",
    "social_welfare_office": "#b8650a",
    "youth_office": "#00796b",
    "foreigners_office": "#5d4037",
}
GAP_COLOUR = "#d32f2f"
AREA_ORDER = ("case_management", "benefits", "labour_market", "youth")

WIDTH = 960
LABEL_W = 150
LANE_H = 38
BAR_H = 26
TOP = 28
RIGHT_PAD = 12
LEGEND_H = 26


@dataclass(frozen=True)
class Bar:
    area: str
    start: datetime
    end: datetime | None  # None: still open
    agency: str | None  # None: a gap
    label: str
    tooltip: str


def bars(responsibility: Mapping[str, Any], gaps: Sequence[Mapping[str, Any]]) -> list[Bar]:
    """The bars to draw: intervals of every area, then the person's gaps."""
    found = []
    for area, intervals in responsibility.get("areas", {}).items():
        for interval in intervals:
            domain = LEGAL_DOMAINS.get(interval["legal_domain"], interval["legal_domain"])
            name = agency_name(interval["agency"])
            found.append(Bar(area, parse_rfc3339(interval["from"]), _instant(interval["to"]), interval["agency"],
                             f"{name} ({domain})",
                             f"{AREA_NAMES.get(area, area)}: {name} ({domain}), {german_date(interval['from'])} – "
                             f"{german_date(interval['to']) if interval['to'] else 'offen'}"))
    for gap in gaps:
        found.append(Bar(gap["area"], parse_rfc3339(gap["since"]), _instant(gap.get("until")), None, "Lücke",
                         f"{AREA_NAMES.get(gap['area'], gap['area'])}: niemand zuständig seit "
                         f"{german_date(gap['since'])}"
                         + (f" bis {german_date(gap['until'])}" if gap.get("until") else " (offen)")
                         + f", zuletzt {agency_name(gap['last_agency'])}"))
    return found


def _instant(text: str | None) -> datetime | None:
    return parse_rfc3339(text) if text else None


def _ticks(start: datetime, end: datetime) -> list[date]:
    """First days of months (every month up to 18 months, else every quarter) in the range."""
    first, last = start.astimezone(BERLIN).date(), end.astimezone(BERLIN).date()
    months = (last.year - first.year) * 12 + last.month - first.month
    step = 1 if months <= 18 else 3 if months <= 60 else 12
    day = date(first.year, first.month, 1)
    ticks = []
    while day <= last:
        if (day.month - 1) % step == 0 and day >= first:
            ticks.append(day)
        day = date(day.year + day.month // 12, day.month % 12 + 1, 1)
    return ticks


def responsibility_svg(responsibility: Mapping[str, Any], gaps: Sequence[Mapping[str, Any]],
                       now: datetime) -> str | None:
    """The chart as an SVG element; None when nothing is known about the person's areas."""
    drawn = bars(responsibility, gaps)
    if not drawn:
        return None
    areas = [a for a in AREA_ORDER if any(b.area == a for b in drawn)]
    areas += sorted({b.area for b in drawn} - set(areas))
    start = min(b.start for b in drawn)
    end = max([now, *(b.end for b in drawn if b.end is not None)])
    span = max((end - start).total_seconds(), 86400.0)
    start -= timedelta(seconds=span * 0.02)
    end += timedelta(seconds=span * 0.02)
    plot_w = WIDTH - LABEL_W - RIGHT_PAD

    def x(instant: datetime) -> float:
        return LABEL_W + plot_w * (instant - start).total_seconds() / (end - start).total_seconds()

    height = TOP + LANE_H * len(areas) + 14 + LEGEND_H
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {height}" '
           f'width="100%" role="img" aria-labelledby="chart-title">',
           '<title id="chart-title">Zuständigkeit je Bereich über die Zeit</title>',
           '<defs><pattern id="gap-hatch" width="8" height="8" patternUnits="userSpaceOnUse" '
           'patternTransform="rotate(45)"><rect width="8" height="8" fill="#d32f2f"/>'
           '<rect width="3" height="8" fill="#ef9a9a"/></pattern></defs>']
    for tick in _ticks(start, end):
        tx = x(datetime(tick.year, tick.month, tick.day, tzinfo=BERLIN))
        out.append(f'<line x1="{tx:.1f}" y1="{TOP - 6}" x2="{tx:.1f}" y2="{TOP + LANE_H * len(areas)}" '
                   'stroke="#d0d4da" stroke-width="1"/>')
        if tx < WIDTH - 56:  # a label that would not fit is left out; its line stays
            out.append(f'<text x="{tx + 3:.1f}" y="{TOP - 10}" class="tick">{escape(month_label(tick))}</text>')
    for row, area in enumerate(areas):
        y = TOP + row * LANE_H
        out.append(f'<rect x="0" y="{y}" width="{WIDTH}" height="{LANE_H}" fill="{"#f6f7f9" if row % 2 else "#fff"}"/>')
        out.append(f'<text x="8" y="{y + LANE_H / 2 + 5}" class="lane">{escape(AREA_NAMES.get(area, area))}</text>')
        for bar in (b for b in drawn if b.area == area):
            left, right = x(bar.start), x(bar.end or now)
            width = max(right - left, 2.0)
            fill = "url(#gap-hatch)" if bar.agency is None else AGENCY_COLOURS.get(bar.agency, "#777")
            kind = "gap" if bar.agency is None else "interval"
            out.append(f'<g class="{kind}"><title>{escape(bar.tooltip)}</title>'
                       f'<rect x="{left:.1f}" y="{y + (LANE_H - BAR_H) / 2}" width="{width:.1f}" height="{BAR_H}" '
                       f'rx="3" fill="{fill}" stroke="{GAP_COLOUR if bar.agency is None else "none"}"/>')
            if width > 7.2 * len(bar.label) + 10:
                out.append(f'<text x="{left + 6:.1f}" y="{y + LANE_H / 2 + 4.5}" class="bar-label">'
                           f'{escape(bar.label)}</text>')
            out.append("</g>")
    now_x = x(now)
    out.append(f'<line x1="{now_x:.1f}" y1="{TOP - 4}" x2="{now_x:.1f}" y2="{TOP + LANE_H * len(areas)}" '
               'stroke="#222" stroke-dasharray="4 3"/>')
    out.append(f'<text x="{now_x - 4:.1f}" y="{TOP + LANE_H * len(areas) + 12}" class="tick" '
               'text-anchor="end">heute</text>')
    out.append(_legend(TOP + LANE_H * len(areas) + 18, {b.agency for b in drawn}))
    out.append("</svg>")
    return "".join(out)


def _legend(y: float, shown: set[str | None]) -> str:
    items = [(AGENCY_COLOURS[a], name) for a, name in AGENCY_NAMES.items() if a in shown]
    items.append(("url(#gap-hatch)", "Lücke (niemand zuständig)"))
    parts, x = [], 8.0
    for fill, name in items:
        parts.append(f'<rect x="{x:.0f}" y="{y}" width="14" height="14" rx="2" fill="{fill}"/>'
                     f'<text x="{x + 19:.0f}" y="{y + 12}" class="legend">{escape(name)}</text>')
        x += 19 + 7.0 * len(name) + 22
    return f'<g class="legend">{"".join(parts)}</g>'
