"""Statistical disclosure control of the figures (interfaces.md §6a). Pure.

- Primary suppression: a cell resting on fewer than `THRESHOLD` persons has no value.
- Secondary suppression, per table (one figure's cells of one month): every
  margin `*` and the cells it totals form a linear relation (municipalities
  always; the third dimension when the figure is additive, see `Kpi.additive`).
  While some suppressed value could be derived from the published cells, by any
  combination of the relations, another cell (the smallest in persons, then
  value) is suppressed. Derivability is decided exactly, with rational
  arithmetic over all relations of the table.
- A ratio (the Betreuungsschlüssel) is suppressed with the count it divides.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

from services.reporting.domain import KPI_BY_NAME, TOTAL, Kpi, RawCell, month_name

THRESHOLD = 5

Dims = tuple[str, ...]
Relation = tuple[Dims, list[Dims]]
"""(margin cell, the cells it totals)."""


def relations(kpi: Kpi, cells: Iterable[Dims]) -> list[Relation]:
    """The linear relations between one table's cells: margin = sum of the cells it totals.

    Cells that do not exist are zero (no person), so they are known and left out.
    """
    present = set(cells)
    found: list[Relation] = []
    values = sorted({d[1:] for d in present})
    for rest in values:  # over municipalities, for each value of the third dimension (or none)
        margin = (TOTAL, *rest)
        if margin in present:
            found.append((margin, sorted(d for d in present if d[0] != TOTAL and d[1:] == rest)))
    if kpi.dimension is not None and kpi.additive:
        for municipality in sorted({d[0] for d in present}):
            margin = (municipality, TOTAL)
            if margin in present:
                found.append((margin, sorted(d for d in present if d[0] == municipality and d[1] != TOTAL)))
    return found


def derivable(table_relations: list[Relation], hidden: set[Dims]) -> set[Dims]:
    """The hidden cells whose value follows from the published ones through the relations.

    A hidden cell x_k is derivable iff the unit vector e_k lies in the row space of
    the relations restricted to the hidden cells: in reduced row echelon form, its
    column is a pivot whose row has no other non-zero entry.
    """
    unknowns = sorted({c for margin, members in table_relations for c in (margin, *members) if c in hidden})
    if not unknowns:
        return set()
    column = {cell: i for i, cell in enumerate(unknowns)}
    rows: list[list[Fraction]] = []
    for margin, members in table_relations:
        row = [Fraction(0)] * len(unknowns)
        for cell in members:
            if cell in column:
                row[column[cell]] += 1
        if margin in column:
            row[column[margin]] -= 1
        if any(row):
            rows.append(row)
    pivots = _reduce(rows)
    exposed = set()
    for r, c in pivots:
        if all(value == 0 for j, value in enumerate(rows[r]) if j != c):
            exposed.add(unknowns[c])
    return exposed


def _reduce(rows: list[list[Fraction]]) -> list[tuple[int, int]]:
    """Reduced row echelon form in place; returns (row, pivot column) pairs."""
    pivots: list[tuple[int, int]] = []
    top = 0
    for c in range(len(rows[0]) if rows else 0):
        pivot = next((r for r in range(top, len(rows)) if rows[r][c] != 0), None)
        if pivot is None:
            continue
        rows[top], rows[pivot] = rows[pivot], rows[top]
        lead = rows[top][c]
        rows[top] = [value / lead for value in rows[top]]
        for r in range(len(rows)):
            if r != top and rows[r][c] != 0:
                factor = rows[r][c]
                rows[r] = [a - factor * b for a, b in zip(rows[r], rows[top])]
        pivots.append((top, c))
        top += 1
        if top == len(rows):
            break
    return pivots


def protect(kpi: Kpi, cells: dict[Dims, RawCell]) -> set[Dims]:
    """The cells of one table to suppress: primary, then secondary until nothing can be derived."""
    hidden = {dims for dims, cell in cells.items() if cell.persons < THRESHOLD}
    if kpi.measure not in ("persons", "amount") or not hidden:
        return hidden  # medians and ratios are not sums: no relations to exploit
    table = relations(kpi, cells)

    def smallest(candidates: Iterable[Dims]) -> Dims | None:
        return min(candidates, key=lambda d: (cells[d].persons, cells[d].value, d), default=None)

    while True:
        # A relation with exactly one hidden cell gives it away at once.
        lonely = [(margin, members) for margin, members in table
                  if sum(c in hidden for c in (margin, *members)) == 1]
        if lonely:
            for margin, members in lonely:
                if sum(c in hidden for c in (margin, *members)) == 1:
                    hidden.add(smallest(c for c in (margin, *members) if c not in hidden))  # type: ignore[arg-type]
            continue
        exposed = derivable(table, hidden)
        if not exposed:
            return hidden
        # Hide one more cell next to an exposed one, then look again.
        cell = min(exposed)
        near = [c for margin, members in table if cell in (margin, *members)
                for c in (margin, *members) if c not in hidden]
        extra = smallest(near) or smallest(c for c in cells if c not in hidden)
        if extra is None:
            return hidden
        hidden.add(extra)


def publish(raw: Iterable[RawCell]) -> list[dict[str, Any]]:
    """The cells as `GET /v1/kpis` answers them, with disclosure control applied; stable order."""
    tables: dict[tuple[str, int], dict[Dims, RawCell]] = defaultdict(dict)
    for cell in raw:
        tables[(cell.kpi, cell.month)][cell.dims] = cell
    hidden: dict[tuple[str, int], set[Dims]] = {}
    for (name, month), cells in tables.items():
        kpi = KPI_BY_NAME[name]
        if kpi.measure != "ratio":
            hidden[(name, month)] = protect(kpi, cells)
    out = []
    for (name, month), cells in sorted(tables.items()):
        kpi = KPI_BY_NAME[name]
        if kpi.measure == "ratio":  # persons / case managers would give the count away
            base = hidden.get(("caseload", month), set())
            suppressed = {d for d, c in cells.items() if d in base or c.persons < THRESHOLD}
        else:
            suppressed = hidden[(name, month)]
        for dims, cell in sorted(cells.items()):
            out.append(cell_dict(kpi, month, dims, None if dims in suppressed else cell.value))
    return out


def cell_dict(kpi: Kpi, month: int, dims: Dims, value: int | float | None) -> dict[str, Any]:
    names = {"month": month_name(month), "municipality": dims[0]}
    if kpi.dimension is not None:
        names[kpi.dimension] = dims[1]
    return {"kpi": kpi.name, "dims": names, "value": value, "suppressed": value is None}
