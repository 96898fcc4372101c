"""Use cases of the reporting service: keep every person's events, keep the figures current, answer queries.

Events only go into the persons' logs (cheap); persons with new events are
recomputed in bulk by `refresh`, which the service calls once it has caught up
(and at least every few seconds while it catches up), and whenever a person's
figures change with the passing of time (month ends, deadlines, gap days).
Contributions are never stored: at every start they are recomputed from the
kept events, so a changed definition applies to the whole history.
"""

from __future__ import annotations

import csv
import heapq
import io
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol, TypeVar

from services.referral.rules import RulesConfig
from services.reporting.disclosure import publish
from services.reporting.domain import (
    DIMENSIONS,
    Contribution,
    PersonLog,
    Record,
    Tally,
    assess,
    month_index,
    month_name,
)

Clock = Callable[[], datetime]
T = TypeVar("T")

Recomputed = tuple[Tally, dict[str, datetime | None]]
"""What recomputing some persons changed in the tally, and until when each one's figures hold."""


class HelperGone(Exception):
    """The helper computing a share of the persons is no longer there."""


class Helper(Protocol):
    """Another process keeping and computing a share of the persons (see `Reporting.recompute`)."""

    def holds(self, subject: str) -> bool:
        """Whether the helper computes this person; False for everyone once it is gone (and has
        called `Reporting.reclaim`)."""

    def recompute(self, subjects: list[str], now: datetime) -> Callable[[], Recomputed]:
        """Starts recomputing its `subjects`; the result raises `HelperGone` if it went away."""


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Query:
    """Which published cells a caller asks for; None: no limit."""

    first: int | None = None
    last: int | None = None
    municipality: str | None = None


class Reporting:
    """The live figures. Thread-safe: the consumer and the HTTP requests share it."""

    def __init__(self, rules: RulesConfig, case_managers: dict[str, float] | None = None,
                 clock: Clock = utc_now) -> None:
        self.rules = rules
        self.case_managers = dict(case_managers or {})
        self.clock = clock
        self._lock = threading.RLock()
        self._logs: dict[str, PersonLog] = {}
        self._contributions: dict[str, Contribution] = {}
        self._valid_until: dict[str, datetime] = {}
        self._expiry: list[tuple[datetime, str]] = []  # heap; entries superseded in _valid_until are skipped
        self._dirty: set[str] = set()
        self._computing = 0  # persons taken by a refresh and not applied yet
        self._tally = Tally()
        self._held_tally = Tally()  # the helper's persons, as its recomputations changed it
        self._version = 0
        self._published: tuple[tuple[int, int], list[dict[str, Any]]] | None = None

    # -- the fold ---------------------------------------------------------------------

    def add(self, items: Iterable[tuple[str, Record, T]]) -> list[tuple[str, Record, T]]:
        """Keep events (subject, record, anything); returns the items whose event was not kept before."""
        new = []
        with self._lock:
            for item in items:
                subject, record, _ = item
                log = self._logs.get(subject)
                if log is None:
                    log = self._logs[subject] = PersonLog(subject)
                if log.add(record):
                    new.append(item)
                    self._dirty.add(subject)
        return new

    def due(self) -> bool:
        """Whether `refresh` has work: new events, or figures the passing of time has changed."""
        with self._lock:
            return bool(self._dirty) or bool(self._expiry and self._expiry[0][0] <= self.clock())

    def current(self) -> bool:
        """Whether the figures include every event kept and no refresh is due."""
        with self._lock:
            return not self._computing and not self.due()

    def refresh(self, helper: Helper | None = None) -> int:
        """Recompute persons with new events and persons whose figures time has changed; returns how many.

        The persons are assessed outside the lock: the consumer may go on adding events meanwhile,
        which marks their persons for the next refresh. A `helper` recomputes its share of them at the
        same time.
        """
        with self._lock:
            now = self.clock()
            subjects = set(self._dirty)
            while self._expiry and self._expiry[0][0] <= now:
                at, subject = heapq.heappop(self._expiry)
                if self._valid_until.get(subject) == at:
                    subjects.add(subject)
            self._dirty.clear()
            held: list[str] = []
            logs: list[PersonLog] = []
            for subject in subjects:
                if helper is not None and helper.holds(subject):
                    held.append(subject)
                else:
                    logs.append(self._logs[subject].copy())
            self._computing += len(subjects)
        if not subjects:
            return 0
        try:
            pending = helper.recompute(held, now) if helper is not None and held else None
            results = [assess(log, self.rules, now) for log in logs]
            recomputed = pending() if pending is not None else None
        except BaseException:
            with self._lock:
                self._dirty.update(subjects)
                self._computing -= len(subjects)
            raise
        with self._lock:
            for log, assessment in zip(logs, results):
                self._apply(log.subject, assessment.contribution, self._tally)
                self._schedule(log.subject, assessment.valid_until)
            if recomputed is not None:
                change, valid_until = recomputed
                self._held_tally.merge(change)
                for subject, until in valid_until.items():
                    self._schedule(subject, until)
            self._computing -= len(subjects)
            self._version += 1
        return len(subjects)

    def reclaim(self) -> None:
        """The helper is gone: the persons it computed are computed here from now on."""
        with self._lock:
            self._held_tally = Tally()
            self._dirty.update(s for s in self._logs if s not in self._contributions)
            self._version += 1

    def recompute(self, subjects: list[str], now: datetime) -> Recomputed:
        """The helper's side of `refresh`: recompute `subjects` (persons this instance keeps the events of)."""
        change = Tally()
        valid_until: dict[str, datetime | None] = {}
        with self._lock:
            for subject in subjects:
                assessment = assess(self._logs.get(subject) or PersonLog(subject), self.rules, now)
                self._apply(subject, assessment.contribution, change)
                valid_until[subject] = assessment.valid_until
        return change, valid_until

    def _apply(self, subject: str, contribution: Contribution, tally: Tally) -> None:
        old = self._contributions.get(subject)
        if old is not None:
            tally.add(old, -1)
        tally.add(contribution)
        self._contributions[subject] = contribution

    def _schedule(self, subject: str, valid_until: datetime | None) -> None:
        if valid_until is None:
            self._valid_until.pop(subject, None)
        else:
            self._valid_until[subject] = valid_until
            heapq.heappush(self._expiry, (valid_until, subject))

    # -- queries ----------------------------------------------------------------------

    def published(self) -> list[dict[str, Any]]:
        """Every cell after disclosure control, as of the last refresh."""
        with self._lock:
            key = (self._version, month_index(self.clock()))
            if self._published is None or self._published[0] != key:
                tally = Tally()
                tally.merge(self._tally)
                tally.merge(self._held_tally)
                cells = tally.cells(key[1], self.case_managers)
                self._published = (key, publish(cells))
            return self._published[1]

    def query(self, query: Query) -> list[dict[str, Any]]:
        first = month_name(query.first) if query.first is not None else None
        last = month_name(query.last) if query.last is not None else None
        return [cell for cell in self.published()
                if (first is None or cell["dims"]["month"] >= first)
                and (last is None or cell["dims"]["month"] <= last)
                and (query.municipality is None or cell["dims"]["municipality"] == query.municipality)]


def to_csv(cells: list[dict[str, Any]]) -> str:
    """One row per cell, one column per dimension (empty where a figure has none)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["kpi", *DIMENSIONS, "value", "suppressed"])
    for cell in cells:
        writer.writerow([cell["kpi"], *(cell["dims"].get(d, "") for d in DIMENSIONS),
                         "" if cell["value"] is None else cell["value"], str(cell["suppressed"]).lower()])
    return out.getvalue()
