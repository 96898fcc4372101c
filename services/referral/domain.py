"""Pure domain of the referral service: who is responsible for a person, per area, over time.

`compute` folds one person's facts (consumed events) into a `PersonState`:
responsibility intervals per area, jurisdiction gaps, handovers (actual offers
and the expected ones that rules R1/R2 derive), reviews due (R3) and the next
instant at which the state changes by the mere passing of time. The state is a
function of the *set* of facts, never of their arrival order: facts are
deduplicated by `(source, id)` and folded in effective-time order, so a service
simply recomputes a person whenever a fact arrives or `next_deadline` passes.

Decisions where interfaces.md leaves room (§4 is the authority otherwise):

- Same effective instant: facts come first, in the order CaseClosedByAgency,
  CaseOpenedByAgency, HandedOverToAgency, HandoverAccepted, HandoverRejected,
  CaseClosed, ResidenceTitleGranted/LanguageLevelReached, then recordedtime,
  then `(source, id)`; timers (legal ends, deadlines, reviews) due at that
  instant come after all facts of it. So an acceptance exactly at R1's legal end
  leaves no gap, and a rule sees the holder as it stands at its instant.
- A decision (accept/reject) counts only when the receiver emits it. One whose
  handover does not exist yet (its offer or the rule's expectation is later in
  effective time, or not known) waits and takes effect when the handover comes
  into being: responsibility moves at the later of the two effective times. The
  first decision on a handover wins; later ones are ignored.
- An acceptance moves the area to the receiver whoever holds it then (normally
  the sender; after a legal end or a closure nobody, which closes the gap).
- An actual offer gets no deadline of its own; it has the deadline of the
  expected handover it replaced. Replacing works in both effective-time orders:
  a rule firing while a matching actual offer is open links that offer instead
  of listing a new expectation.
- Open (pending/overdue) handovers of an area end with status `accepted` when
  their receiver takes the area in the offered legal domain (a `CaseOpenedByAgency`
  instead of a `HandoverAccepted`: the handover took place); with status
  `satisfied` when another agency, or the sender in another legal domain, takes
  the area (so social_welfare_office opening SGB_XII satisfies R1), or when the
  holder closes the area for `need_ended`/`moved_away`; with status `cancelled`
  when the person's case is closed. A later acceptance or rejection still
  overrides these last two statuses. Replaced expected handovers keep status
  `replaced` and are kept apart in `PersonState.replaced_handovers`.
- Only the continuous areas (benefits, case_management, labour_market) get gaps;
  `youth` may end without a successor (§1).
- After `CaseClosed` (the first one counts) the person stays inactive: rules
  expect nothing more, no gap opens, no review falls due. R1's legal end still
  ends an AsylbLG interval by law, without a gap.
- R3 gives one review per continuous holding of case_management (an agency
  closing and reopening at the same instant holds continuously).
- `as_of` defaults to `now` (interfaces.md §6: "both default to now"), so facts
  effective in the future do not count yet and their time is a `next_deadline`;
  `known_at` defaults to no limit, since every fact held has been recorded.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from contracts import parse_rfc3339, rfc3339
from services.referral.rules import CEFR_LEVELS, RulesConfig

EventId = tuple[str, str]
"""The deduplication key `(source, id)` of an event."""

HandoverKind = Literal["actual", "expected"]
HandoverStatus = Literal["pending", "accepted", "rejected", "overdue", "satisfied", "cancelled", "replaced"]
GapReason = Literal["closed_not_competent", "closed_other", "legal_end"]
Rule = Literal["R1", "R2"]

BENEFITS = "benefits"
CASE_MANAGEMENT = "case_management"
LABOUR_MARKET = "labour_market"
CONTINUOUS_AREAS = frozenset({BENEFITS, CASE_MANAGEMENT, LABOUR_MARKET})
ASYLBLG = "ASYLBLG"

_PRIORITY: Mapping[str, int] = {
    "CaseClosedByAgency": 0,
    "CaseOpenedByAgency": 1,
    "HandedOverToAgency": 2,
    "HandoverAccepted": 3,
    "HandoverRejected": 4,
    "CaseClosed": 5,
    "ResidenceTitleGranted": 6,
    "LanguageLevelReached": 6,
}
"""Event types the fold reads, with their order among facts of the same instant."""

_OPEN = ("pending", "overdue")
_DECIDED = ("accepted", "rejected")


# --- input -------------------------------------------------------------------------


@dataclass(frozen=True)
class Fact:
    """One consumed event, reduced to what the fold needs. Times become UTC."""

    event_id: EventId
    subject: str
    event_name: str
    agency: str
    time: datetime
    recorded_time: datetime
    data: Mapping[str, Any]

    def __post_init__(self) -> None:
        for name in ("time", "recorded_time"):
            value: datetime = getattr(self, name)
            if value.tzinfo is timezone.utc:
                continue  # as the store parses them
            if value.tzinfo is None:
                raise ValueError(f"Fact.{name} must be timezone-aware")
            object.__setattr__(self, name, value.astimezone(timezone.utc))


def fact_from_envelope(envelope: Mapping[str, Any]) -> Fact:
    """A `Fact` from a CloudEvents envelope as JSON-decoded (interfaces.md §2); ValueError if malformed."""
    source = str(envelope["source"])
    parts = source.split(":")
    type_parts = str(envelope["type"]).split(".")
    if len(parts) < 3 or parts[:2] != ["urn", "kim"] or len(type_parts) != 4 or type_parts[:2] != ["de", "kim"]:
        raise ValueError(f"not a KIM event: source {source!r}, type {envelope['type']!r}")
    return Fact(
        event_id=(source, str(envelope["id"])),
        subject=str(envelope["subject"]),
        event_name=type_parts[2],
        agency=parts[2],
        time=parse_rfc3339(envelope["time"]),
        recorded_time=parse_rfc3339(envelope["recordedtime"]),
        data=dict(envelope.get("data") or {}),
    )


# --- output ------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """The agency holds the area in the legal domain during `[from_, to)`; `to` None while open."""

    agency: str
    legal_domain: str
    from_: datetime
    to: datetime | None


@dataclass(frozen=True)
class Gap:
    """Nobody holds a continuous area during `[since, until)`; `until` None while open."""

    gap_id: str
    subject: str
    area: str
    since: datetime
    until: datetime | None
    last_agency: str
    reason: GapReason
    closed_by: str | None = None
    """The agency whose taking the area closed the gap; None while open or when the case closed."""


@dataclass(frozen=True)
class Handover:
    """An offer (`actual`) or a rule's expectation (`expected`) to move an area to another agency."""

    handover_id: str
    kind: HandoverKind
    subject: str
    area: str
    from_agency: str
    from_legal_domain: str | None
    """The sender's legal domain when it held the area at the offer; None if it did not."""
    to_agency: str
    to_legal_domain: str
    status: HandoverStatus
    deadline: datetime | None
    offered_at: datetime
    resolved_at: datetime | None
    rule: Rule | None
    overdue_since: datetime | None = None
    """When the deadline passed unaccepted; kept after the handover is resolved."""
    replaces: str | None = None
    """For an actual offer: the expected handover it replaced."""
    replaced_by: str | None = None
    """For a replaced expected handover: the actual offer that replaced it."""


@dataclass(frozen=True)
class ReviewDue:
    """R3: `agency` has held `area` since `held_since`; a review was due at `due`."""

    review_id: str
    subject: str
    area: str
    agency: str
    held_since: datetime
    due: datetime


@dataclass(frozen=True)
class PersonState:
    """Everything the referral service knows about one person at (`now`, `as_of`, `known_at`)."""

    subject: str | None
    areas: dict[str, list[Interval]]
    """Intervals per area, sorted by `from_`; areas never held are absent."""
    gaps: list[Gap]
    handovers: list[Handover]
    """Handovers as `GET /v1/handovers` lists them, sorted by (offered_at, handover_id)."""
    replaced_handovers: list[Handover]
    """Expected handovers that an actual offer replaced; not listed, kept for their derived events."""
    reviews_due: list[ReviewDue]
    case_closed_at: datetime | None
    next_deadline: datetime | None
    """The earliest instant after `now` at which the state changes without a new fact, if any."""


@dataclass(frozen=True)
class DerivedEvent:
    """A fact the state implies, to be published once; `event_id` is stable across recomputations."""

    event_id: str
    type: str
    subject: str
    time: datetime
    data: dict[str, Any]


# --- the fold ------------------------------------------------------------------------


def compute(
    facts: Iterable[Fact],
    rules: RulesConfig,
    now: datetime,
    as_of: datetime | None = None,
    known_at: datetime | None = None,
) -> PersonState:
    """The state of one person from their facts, as of `as_of` (effective time) with what was recorded by `known_at`.

    Facts count when `time <= as_of` (default `now`) and `recorded_time <= known_at`
    (default: all). Deadlines, legal ends and reviews count when they are at or
    before `min(now, as_of)`: they are things that happen in real time.
    """
    for name, value in (("now", now), ("as_of", as_of), ("known_at", known_at)):
        if value is not None and value.tzinfo is None:
            raise ValueError(f"{name} must be timezone-aware")
    subjects: set[str] = set()
    chosen: dict[EventId, Fact] = {}
    for fact in facts:
        subjects.add(fact.subject)
        if fact.event_name not in _PRIORITY or (known_at is not None and fact.recorded_time > known_at):
            continue
        kept = chosen.get(fact.event_id)
        # Duplicates are normally identical; if not, the choice must not depend on order.
        if kept is None or _duplicate_key(fact) < _duplicate_key(kept):
            chosen[fact.event_id] = fact
    if len(subjects) > 1:
        raise ValueError(f"facts of more than one person: {sorted(subjects)}")
    subject = next(iter(subjects), None)

    effective_limit = as_of if as_of is not None else now
    in_scope = sorted((f for f in chosen.values() if f.time <= effective_limit), key=_sort_key)
    fold = _Fold(subject or "", rules, now=now, as_of=as_of)
    fold.run(in_scope)

    candidates = [fold.next_timer] if fold.next_timer is not None else []
    if as_of is None:
        candidates.extend(f.time for f in chosen.values() if f.time > now)
    return fold.state(subject, min(candidates, default=None))


def _sort_key(fact: Fact) -> tuple[datetime, int, datetime, EventId]:
    return (fact.time, _PRIORITY[fact.event_name], fact.recorded_time, fact.event_id)


def _duplicate_key(fact: Fact) -> tuple[tuple[datetime, int, datetime, EventId], str, str]:
    return (_sort_key(fact), fact.agency, json.dumps(fact.data, sort_keys=True, default=str))


def _stable_id(prefix: str, *parts: str) -> str:
    # hashlib, not hash(): ids must survive restarts and replays.
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return f"{prefix}-{digest[:20]}"


def _text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True)
class _Holding:
    agency: str
    legal_domain: str
    since: datetime


@dataclass(frozen=True)
class _OpenGap:
    gap_id: str
    since: datetime
    last_agency: str
    reason: GapReason


@dataclass
class _Offer:
    """A handover while the fold builds it (mutable), frozen into a `Handover` at the end."""

    handover_id: str
    kind: HandoverKind
    area: str
    from_agency: str
    from_legal_domain: str | None
    to_agency: str
    to_legal_domain: str
    offered_at: datetime
    deadline: datetime | None = None
    rule: Rule | None = None
    status: HandoverStatus = "pending"
    resolved_at: datetime | None = None
    overdue_since: datetime | None = None
    replaces: str | None = None
    replaced_by: str | None = None


_TimerKind = Literal["legal_end", "overdue", "review"]
_TIMER_ORDER: Mapping[_TimerKind, int] = {"legal_end": 0, "overdue": 1, "review": 2}


class _Fold:
    """Mutable state of one fold over one person's sorted facts; indexes keep each step cheap."""

    def __init__(self, subject: str, rules: RulesConfig, now: datetime, as_of: datetime | None) -> None:
        self.subject = subject
        self.rules = rules
        self.now = now
        self.as_of = as_of
        self.timer_limit = min(now, as_of) if as_of is not None else now
        self.holding: dict[str, _Holding] = {}
        self.intervals: dict[str, list[Interval]] = {}
        self.open_gaps: dict[str, _OpenGap] = {}
        self.gaps: list[Gap] = []
        self.offers: dict[str, _Offer] = {}
        self.open_offers: dict[str, dict[str, _Offer]] = {}
        self.aliases: dict[str, str] = {}
        self.waiting: dict[str, list[Fact]] = {}
        self.reviews: list[ReviewDue] = []
        self.case_closed_at: datetime | None = None
        self.timers: list[tuple[datetime, int, int, _TimerKind, Any]] = []
        self.timer_count = 0
        self.next_timer: datetime | None = None

    # -- driving

    def run(self, facts: list[Fact]) -> None:
        handlers = {
            "CaseClosedByAgency": self._closed_by_agency,
            "CaseOpenedByAgency": self._opened,
            "HandedOverToAgency": self._offered,
            "HandoverAccepted": self._decided,
            "HandoverRejected": self._decided,
            "CaseClosed": self._case_closed,
            "ResidenceTitleGranted": self._title,
            "LanguageLevelReached": self._language,
        }
        for fact in facts:
            self._run_timers(before=fact.time)
            handlers[fact.event_name](fact)
        self._run_timers(before=None)

    def _schedule(self, at: datetime, kind: _TimerKind, payload: Any) -> None:
        self.timer_count += 1
        heapq.heappush(self.timers, (at, _TIMER_ORDER[kind], self.timer_count, kind, payload))

    def _run_timers(self, before: datetime | None) -> None:
        while self.timers and (before is None or self.timers[0][0] < before):
            at, _, _, kind, payload = heapq.heappop(self.timers)
            if at <= self.timer_limit:
                self._timer(at, kind, payload, apply=True)
            elif (
                self.next_timer is None
                and at > self.now
                and (self.as_of is None or at <= self.as_of)
                and self._timer(at, kind, payload, apply=False)
            ):
                # Timers pop in time order, so the first one that would change the state is the next.
                self.next_timer = at

    def _timer(self, at: datetime, kind: _TimerKind, payload: Any, apply: bool) -> bool:
        """Fire a timer (or, with apply False, only tell whether firing would change the state)."""
        if kind == "legal_end":
            current = self.holding.get(BENEFITS)
            if current is None or current.legal_domain != ASYLBLG:
                return False
            if apply:
                self._release(BENEFITS, at)
                self._open_gap(BENEFITS, at, current.agency, "legal_end", payload)
            return True
        if kind == "overdue":
            offer = self.offers[payload]
            if offer.status != "pending":
                return False
            if apply:
                offer.status, offer.overdue_since = "overdue", at
            return True
        agency, since = payload
        current = self.holding.get(CASE_MANAGEMENT)
        if current is None or (current.agency, current.since) != (agency, since) or self.case_closed_at is not None:
            return False
        if apply:
            review_id = _stable_id("rev", self.subject, CASE_MANAGEMENT, agency, since.isoformat())
            self.reviews.append(ReviewDue(review_id, self.subject, CASE_MANAGEMENT, agency, since, at))
        return True

    # -- responsibility

    def _take(self, area: str, agency: str, legal_domain: str, at: datetime) -> None:
        """`agency` becomes responsible for `area` at `at`, taking it over from any holder."""
        current = self.holding.get(area)
        if current is not None and (current.agency, current.legal_domain) == (agency, legal_domain):
            return
        if current is not None:
            self._release(area, at)
        self._hold(area, agency, legal_domain, at)
        self._close_gap(area, at, closed_by=agency)
        for offer in list(self.open_offers.get(area, {}).values()):
            if (agency, legal_domain) == (offer.to_agency, offer.to_legal_domain):
                self._resolve(offer, "accepted", at)
            elif agency != offer.from_agency or (
                offer.from_legal_domain is not None and legal_domain != offer.from_legal_domain
            ):
                self._resolve(offer, "satisfied", at)

    def _hold(self, area: str, agency: str, legal_domain: str, at: datetime) -> None:
        done = self.intervals.get(area)
        if done and done[-1].to == at and (done[-1].agency, done[-1].legal_domain) == (agency, legal_domain):
            since = done.pop().from_  # closed and reopened at one instant: held continuously
        else:
            since = at
            if area == CASE_MANAGEMENT and self.rules.r3.enabled:
                self._schedule(self.rules.r3.after.after(at), "review", (agency, at))
        self.holding[area] = _Holding(agency, legal_domain, since)

    def _release(self, area: str, at: datetime) -> None:
        current = self.holding.pop(area)
        if current.since < at:
            interval = Interval(current.agency, current.legal_domain, current.since, at)
            self.intervals.setdefault(area, []).append(interval)

    def _open_gap(self, area: str, at: datetime, last_agency: str, reason: GapReason, cause: EventId) -> None:
        if area not in CONTINUOUS_AREAS or self.case_closed_at is not None or area in self.open_gaps:
            return
        gap_id = _stable_id("gap", self.subject, *cause, area)
        self.open_gaps[area] = _OpenGap(gap_id, at, last_agency, reason)

    def _close_gap(self, area: str, at: datetime, closed_by: str | None) -> None:
        gap = self.open_gaps.pop(area, None)
        if gap is not None and gap.since < at:
            self.gaps.append(
                Gap(gap.gap_id, self.subject, area, gap.since, at, gap.last_agency, gap.reason, closed_by)
            )

    # -- handovers

    def _lookup(self, handover_id: str) -> _Offer | None:
        return self.offers.get(self.aliases.get(handover_id, handover_id))

    def _resolve(self, offer: _Offer, status: HandoverStatus, at: datetime) -> None:
        offer.status, offer.resolved_at = status, at
        self.open_offers.get(offer.area, {}).pop(offer.handover_id, None)

    def _register(self, offer: _Offer, at: datetime) -> None:
        self.offers[offer.handover_id] = offer
        self.open_offers.setdefault(offer.area, {})[offer.handover_id] = offer
        if offer.deadline is not None:
            self._schedule(max(offer.deadline, at), "overdue", offer.handover_id)
        self._apply_waiting(offer, at)

    def _replace(self, expected: _Offer, actual: _Offer, at: datetime) -> None:
        """`actual` replaces `expected` and inherits its deadline and rule."""
        actual.deadline, actual.rule, actual.replaces = expected.deadline, expected.rule, expected.handover_id
        expected.replaced_by = actual.handover_id
        self._resolve(expected, "replaced", at)
        self.offers[expected.handover_id] = expected
        self.aliases[expected.handover_id] = actual.handover_id

    def _apply_waiting(self, offer: _Offer, at: datetime) -> None:
        """Decisions that arrived (in effective time) before their handover existed take effect now."""
        ids = [offer.handover_id] + ([offer.replaces] if offer.replaces else [])
        decisions = sorted((f for i in ids for f in self.waiting.pop(i, [])), key=_sort_key)
        for decision in decisions:
            self._decide(offer, decision, at)

    def _decide(self, offer: _Offer, decision: Fact, at: datetime) -> None:
        if offer.status in _DECIDED or decision.agency != offer.to_agency:
            return
        if decision.event_name == "HandoverAccepted":
            self._resolve(offer, "accepted", at)
            self._take(offer.area, offer.to_agency, offer.to_legal_domain, at)
        else:
            self._resolve(offer, "rejected", at)

    def _open_match(self, area: str, to_agency: str, kind: HandoverKind) -> _Offer | None:
        # An actual offer already linked to a rule cannot take a second expectation.
        for offer in self.open_offers.get(area, {}).values():
            if offer.kind == kind and offer.to_agency == to_agency and (kind == "expected" or offer.rule is None):
                return offer
        return None

    def _expect(self, cause: Fact, area: str, current: _Holding, to: tuple[str, str], deadline: datetime,
                rule: Rule) -> None:
        expected = _Offer(
            handover_id=_stable_id("exp", self.subject, *cause.event_id, area),
            kind="expected",
            area=area,
            from_agency=current.agency,
            from_legal_domain=current.legal_domain,
            to_agency=to[0],
            to_legal_domain=to[1],
            offered_at=cause.time,
            deadline=deadline,
            rule=rule,
        )
        actual = self._open_match(area, to[0], "actual")
        if actual is None:
            self._register(expected, cause.time)
            return
        self._replace(expected, actual, cause.time)
        self._schedule(max(deadline, cause.time), "overdue", actual.handover_id)
        self._apply_waiting(actual, cause.time)

    def _rule_pending(self, area: str, rule: Rule) -> bool:
        return any(offer.rule == rule for offer in self.open_offers.get(area, {}).values())

    # -- fact handlers

    def _opened(self, fact: Fact) -> None:
        area, legal_domain = _text(fact.data, "area"), _text(fact.data, "legal_domain")
        if area and legal_domain:
            self._take(area, fact.agency, legal_domain, fact.time)

    def _offered(self, fact: Fact) -> None:
        handover_id, area = _text(fact.data, "handover_id"), _text(fact.data, "area")
        to_agency, to_legal_domain = _text(fact.data, "to_agency"), _text(fact.data, "to_legal_domain")
        if not (handover_id and area and to_agency and to_legal_domain) or self._lookup(handover_id) is not None:
            return  # the first offer under an id wins
        current = self.holding.get(area)
        offer = _Offer(
            handover_id=handover_id,
            kind="actual",
            area=area,
            from_agency=fact.agency,
            from_legal_domain=current.legal_domain if current and current.agency == fact.agency else None,
            to_agency=to_agency,
            to_legal_domain=to_legal_domain,
            offered_at=fact.time,
        )
        expected = self._open_match(area, to_agency, "expected")
        if expected is not None:
            self._replace(expected, offer, fact.time)
        self._register(offer, fact.time)

    def _decided(self, fact: Fact) -> None:
        handover_id = _text(fact.data, "handover_id")
        if handover_id is None:
            return
        offer = self._lookup(handover_id)
        if offer is None:
            self.waiting.setdefault(handover_id, []).append(fact)
        else:
            self._decide(offer, fact, fact.time)

    def _closed_by_agency(self, fact: Fact) -> None:
        area, reason = _text(fact.data, "area"), _text(fact.data, "reason")
        current = self.holding.get(area or "")
        if area is None or current is None or current.agency != fact.agency:
            return  # only the holder can close its own responsibility
        self._release(area, fact.time)
        if reason in ("need_ended", "moved_away"):
            for offer in list(self.open_offers.get(area, {}).values()):
                self._resolve(offer, "satisfied", fact.time)
        else:
            gap_reason: GapReason = "closed_not_competent" if reason == "not_competent" else "closed_other"
            self._open_gap(area, fact.time, fact.agency, gap_reason, fact.event_id)

    def _case_closed(self, fact: Fact) -> None:
        if self.case_closed_at is not None:
            return
        self.case_closed_at = fact.time
        for area in list(self.open_gaps):
            self._close_gap(area, fact.time, closed_by=None)
        for offers in self.open_offers.values():
            for offer in list(offers.values()):
                self._resolve(offer, "cancelled", fact.time)

    def _title(self, fact: Fact) -> None:
        r1 = self.rules.r1
        current = self.holding.get(BENEFITS)
        if (
            not r1.enabled
            or self.case_closed_at is not None
            or _text(fact.data, "category") not in r1.categories
            or current is None
            or current.legal_domain != ASYLBLG
            or self._rule_pending(BENEFITS, "R1")
        ):
            return
        legal_end = r1.legal_end_after(fact.time)
        self._expect(fact, BENEFITS, current, (r1.to_agency, r1.to_legal_domain), legal_end, "R1")
        self._schedule(legal_end, "legal_end", fact.event_id)

    def _language(self, fact: Fact) -> None:
        r2 = self.rules.r2
        level = fact.data.get("level")
        current = self.holding.get(LABOUR_MARKET)
        if (
            not r2.enabled
            or self.case_closed_at is not None
            or str(fact.data.get("language", "")).lower() != "de"
            or level not in CEFR_LEVELS
            or CEFR_LEVELS.index(level) < CEFR_LEVELS.index(r2.min_level)
            or current is None
            or current.agency != "integration_center"
            or self._rule_pending(LABOUR_MARKET, "R2")
        ):
            return
        benefits = self.holding.get(BENEFITS)
        under_sgb_ii = benefits is not None and benefits.legal_domain == "SGB_II"
        to = ("job_center", "SGB_II") if under_sgb_ii else ("employment_agency", "SGB_III")
        self._expect(fact, LABOUR_MARKET, current, to, r2.deadline.after(fact.time), "R2")

    # -- result

    def state(self, subject: str | None, next_deadline: datetime | None) -> PersonState:
        areas = {area: list(done) for area, done in self.intervals.items()}
        for area, current in self.holding.items():
            areas.setdefault(area, []).append(Interval(current.agency, current.legal_domain, current.since, None))
        gaps = self.gaps + [
            Gap(g.gap_id, self.subject, area, g.since, None, g.last_agency, g.reason)
            for area, g in self.open_gaps.items()
        ]
        frozen = sorted((self._frozen(o) for o in self.offers.values()), key=lambda h: (h.offered_at, h.handover_id))
        return PersonState(
            subject=subject,
            areas={area: areas[area] for area in sorted(areas)},
            gaps=sorted(gaps, key=lambda g: (g.since, g.area, g.gap_id)),
            handovers=[h for h in frozen if h.status != "replaced"],
            replaced_handovers=[h for h in frozen if h.status == "replaced"],
            reviews_due=sorted(self.reviews, key=lambda r: (r.due, r.review_id)),
            case_closed_at=self.case_closed_at,
            next_deadline=next_deadline,
        )

    def _frozen(self, offer: _Offer) -> Handover:
        return Handover(
            handover_id=offer.handover_id,
            kind=offer.kind,
            subject=self.subject,
            area=offer.area,
            from_agency=offer.from_agency,
            from_legal_domain=offer.from_legal_domain,
            to_agency=offer.to_agency,
            to_legal_domain=offer.to_legal_domain,
            status=offer.status,
            deadline=offer.deadline,
            offered_at=offer.offered_at,
            resolved_at=offer.resolved_at,
            rule=offer.rule,
            overdue_since=offer.overdue_since,
            replaces=offer.replaces,
            replaced_by=offer.replaced_by,
        )


# --- derived events -------------------------------------------------------------------


def derived_events(state: PersonState, subject: str) -> list[DerivedEvent]:
    """The derived events the state implies, sorted by time; their data fits the `contracts` models.

    Ids are `<type>:<subject>:<handover/gap/review id>`, so a service publishes each
    one once by diffing ids against what it has published.
    """
    events: list[DerivedEvent] = []

    def add(event_type: str, key: str, time: datetime, data: dict[str, Any]) -> None:
        events.append(DerivedEvent(f"{event_type}:{subject}:{key}", event_type, subject, time, data))

    for handover in state.handovers + state.replaced_handovers:
        if handover.kind == "expected" and handover.deadline is not None:
            add("HandoverExpected", handover.handover_id, handover.offered_at, {
                "handover_id": handover.handover_id,
                "area": handover.area,
                "from_agency": handover.from_agency,
                "to_agency": handover.to_agency,
                "to_legal_domain": handover.to_legal_domain,
                "deadline": rfc3339(handover.deadline),
                "rule": handover.rule,
            })
        if handover.overdue_since is not None and handover.deadline is not None:
            add("HandoverOverdue", handover.handover_id, handover.overdue_since, {
                "handover_id": handover.handover_id,
                "kind": handover.kind,
                "area": handover.area,
                "from_agency": handover.from_agency,
                "to_agency": handover.to_agency,
                "deadline": rfc3339(handover.deadline),
            })
    for gap in state.gaps:
        opened = {
            "gap_id": gap.gap_id,
            "area": gap.area,
            "since": rfc3339(gap.since),
            "last_agency": gap.last_agency,
            "reason": gap.reason,
        }
        add("JurisdictionGapOpened", gap.gap_id, gap.since, opened)
        if gap.until is not None:
            add("JurisdictionGapClosed", gap.gap_id, gap.until,
                {**opened, "until": rfc3339(gap.until), "closed_by": gap.closed_by})
    for review in state.reviews_due:
        add("ReviewDue", review.review_id, review.due, {
            "area": review.area,
            "agency": review.agency,
            "held_since": rfc3339(review.held_since),
            "due": rfc3339(review.due),
        })
    order = {"HandoverExpected": 0, "JurisdictionGapOpened": 1, "HandoverOverdue": 2, "JurisdictionGapClosed": 3,
             "ReviewDue": 4}
    return sorted(events, key=lambda e: (e.time, order[e.type], e.event_id))


def retractions(state: PersonState, subject: str, opened: Mapping[str, Mapping[str, Any]],
                closed: set[str]) -> list[DerivedEvent]:
    """Closures for gaps announced earlier that late-arriving facts have undone.

    `opened` maps the gap ids of the JurisdictionGapOpened events published for
    this person to their data; `closed` holds the gap ids already closed. A gap
    that no longer exists is closed with `until` equal to `since` (it never had a
    duration) and no `closed_by`, so that every opened gap is closed once.
    """
    current = {gap.gap_id for gap in state.gaps}
    events = []
    for gap_id, data in sorted(opened.items()):
        if gap_id in current or gap_id in closed:
            continue
        since = parse_rfc3339(data["since"])
        events.append(DerivedEvent(f"JurisdictionGapClosed:{subject}:{gap_id}", "JurisdictionGapClosed", subject,
                                   since, {**data, "until": data["since"], "closed_by": None}))
    return events


