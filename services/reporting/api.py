"""HTTP surface of the reporting service (§6, §6a): figures as JSON and CSV."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import PlainTextResponse

from kim.auth import Principal, require_roles
from services.reporting.application import Query as CellQuery
from services.reporting.application import Reporting, to_csv
from services.reporting.domain import month_name, parse_month

router = APIRouter(prefix="/v1", tags=["figures"])

READERS = ("steering_group", "auditor")

FromMonth = Annotated[str | None, Query(alias="from", description="first month, YYYY-MM")]
ToMonth = Annotated[str | None, Query(alias="to", description="last month, YYYY-MM")]
Municipality = Annotated[str | None, Query(description="only this municipality; `*` for the district total",
                                           min_length=1, max_length=200)]


def _month(name: str, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_month(value)
    except ValueError:
        raise HTTPException(422, detail=[{"loc": ["query", name], "msg": f"{name} must be a month YYYY-MM, "
                                          "e.g. 2025-07", "input": value}]) from None


def parse_query(first: str | None, last: str | None, municipality: str | None) -> CellQuery:
    """The query of `?from=&to=&municipality=`; 422 naming the parameter and the rule otherwise."""
    query = CellQuery(_month("from", first), _month("to", last), municipality)
    if query.first is not None and query.last is not None and query.first > query.last:
        raise HTTPException(422, detail=[{"loc": ["query", "to"], "msg": "to must not be before from",
                                          "input": last}])
    return query


def _reporting(request: Request) -> Reporting:
    return request.app.state.reporting


def _range(query: CellQuery, cells: list[dict]) -> tuple[str | None, str | None]:
    months = [c["dims"]["month"] for c in cells]
    first = month_name(query.first) if query.first is not None else min(months, default=None)
    last = month_name(query.last) if query.last is not None else max(months, default=None)
    return first, last


@router.get("/kpis", summary="Figures for the steering group, as cells with disclosure control")
def kpis(request: Request, first: FromMonth = None, last: ToMonth = None, municipality: Municipality = None,
         principal: Principal = require_roles(*READERS)) -> dict:
    query = parse_query(first, last, municipality)
    cells = _reporting(request).query(query)
    start, end = _range(query, cells)
    return {"from": start, "to": end, "municipality": municipality, "cells": cells}


@router.get("/kpis.csv", summary="The same cells as CSV: one row per cell, one column per dimension",
            response_class=PlainTextResponse)
def kpis_csv(request: Request, first: FromMonth = None, last: ToMonth = None, municipality: Municipality = None,
             principal: Principal = require_roles(*READERS)) -> PlainTextResponse:
    cells = _reporting(request).query(parse_query(first, last, municipality))
    return PlainTextResponse(to_csv(cells), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": 'attachment; filename="kim-kennzahlen.csv"'})
