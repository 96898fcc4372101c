"""Pure domain of the reporting service: the figures of the Kennzahlensystem (interfaces.md §6a).

One implementation, used by the live service, `kim audit replay` and the benchmarks:

1. `record_of` keeps what the figures read of an event; a `PersonLog` holds one
   person's kept events, deduplicated by `(source, id)`.
2. `assess` turns a person's log into their `Contribution` to the figures (as of
   an instant, with what was recorded by another), using the referral domain's
   `compute` for responsibility, handovers and gaps.
3. `Tally` sums contributions (and takes them back when a person is recomputed);
   `Tally.cells` gives the raw cells; `services.reporting.disclosure.publish`
   applies statistical disclosure control.

Definitions (months are calendar months in Europe/Berlin; a person counts once per cell):

- `persons_active` (area): some agency held the area during the month.
- `persons_by_agency` (agency): the agency held some area of the person during the month
  (without a total over agencies: it would repeat `persons_active`'s total over areas).
- `caseload` (agency): the agency held case management at the end of the month
  (in the current month: at the as-of instant); the Betreuungsschlüssel
  `caseload_per_case_manager` divides it by the district's case managers (FTE).
- `handovers_completed`, `handover_days_median`, `handover_days_p90` (route
  `from>to`): handovers accepted in the month; days from the first offer or
  rule expectation to the acceptance.
- `handovers_overdue` (area): handovers whose deadline passed in the month.
- `gaps_opened` (area): gaps opened in the month; `gaps_open`: gaps open at the
  end of the month; `gap_days`: calendar days (Berlin) on which a gap was open,
  summed over persons (a sum: `*` over areas is the sum of the areas).
- `language_level_reached` (level): German (`de`) levels reached in the month.
- `course_demand` (level): registered persons whose case is not closed, by the
  German course they need next at the end of the month (one level above their
  best German level from profiles and certificates; A1 without one; none from C1).
- `measures_started` (kind, by the measure's `starts` date), `measures_completed`
  (kind, outcome `completed`), `measure_wait_days_median`: days between the end of
  one measure and the start of the next (Maßnahmenkette), by the month the next starts.
- `employment_started` (kind).

Every cell has the dimensions `month` and `municipality` (from the person's
`PersonRegistered`, `unbekannt` without one) and, where named above, one more;
`*` is the total over a dimension.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo

import orjson

from services.referral.domain import Fact, PersonState, compute
from services.referral.rules import CEFR_LEVELS, RulesConfig

BERLIN = ZoneInfo("Europe/Berlin")
UTC = timezone.utc
TOTAL = "*"
UNKNOWN_MUNICIPALITY = "unbekannt"
_EPSILON = timedelta(microseconds=1)

Measure = Literal["persons", "amount", "median", "p90", "ratio"]


@dataclass(frozen=True)
class Kpi:
    """One figure: its third dimension (if any), what its value is, and labels for the dashboard."""

    name: str
    dimension: str | None
    measure: Measure
    additive: bool
    """Whether `*` of the third dimension is the sum of its values (a linear relation for SDC)."""
    title: str
    unit: str
    series: str
    """The tally series the value is computed from."""
    third_total: bool = True
    """Whether the third dimension has a total `*` (not where it would repeat another figure's cell)."""


KPIS: tuple[Kpi, ...] = (
    Kpi("persons_active", "area", "persons", False, "Aktive Personen je Bereich", "Personen", "persons_active"),
    # Its total over agencies would be persons_active's total over areas, published twice.
    Kpi("persons_by_agency", "agency", "persons", False, "Aktive Personen je Behörde", "Personen",
        "persons_by_agency", third_total=False),
    Kpi("caseload", "agency", "persons", True, "Fallbestand im Case-Management (Monatsende)", "Personen",
        "caseload"),
    Kpi("caseload_per_case_manager", "agency", "ratio", False, "Betreuungsschlüssel (Personen je Fallmanager)",
        "Personen je VZÄ", "caseload"),
    Kpi("handovers_completed", "route", "persons", False, "Abgeschlossene Übergaben je Weg", "Personen",
        "handovers_completed"),
    Kpi("handover_days_median", "route", "median", False, "Dauer der Übergaben (Median)", "Tage", "handover_days"),
    Kpi("handover_days_p90", "route", "p90", False, "Dauer der Übergaben (90. Perzentil)", "Tage",
        "handover_days"),
    Kpi("handovers_overdue", "area", "persons", False, "Überfällige Übergaben", "Personen", "handovers_overdue"),
    Kpi("gaps_opened", "area", "persons", False, "Neu entstandene Zuständigkeitslücken", "Personen",
        "gaps_opened"),
    Kpi("gaps_open", "area", "persons", False, "Offene Zuständigkeitslücken (Monatsende)", "Personen",
        "gaps_open"),
    Kpi("gap_days", "area", "amount", True, "Lückentage", "Tage", "gap_days"),
    Kpi("language_level_reached", "level", "persons", False, "Erreichte Deutsch-Niveaus", "Personen",
        "language_level_reached"),
    Kpi("course_demand", "level", "persons", True, "Kursbedarf Deutsch je Niveau (Bedarfsplanung VHS)",
        "Personen", "course_demand"),
    Kpi("measures_started", "kind", "persons", False, "Begonnene Maßnahmen", "Personen", "measures_started"),
    Kpi("measures_completed", "kind", "persons", False, "Abgeschlossene Maßnahmen", "Personen",
        "measures_completed"),
    Kpi("measure_wait_days_median", None, "median", False, "Wartezeit zwischen Maßnahmen (Median)", "Tage",
        "measure_wait_days"),
    Kpi("employment_started", "kind", "persons", False, "Aufgenommene Beschäftigungen", "Personen",
        "employment_started"),
)
KPI_BY_NAME: Mapping[str, Kpi] = {kpi.name: kpi for kpi in KPIS}
_WITHOUT_TOTAL = frozenset(kpi.series for kpi in KPIS if not kpi.third_total)
DIMENSIONS: tuple[str, ...] = ("month", "municipality", "area", "agency", "route", "level", "kind")
"""Every dimension a cell can have, in the order of the CSV columns."""

# --- months ----------------------------------------------------------------------------


def month_index(instant: datetime) -> int:
    """The Berlin calendar month of an instant, as year * 12 + month - 1."""
    local = instant.astimezone(BERLIN)
    return local.year * 12 + local.month - 1


def month_of_date(day: date) -> int:
    return day.year * 12 + day.month - 1


def month_name(index: int) -> str:
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def parse_month(text: str) -> int:
    """`YYYY-MM` to a month index; ValueError otherwise."""
    if len(text) != 7 or text[4] != "-" or not (text[:4].isdigit() and text[5:].isdigit()):
        raise ValueError(text)
    year, month = int(text[:4]), int(text[5:])
    if not 1 <= month <= 12:
        raise ValueError(text)
    return year * 12 + month - 1


@lru_cache(maxsize=4096)
def month_start(index: int) -> datetime:
    """The first instant of the month (Berlin), in UTC."""
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=BERLIN).astimezone(UTC)


def _local_date(instant: datetime) -> date:
    return instant.astimezone(BERLIN).date()


# --- what the figures read of an event ---------------------------------------------------

REFERRAL_EVENTS = frozenset({
    "CaseOpenedByAgency", "HandedOverToAgency", "HandoverAccepted", "HandoverRejected",
    "CaseClosedByAgency", "CaseClosed", "ResidenceTitleGranted", "LanguageLevelReached",
})
"""Event types the referral domain's fold reads (as services.referral.projections)."""

KEPT_FIELDS: Mapping[str, tuple[str, ...] | None] = {
    **{name: None for name in REFERRAL_EVENTS},
    "PersonRegistered": ("municipality",),
    "ProfileCompleted": ("language_levels",),
    "ReAssessmentCompleted": ("language_levels",),
    "MeasureAssigned": ("measure_id", "kind", "starts", "ends"),
    "MeasureCompleted": ("measure_id", "outcome"),
    "EmploymentStarted": ("kind",),
}
"""Event types the figures read and the data fields kept of each (None: all); others are not kept."""


@dataclass(frozen=True, slots=True)
class Record:
    """What the figures keep of one event. Times are UTC."""

    name: str
    source: str
    id: str
    time: datetime
    recorded: datetime
    data: Mapping[str, Any]

    @property
    def agency(self) -> str | None:
        """The agency of `source`; None for KIM services (`urn:kim:service:…`)."""
        agency = self.source.split(":")[2]
        return None if agency == "service" else agency


def record_of(name: str, source: str, event_id: str, time: datetime, recorded: datetime,
              data: Mapping[str, Any]) -> Record | None:
    """The record the figures keep of an event, None for a type they do not read."""
    if name not in KEPT_FIELDS:
        return None
    fields = KEPT_FIELDS[name]
    kept = dict(data) if fields is None else {f: data[f] for f in fields if f in data}
    return Record(name, source, event_id, time.astimezone(UTC), recorded.astimezone(UTC), kept)


class PersonLog:
    """One person's kept events; adding an event twice changes nothing."""

    __slots__ = ("subject", "records")

    def __init__(self, subject: str, records: Iterable[Record] = ()) -> None:
        self.subject = subject
        self.records: dict[tuple[str, str], Record] = {}
        for record in records:
            self.add(record)

    def copy(self) -> PersonLog:
        log = PersonLog(self.subject)
        log.records = dict(self.records)
        return log

    def add(self, record: Record) -> bool:
        """Keep `record`; False if an event with its `(source, id)` is kept already."""
        key = (record.source, record.id)
        kept = self.records.get(key)
        if kept is None:
            self.records[key] = record
            return True
        # Copies normally agree; if not, the choice must not depend on the order of arrival.
        if kept != record and _order(record) < _order(kept):
            self.records[key] = record
        return False


def _order(record: Record) -> tuple[datetime, datetime, str, bytes]:
    return record.time, record.recorded, record.name, orjson.dumps(record.data, option=orjson.OPT_SORT_KEYS)


# --- one person's contribution ----------------------------------------------------------

CellKey = tuple[str, tuple[str, ...]]
"""(series, (municipality[, value of the third dimension]))."""


@dataclass(frozen=True)
class Contribution:
    """What one person adds to the tally.

    `spans`: the person counts in the series' cell in every month from a to b;
    `amounts`: an amount in one month; `samples`: values of a distribution in one
    month. The total `*` of the third dimension is included (each person once);
    the municipality total is the tally's, since a person has one municipality.
    """

    spans: tuple[tuple[CellKey, int, int], ...] = ()
    amounts: tuple[tuple[CellKey, int, int], ...] = ()
    samples: tuple[tuple[CellKey, int, tuple[int, ...]], ...] = ()


@dataclass(frozen=True)
class Assessment:
    state: PersonState
    contribution: Contribution
    valid_until: datetime | None
    """When the contribution changes by the passing of time alone (for a live tally); None: never."""


class _Collector:
    """One person's memberships, before margins are added and months merged into spans."""

    def __init__(self, municipality: str) -> None:
        self.municipality = municipality
        self.spans: dict[tuple[str, str | None], list[tuple[int, int]]] = defaultdict(list)
        self.amounts: dict[tuple[str, str | None, int], int] = defaultdict(int)
        self.samples: dict[tuple[str, str | None, int], list[int]] = defaultdict(list)

    def span(self, series: str, value: str | None, first: int, last: int) -> None:
        if first <= last:
            self.spans[(series, value)].append((first, last))

    def point(self, series: str, value: str | None, month: int) -> None:
        self.spans[(series, value)].append((month, month))

    def amount(self, series: str, value: str | None, month: int, amount: int) -> None:
        self.amounts[(series, value, month)] += amount

    def sample(self, series: str, value: str | None, month: int, sample: int) -> None:
        self.samples[(series, value, month)].append(sample)

    def _dims(self, value: str | None) -> tuple[str, ...]:
        return (self.municipality,) if value is None else (self.municipality, value)

    def contribution(self) -> Contribution:
        # The tally only adds, so the order of the entries does not matter. The municipality
        # total is the tally's: each person has one municipality, so it is a sum.
        spans: list[tuple[CellKey, int, int]] = []
        totals: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for (series, value), ranges in self.spans.items():
            merged = _merge(ranges)
            if value is not None and series not in _WITHOUT_TOTAL:
                totals[series].extend(merged)
            key = (series, self._dims(value))
            spans.extend((key, a, b) for a, b in merged)
        for series, ranges in totals.items():
            key = (series, self._dims(TOTAL))
            spans.extend((key, a, b) for a, b in _merge(ranges))
        amounts: dict[tuple[CellKey, int], int] = defaultdict(int)
        for (series, value, month), amount in self.amounts.items():
            amounts[((series, self._dims(value)), month)] += amount
            if value is not None:
                amounts[((series, self._dims(TOTAL)), month)] += amount
        samples: dict[tuple[CellKey, int], list[int]] = defaultdict(list)
        for (series, value, month), values in self.samples.items():
            samples[((series, self._dims(value)), month)].extend(values)
            if value is not None:
                samples[((series, self._dims(TOTAL)), month)].extend(values)
        return Contribution(
            spans=tuple(spans),
            amounts=tuple((key, month, amount) for (key, month), amount in amounts.items()),
            samples=tuple((key, month, tuple(values)) for (key, month), values in samples.items()),
        )


def _merge(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Union of inclusive month ranges, so that a person counts once per month."""
    merged: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if merged and a <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def facts_of(subject: str, log: PersonLog) -> list[Fact]:
    """The referral domain's facts among a person's records (agency events of the types it reads)."""
    return [Fact((r.source, r.id), subject, r.name, agency, r.time, r.recorded, r.data)
            for r in log.records.values() if r.name in REFERRAL_EVENTS and (agency := r.agency) is not None]


def assess(log: PersonLog, rules: RulesConfig, now: datetime, as_of: datetime | None = None,
           known_at: datetime | None = None) -> Assessment:
    """A person's responsibility state and contribution at `as_of` (default `now`), counting what was
    recorded by `known_at`."""
    limit = as_of if as_of is not None else now
    state = compute(facts_of(log.subject, log), rules, now, as_of=as_of, known_at=known_at)
    known = [r for r in log.records.values() if known_at is None or r.recorded <= known_at]
    records = sorted((r for r in known if r.time <= limit), key=lambda r: (r.time, r.recorded, r.source, r.id))
    registrations = [r for r in records if r.name == "PersonRegistered"]
    municipality = str(registrations[-1].data.get("municipality") or UNKNOWN_MUNICIPALITY) if registrations \
        else UNKNOWN_MUNICIPALITY
    last = month_index(limit)
    collect = _Collector(municipality)
    open_gap = _responsibility(collect, state, last)
    _gaps(collect, state, limit, last)
    _language(collect, records, registrations, state, limit, last)
    _measures(collect, records, limit)
    for record in records:
        if record.name == "EmploymentStarted":
            collect.point("employment_started", str(record.data.get("kind")), month_index(record.time))
    # Figures move with time alone at month ends, at midnight while a gap is open (gap days),
    # at the referral state's deadlines and when a known event becomes effective.
    candidates = [month_start(last + 1)]
    if open_gap:
        candidates.append(datetime.combine(_local_date(limit) + timedelta(days=1), datetime.min.time(),
                                           BERLIN).astimezone(UTC))
    if state.next_deadline is not None:
        candidates.append(state.next_deadline)
    candidates.extend(r.time for r in known if r.time > limit)
    return Assessment(state, collect.contribution(), min(candidates))


def _end_of_month_span(since: datetime, until: datetime | None, last: int) -> tuple[int, int] | None:
    """Months at whose end `[since, until)` holds; the current month (`last`) counts while it is open."""
    first = month_index(since)
    if until is None:
        return first, last
    end = min(month_index(until) - 1, last - 1)
    return (first, end) if first <= end else None


def _responsibility(collect: _Collector, state: PersonState, last: int) -> bool:
    """persons_active, persons_by_agency, caseload, handovers; True if a gap is open."""
    for area, intervals in state.areas.items():
        for interval in intervals:
            first = month_index(interval.from_)
            end = last if interval.to is None else min(last, month_index(interval.to - _EPSILON))
            collect.span("persons_active", area, first, end)
            collect.span("persons_by_agency", interval.agency, first, end)
            if area == "case_management":
                held = _end_of_month_span(interval.from_, interval.to, last)
                if held is not None:
                    collect.span("caseload", interval.agency, *held)
    started = {h.handover_id: h.offered_at for h in state.handovers + state.replaced_handovers}
    for handover in state.handovers + state.replaced_handovers:
        if handover.overdue_since is not None and month_index(handover.overdue_since) <= last:
            collect.point("handovers_overdue", handover.area, month_index(handover.overdue_since))
        if handover.status != "accepted" or handover.resolved_at is None:
            continue
        month = month_index(handover.resolved_at)
        route = f"{handover.from_agency}>{handover.to_agency}"
        first_offer = min(handover.offered_at, started.get(handover.replaces or "", handover.offered_at))
        collect.point("handovers_completed", route, month)
        collect.sample("handover_days", route, month, int((handover.resolved_at - first_offer).total_seconds()))
    return any(gap.until is None for gap in state.gaps)


def _gaps(collect: _Collector, state: PersonState, limit: datetime, last: int) -> None:
    days: dict[str, list[tuple[date, date]]] = defaultdict(list)
    for gap in state.gaps:
        collect.point("gaps_opened", gap.area, month_index(gap.since))
        held = _end_of_month_span(gap.since, gap.until, last)
        if held is not None:
            collect.span("gaps_open", gap.area, *held)
        last_moment = gap.until - _EPSILON if gap.until is not None else limit
        days[gap.area].append((_local_date(gap.since), _local_date(last_moment)))
    for area, ranges in days.items():
        for first, end in _merge_days(ranges):
            day = first
            while day <= end:  # split the days at month boundaries
                month_end = date(day.year + day.month // 12, day.month % 12 + 1, 1) - timedelta(days=1)
                stop = min(end, month_end)
                collect.amount("gap_days", area, month_of_date(day), (stop - day).days + 1)
                day = stop + timedelta(days=1)


def _merge_days(ranges: list[tuple[date, date]]) -> list[tuple[date, date]]:
    merged: list[tuple[date, date]] = []
    for a, b in sorted(ranges):
        if merged and a <= merged[-1][1] + timedelta(days=1):
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def _language(collect: _Collector, records: list[Record], registrations: list[Record], state: PersonState,
              limit: datetime, last: int) -> None:
    """language_level_reached and course_demand."""
    levels: list[tuple[datetime, int]] = []
    for record in records:
        if record.name == "LanguageLevelReached" and str(record.data.get("language", "")).lower() == "de":
            level = record.data.get("level")
            if level in CEFR_LEVELS:
                levels.append((record.time, CEFR_LEVELS.index(level)))
                collect.point("language_level_reached", level, month_index(record.time))
        elif record.name in ("ProfileCompleted", "ReAssessmentCompleted"):
            level = (record.data.get("language_levels") or {}).get("de")
            if level in CEFR_LEVELS:
                levels.append((record.time, CEFR_LEVELS.index(level)))
    if not registrations:
        return
    closed = state.case_closed_at
    best, pending = -1, sorted(levels)
    demand_from, demand = 0, None
    for month in range(month_index(registrations[0].time), last + 1):
        # The end of the month, or the as-of instant in its month.
        moment = limit if month == last else month_start(month + 1) - _EPSILON
        if moment < registrations[0].time or (closed is not None and closed <= moment):
            need = None
        else:
            while pending and pending[0][0] <= moment:
                best = max(best, pending.pop(0)[1])
            # Courses lead up to C1; someone at C1 or above needs none.
            need = CEFR_LEVELS[best + 1] if best + 1 < CEFR_LEVELS.index("C2") else None
        if need != demand:
            if demand is not None:
                collect.span("course_demand", demand, demand_from, month - 1)
            demand_from, demand = month, need
    if demand is not None:
        collect.span("course_demand", demand, demand_from, last)


def _measures(collect: _Collector, records: list[Record], limit: datetime) -> None:
    """measures_started, measures_completed and the waiting time between measures."""
    today = _local_date(limit)
    assigned: dict[str, Record] = {}
    ended: dict[str, date] = {}
    for record in records:
        measure_id = str(record.data.get("measure_id"))
        if record.name == "MeasureAssigned":
            assigned[measure_id] = record  # a later assignment of the same measure corrects it
        elif record.name == "MeasureCompleted":
            ended.setdefault(measure_id, _local_date(record.time))
            if record.data.get("outcome") == "completed":
                kind = assigned[measure_id].data.get("kind") if measure_id in assigned else "other"
                collect.point("measures_completed", str(kind), month_index(record.time))
    measures = []
    for measure_id, record in assigned.items():
        try:
            starts = date.fromisoformat(str(record.data["starts"]))
            ends = date.fromisoformat(str(record.data["ends"])) if record.data.get("ends") else None
        except (KeyError, ValueError):
            continue
        if starts <= today:
            measures.append((starts, measure_id, str(record.data.get("kind")), ended.get(measure_id, ends)))
    measures.sort()
    for starts, _, kind, _ in measures:
        collect.point("measures_started", kind, month_of_date(starts))
    for (_, _, _, previous_end), (starts, _, _, _) in zip(measures, measures[1:]):
        if previous_end is not None:
            # A measure starting the day after the previous one ended follows without waiting.
            collect.sample("measure_wait_days", None, month_of_date(starts), max(0, (starts - previous_end).days - 1))


# --- the tally --------------------------------------------------------------------------


@dataclass(frozen=True)
class RawCell:
    """A cell before disclosure control: its value and the number of persons it rests on."""

    kpi: str
    month: int
    dims: tuple[str, ...]
    """(municipality[, value of the third dimension])."""
    persons: int
    value: int | float


def _deltas() -> defaultdict[int, int]:
    return defaultdict(int)


@dataclass
class _Amount:
    total: int = 0
    persons: int = 0


@dataclass
class _Distribution:
    values: Counter[int] = field(default_factory=Counter)
    persons: int = 0


class Tally:
    """The sum of every person's contribution; contributions can be taken back. Picklable."""

    def __init__(self) -> None:
        self.spans: defaultdict[CellKey, defaultdict[int, int]] = defaultdict(_deltas)
        self.amounts: defaultdict[tuple[CellKey, int], _Amount] = defaultdict(_Amount)
        self.samples: defaultdict[tuple[CellKey, int], _Distribution] = defaultdict(_Distribution)

    def _amount(self, key: tuple[CellKey, int], total: int, persons: int) -> None:
        amount = self.amounts[key]
        amount.total += total
        amount.persons += persons
        # Not on persons alone: a change (one person's amount taken back, its new one added) nets no persons.
        if not amount.persons and not amount.total:
            del self.amounts[key]

    def _sample(self, key: tuple[CellKey, int], values: Counter[int], persons: int) -> None:
        distribution = self.samples[key]
        distribution.values.update(values)  # `update` adds counts, negative ones too
        distribution.persons += persons
        if not distribution.persons and not any(distribution.values.values()):
            del self.samples[key]

    def merge(self, other: Tally) -> None:
        """Add another tally (e.g. of other partitions) to this one."""
        for key, deltas in other.spans.items():
            mine = self.spans[key]
            for month, delta in deltas.items():
                mine[month] += delta
        for cell, amount in other.amounts.items():
            self._amount(cell, amount.total, amount.persons)
        for cell, distribution in other.samples.items():
            self._sample(cell, distribution.values, distribution.persons)

    def add(self, contribution: Contribution, sign: int = 1) -> None:
        """Add a contribution (`sign` -1: take it back)."""
        for key, first, last in contribution.spans:
            deltas = self.spans[key]
            deltas[first] += sign
            deltas[last + 1] -= sign
        for key, month, value in contribution.amounts:
            self._amount((key, month), sign * value, sign)
        for key, month, values in contribution.samples:
            self._sample((key, month), Counter({v: sign * n for v, n in Counter(values).items()}), sign)

    def _with_municipality_totals(self) -> Tally:
        """This tally plus the municipality total `*` of every cell: a sum, as a person lives in one municipality."""
        both = Tally()
        for (series, dims), deltas in self.spans.items():
            for key in ((series, dims), (series, (TOTAL, *dims[1:]))):
                mine = both.spans[key]
                for month, delta in deltas.items():
                    mine[month] += delta
        for ((series, dims), month), amount in self.amounts.items():
            for key in ((series, dims), (series, (TOTAL, *dims[1:]))):
                both._amount((key, month), amount.total, amount.persons)
        for ((series, dims), month), distribution in self.samples.items():
            for key in ((series, dims), (series, (TOTAL, *dims[1:]))):
                both._sample((key, month), distribution.values, distribution.persons)
        return both

    def cells(self, last: int, case_managers: Mapping[str, float] | None = None) -> list[RawCell]:
        """Every non-empty cell up to month `last`, municipality totals included, in a stable order."""
        tally = self._with_municipality_totals()
        cells: list[RawCell] = []
        counts: dict[tuple[str, int, tuple[str, ...]], int] = {}
        for (series, dims), deltas in tally.spans.items():
            running, months = 0, sorted(deltas)
            for month, following in zip(months, months[1:] + [last + 1]):
                running += deltas[month]
                if running > 0:
                    for m in range(month, min(following, last + 1)):
                        counts[(series, m, dims)] = running
        for (series, month, dims), persons in counts.items():
            cells.append(RawCell(series, month, dims, persons, persons))
        for ((series, dims), month), amount in tally.amounts.items():
            if month <= last and amount.persons > 0:
                cells.append(RawCell(series, month, dims, amount.persons, amount.total))
        for ((series, dims), month), distribution in tally.samples.items():
            if month > last or distribution.persons <= 0:
                continue
            values = sorted(distribution.values.elements())
            for kpi in KPIS:
                if kpi.series == series and kpi.measure in ("median", "p90"):
                    cells.append(RawCell(kpi.name, month, dims, distribution.persons, _statistic(kpi, values)))
        for (series, month, dims), persons in counts.items():
            if series == "caseload" and dims[0] == TOTAL and case_managers and case_managers.get(dims[1]):
                cells.append(RawCell("caseload_per_case_manager", month, dims, persons,
                                     round(persons / case_managers[dims[1]], 1)))
        return sorted(cells, key=lambda c: (c.kpi, c.month, c.dims))


def _statistic(kpi: Kpi, values: list[int]) -> float:
    """Median or 90th percentile (nearest rank) in days, one decimal."""
    if kpi.measure == "median":
        middle = statistics.median(values)
    else:
        middle = values[max(0, -(-len(values) * 9 // 10) - 1)]
    days = middle / 86400 if kpi.series == "handover_days" else middle
    return round(float(days), 1)
