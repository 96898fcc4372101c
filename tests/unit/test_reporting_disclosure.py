"""Statistical disclosure control: an attacker who solves every linear relation of the published
tables (row, column and total sums, exactly) must not recover a single suppressed value."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone
from fractions import Fraction
from functools import lru_cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.referral.rules import RulesConfig
from services.reporting.disclosure import THRESHOLD, cell_dict, publish
from services.reporting.domain import KPI_BY_NAME, TOTAL, PersonLog, RawCell, Tally, assess, month_index, record_of

# What an attacker knows about the tables: a municipality total is the sum of the municipalities
# (a person lives in one); these figures' third dimension adds up too (one value per person, or amounts).
SUMMED_THIRD_DIMENSION = {"caseload", "course_demand", "gap_days"}
ADDITIVE = {name for name, kpi in KPI_BY_NAME.items() if kpi.measure in ("persons", "amount")}


def attack(cells: list[dict]) -> dict[tuple, Fraction]:
    """Every suppressed value that the relations between published cells determine, exactly."""
    tables: dict[tuple[str, str], dict[tuple[str, str | None], dict]] = defaultdict(dict)
    for cell in cells:
        if cell["kpi"] not in ADDITIVE:
            continue
        dims = cell["dims"]
        third = next((v for k, v in dims.items() if k not in ("month", "municipality")), None)
        tables[(cell["kpi"], dims["month"])][(dims["municipality"], third)] = cell
    found: dict[tuple, Fraction] = {}
    for (kpi, month), table in tables.items():
        relations = []
        thirds = {t for _, t in table}
        places = {m for m, _ in table}
        for third in thirds:
            members = [(m, third) for m in places if m != TOTAL and (m, third) in table]
            if (TOTAL, third) in table:
                relations.append(((TOTAL, third), members))
        if kpi in SUMMED_THIRD_DIMENSION:
            for place in places:
                members = [(place, t) for t in thirds if t != TOTAL and (place, t) in table]
                if (place, TOTAL) in table:
                    relations.append(((place, TOTAL), members))
        unknown = sorted({key for key, cell in table.items() if cell["suppressed"]}, key=str)
        index = {key: i for i, key in enumerate(unknown)}
        rows = []
        for margin, members in relations:
            row = [Fraction(0)] * (len(unknown) + 1)
            for key, sign in [(margin, -1)] + [(m, 1) for m in members]:
                if key in index:
                    row[index[key]] += sign
                else:  # known: moves to the right-hand side
                    row[-1] -= sign * Fraction(str(table[key]["value"]))
            rows.append(row)
        for key, value in _solve(rows, len(unknown)).items():
            found[(kpi, month, *unknown[key])] = value
    return found


def _solve(rows: list[list[Fraction]], n: int) -> dict[int, Fraction]:
    """Gauss-Jordan elimination; the unknowns that the system pins down."""
    rows = [r[:] for r in rows]
    pivot_row = 0
    pivots = []
    for col in range(n):
        pick = next((r for r in range(pivot_row, len(rows)) if rows[r][col] != 0), None)
        if pick is None:
            continue
        rows[pivot_row], rows[pick] = rows[pick], rows[pivot_row]
        lead = rows[pivot_row][col]
        rows[pivot_row] = [v / lead for v in rows[pivot_row]]
        for r in range(len(rows)):
            if r != pivot_row and rows[r][col] != 0:
                f = rows[r][col]
                rows[r] = [a - f * b for a, b in zip(rows[r], rows[pivot_row])]
        pivots.append((pivot_row, col))
        pivot_row += 1
    return {col: rows[r][-1] for r, col in pivots if all(v == 0 for j, v in enumerate(rows[r][:n]) if j != col)}


@lru_cache(maxsize=1)
def demo_raw_cells() -> tuple[RawCell, ...]:
    """The raw figures of a demo district (before any suppression)."""
    import orjson

    from contracts import decode
    from kim.demo import generate_district

    logs: dict[str, PersonLog] = {}
    for envelope in generate_district(400, 1.0, 11):
        event = decode(orjson.dumps(envelope))
        e = event.envelope
        record = record_of(event.event_name, e.source, e.id, e.effective_time, e.recorded_time, e.data)
        if record is not None:
            logs.setdefault(e.subject, PersonLog(e.subject)).add(record)
    as_of = datetime(2026, 1, 1, tzinfo=timezone.utc)
    tally = Tally()
    for log in logs.values():
        tally.add(assess(log, RulesConfig(), as_of, as_of=as_of).contribution)
    return tuple(tally.cells(month_index(as_of), {"integration_center": 4.0, "job_center": 2.5}))


def test_the_attacker_finds_cells_that_only_primary_suppression_hides():
    # Validates the attacker: with small counts hidden but nothing else, it recovers them, correctly.
    raw = demo_raw_cells()
    primary = [cell_dict(KPI_BY_NAME[c.kpi], c.month, c.dims, None if c.persons < THRESHOLD else c.value)
               for c in raw]
    recovered = attack(primary)
    assert recovered, "the attacker should break tables protected by primary suppression alone"
    truth = {(c.kpi, f"{c.month // 12:04d}-{c.month % 12 + 1:02d}", *(c.dims + (None,))[:2]): c.value for c in raw}
    for key, value in recovered.items():
        assert value == Fraction(str(truth[key]))


def test_no_suppressed_cell_of_the_demo_district_can_be_recomputed():
    published = publish(demo_raw_cells())
    assert any(c["suppressed"] for c in published)
    recovered = attack(published)
    assert recovered == {}, f"suppressed cells recomputed from the published table: {list(recovered)[:5]}"


def test_small_counts_never_leave_and_non_counts_rest_on_five_persons():
    raw = {(c.kpi, c.month, c.dims): c for c in demo_raw_cells()}
    for cell in publish(raw.values()):
        kpi = KPI_BY_NAME[cell["kpi"]]
        if cell["suppressed"]:
            assert cell["value"] is None
            continue
        dims = cell["dims"]
        key = (cell["kpi"], int(dims["month"][:4]) * 12 + int(dims["month"][5:]) - 1,
               (dims["municipality"],) + ((dims[kpi.dimension],) if kpi.dimension else ()))
        assert raw[key].persons >= THRESHOLD


def test_the_ratio_is_hidden_with_the_count_it_divides():
    published = publish(demo_raw_cells())
    caseload = {(c["dims"]["month"], c["dims"]["agency"]): c["suppressed"] for c in published
                if c["kpi"] == "caseload" and c["dims"]["municipality"] == TOTAL}
    ratios = [c for c in published if c["kpi"] == "caseload_per_case_manager"]
    assert ratios
    for cell in ratios:
        if caseload[(cell["dims"]["month"], cell["dims"]["agency"])]:
            assert cell["suppressed"]


table_values = st.dictionaries(
    st.tuples(st.sampled_from(["Au", "Bu", "Cu", "Du", "Eu"]), st.sampled_from(["A1", "A2", "B1", "B2"])),
    st.integers(min_value=1, max_value=25), min_size=1, max_size=20)


def _raw_table(kpi: str, values: dict[tuple[str, str], int]) -> list[RawCell]:
    """A table with consistent margins for a figure whose third dimension adds up."""
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for (place, third), value in values.items():
        for key in ((place, third), (TOTAL, third), (place, TOTAL), (TOTAL, TOTAL)):
            totals[key] += value
    return [RawCell(kpi, 24300, key, value, value) for key, value in totals.items()]


@settings(max_examples=150, deadline=None)
@given(table_values)
def test_no_two_dimensional_table_gives_a_suppressed_cell_away(values):
    published = publish(_raw_table("course_demand", values))
    assert attack(published) == {}
    assert all(c["value"] is None for c in published if c["suppressed"])


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["Au", "Bu", "Cu", "Du", "Eu", "Fu"]), st.integers(1, 12), min_size=1))
def test_no_one_dimensional_table_gives_a_suppressed_cell_away(values):
    totals = {(place,  "B1"): v for place, v in values.items()}
    totals[(TOTAL, "B1")] = sum(values.values())
    raw = [RawCell("persons_active", 24300, (place, third), v, v) for (place, third), v in totals.items()]
    published = publish(raw)
    assert attack(published) == {}
    suppressed = [c for c in published if c["suppressed"]]
    assert len(suppressed) != 1  # a lone suppressed cell would be the total minus the others


@pytest.mark.parametrize("values", [
    {("Au", "A1"): 3, ("Au", "A2"): 10, ("Bu", "A1"): 10, ("Bu", "A2"): 10},
    {("Au", "A1"): 2, ("Bu", "A2"): 2, ("Au", "A2"): 7, ("Bu", "A1"): 9, ("Cu", "B1"): 30},
])
def test_known_tricky_tables(values):
    assert attack(publish(_raw_table("course_demand", values))) == {}
