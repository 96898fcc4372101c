"""What a case manager must look at, as pure functions over a person's events.

`summarise` folds the events of one person (agency events and the referral
service's derived events, as published) into a `PersonSummary`: who registered
the person, which agency holds which area now, and the facts behind alerts —
open jurisdiction gaps, overdue handovers, reviews due (R3), the goals of the
current agreement and the measures of the Maßnahmenkette. `alerts` turns a summary
into the alerts due at an instant, keeping those the viewer may see.

Responsibility here is a summary for choosing whom to list; the referral service
remains the authority (the person page charts its answer). Derived events are
facts that are never withdrawn, even when events arriving later undo them, so a
gap counts as open only if nobody held its area when it opened and nobody has
taken the area since (nor closed the case), and an overdue handover counts as
settled once an event shows it was decided, replaced or overtaken:
- accepted or rejected (its own id), or replaced by an actual offer of the same
  area to the same receiver (an expected handover);
- another agency, or the sender in another legal domain, took the area (opening
  it or accepting any offer of it), or the sender closed it for
  `need_ended`/`moved_away`, after the handover began;
- the person's case was closed.
A review due is settled by a re-assessment at or after its due time, by the area
changing hands, or by the case being closed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import orjson

from contracts import parse_rfc3339

BERLIN = ZoneInfo("Europe/Berlin")
LEGAL_END_DOMAIN = "ASYLBLG"
"""Rule R1: the only responsibility that ends by law, whatever the agencies do."""
MEASURE_FOLLOW_UP_DAYS = 14
"""A measure ending within this many days with nothing after it is flagged (Maßnahmenkette)."""

AlertKind = Literal["gap", "handover_overdue", "review_due", "goal_overdue", "measure_without_follow_up"]
ALERT_ORDER: tuple[AlertKind, ...] = ("gap", "handover_overdue", "review_due", "goal_overdue",
                                      "measure_without_follow_up")

# Same effective instant: closures before openings before offers before decisions,
# as the referral service orders them.
_PRIORITY = {"CaseClosedByAgency": 0, "CaseOpenedByAgency": 1, "HandedOverToAgency": 2, "HandoverAccepted": 3,
             "HandoverRejected": 4}


def event_name(envelope: Mapping[str, Any]) -> str:
    """`IntegrationAgreementSigned` of `de.kim.IntegrationAgreementSigned.v1`."""
    return str(envelope["type"]).split(".")[2]


def emitter(envelope: Mapping[str, Any]) -> str | None:
    """The agency in `source`; None for the KIM services' derived events."""
    parts = str(envelope["source"]).split(":")
    return None if parts[2] == "service" else parts[2]


@dataclass
class PersonSummary:
    registered_by: str | None = None
    municipality: str | None = None
    holders: dict[str, str] = field(default_factory=dict)
    involved: list[str] = field(default_factory=list)  # agencies that hold or held an area, or sent events
    case_closed_at: str | None = None
    gaps: list[dict[str, Any]] = field(default_factory=list)  # open ones
    overdue_handovers: list[dict[str, Any]] = field(default_factory=list)  # unsettled ones
    reviews: list[dict[str, Any]] = field(default_factory=list)  # unsettled ones
    agreement: dict[str, Any] | None = None  # the latest signed: plan_id, agency, goals still open
    measures: list[dict[str, Any]] = field(default_factory=list)
    employment_since: str | None = None

    def to_json(self) -> str:
        # orjson writes a dataclass directly; `dataclasses.asdict` deep-copies it first, which took a
        # third of the consumer's handler time in a catch-up.
        return orjson.dumps(self).decode()

    @classmethod
    def from_json(cls, text: str | bytes) -> PersonSummary:
        return cls(**orjson.loads(text))


def summarise(envelopes: Iterable[Mapping[str, Any]]) -> PersonSummary:
    """Fold one person's events (any order; duplicates by (source, id) count once)."""
    unique = {(e["source"], e["id"]): e for e in envelopes}
    events = sorted(unique.values(), key=lambda e: (parse_rfc3339(e["time"]), _PRIORITY.get(event_name(e), 9),
                                                    parse_rfc3339(e["recordedtime"]), e["id"]))
    summary = PersonSummary()
    offers = _offers(events)
    involved: set[str] = set()
    held_in: dict[str, str] = {}  # area -> legal domain of its holder
    goals_achieved: set[tuple[str, str]] = set()
    for envelope in events:
        name, agency, data, time = event_name(envelope), emitter(envelope), envelope["data"], envelope["time"]
        if agency is not None:
            involved.add(agency)
        if name == "PersonRegistered" and summary.registered_by is None:
            summary.registered_by, summary.municipality = agency, data["municipality"]
        elif name == "CaseOpenedByAgency":
            _take(summary, held_in, data["area"], agency, data["legal_domain"])
        elif name == "HandoverAccepted":
            offer = offers.get(data["handover_id"])
            if offer is not None and offer["to_agency"] == agency:
                _take(summary, held_in, offer["area"], agency, offer["to_legal_domain"])
        elif name == "CaseClosedByAgency" and summary.holders.get(data["area"]) == agency:
            del summary.holders[data["area"]]
        elif name == "JurisdictionGapOpened":
            # Counted only if the events as they stand still leave the area without a holder
            # at that instant; else events that arrived later have undone the gap.
            area = data["area"]
            if data["reason"] != "legal_end":
                if area not in summary.holders:
                    summary.gaps.append(dict(data))
            elif (summary.holders.get(area), held_in.get(area)) == (data["last_agency"], LEGAL_END_DOMAIN):
                del summary.holders[area]  # the AsylbLG responsibility ended by law
                summary.gaps.append(dict(data))
        elif name == "JurisdictionGapClosed":
            summary.gaps = [g for g in summary.gaps if g["gap_id"] != data["gap_id"]]
        elif name == "CaseClosed" and summary.case_closed_at is None:
            summary.case_closed_at = time
            summary.gaps = []
        elif name == "HandoverOverdue":
            offered = offers.get(data["handover_id"], {}).get("offered")
            summary.overdue_handovers.append({**data, "offered": offered})
        elif name == "ReviewDue":
            summary.reviews.append(dict(data))
        elif name == "IntegrationAgreementSigned":
            summary.agreement = {"plan_id": data["plan_id"], "agency": agency, "signed": time,
                                 "goals": [dict(g) for g in data["goals"]]}
        elif name == "GoalAchieved":
            goals_achieved.add((data["plan_id"], data["goal_id"]))
        elif name == "MeasureAssigned":
            summary.measures.append({**data, "agency": agency, "completed": None, "outcome": None})
        elif name == "MeasureCompleted":
            for measure in summary.measures:
                if measure["measure_id"] == data["measure_id"] and measure["completed"] is None:
                    measure["completed"], measure["outcome"] = time, data["outcome"]
        elif name == "EmploymentStarted":
            summary.employment_since = time
    summary.involved = sorted(involved | set(summary.holders.values()))
    summary.overdue_handovers = [h for h in summary.overdue_handovers
                                 if not _handover_settled(h, events, offers)]
    summary.reviews = [r for r in summary.reviews if not _review_settled(r, events, summary)]
    if summary.agreement is not None:
        plan_id = summary.agreement["plan_id"]
        summary.agreement["goals"] = [g for g in summary.agreement["goals"]
                                      if (plan_id, g["goal_id"]) not in goals_achieved]
    return summary


def _take(summary: PersonSummary, held_in: dict[str, str], area: str, agency: str, legal_domain: str) -> None:
    """An agency takes the area: it holds it from now, and any gap in it is over."""
    summary.holders[area], held_in[area] = agency, legal_domain
    summary.gaps = [g for g in summary.gaps if g["area"] != area]


def _offers(events: list[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every handover (actual offers and the rules' expectations) by id, whenever it arrived."""
    offers = {}
    for envelope in events:
        name, data = event_name(envelope), envelope["data"]
        if name in ("HandedOverToAgency", "HandoverExpected"):
            offers[data["handover_id"]] = {"area": data["area"], "to_agency": data["to_agency"],
                                           "to_legal_domain": data["to_legal_domain"],
                                           "offered": envelope["time"],
                                           "from_agency": data.get("from_agency") or emitter(envelope)}
    return offers


def _handover_settled(handover: Mapping[str, Any], events: list[Mapping[str, Any]],
                      offers: Mapping[str, Mapping[str, Any]]) -> bool:
    since = parse_rfc3339(handover["offered"]) if handover.get("offered") else None
    sender_domain = None  # the legal domain the sender held the area in when the handover began
    for envelope in events:
        if (event_name(envelope), emitter(envelope)) == ("CaseOpenedByAgency", handover["from_agency"]) and (
                envelope["data"]["area"] == handover["area"]) and (
                since is None or parse_rfc3339(envelope["time"]) <= since):
            sender_domain = envelope["data"]["legal_domain"]
    for envelope in events:
        name, agency, data = event_name(envelope), emitter(envelope), envelope["data"]
        later = since is None or parse_rfc3339(envelope["time"]) >= since
        if name in ("HandoverAccepted", "HandoverRejected") and data["handover_id"] == handover["handover_id"]:
            return True
        if name == "CaseClosed":
            return True
        if name == "HandedOverToAgency" and handover["kind"] == "expected" and later and (
                data["area"], data["to_agency"]) == (handover["area"], handover["to_agency"]):
            return True
        if name == "CaseOpenedByAgency" and later and data["area"] == handover["area"] and (
                agency != handover["from_agency"] or data["legal_domain"] != sender_domain):
            return True
        offer = offers.get(data.get("handover_id", "")) if name == "HandoverAccepted" else None
        if offer is not None and later and offer["area"] == handover["area"] and offer["to_agency"] == agency and (
                agency != handover["from_agency"]):
            return True
        if name == "CaseClosedByAgency" and later and data["area"] == handover["area"] and (
                agency == handover["from_agency"] and data["reason"] in ("need_ended", "moved_away")):
            return True
    return False


def _review_settled(review: Mapping[str, Any], events: list[Mapping[str, Any]], summary: PersonSummary) -> bool:
    if summary.case_closed_at is not None or summary.holders.get(review["area"]) != review["agency"]:
        return True
    due = parse_rfc3339(review["due"])
    return any(event_name(e) == "ReAssessmentCompleted" and parse_rfc3339(e["time"]) >= due for e in events)


# ---- alerts -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Alert:
    """Something due for a person; `facts` are the values the screens word it with."""

    kind: AlertKind
    subject: str
    since: str  # RFC 3339 or YYYY-MM-DD: when it became due
    facts: dict[str, Any]

    @property
    def rank(self) -> int:
        return ALERT_ORDER.index(self.kind)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "subject": self.subject, "since": self.since, **self.facts}


# (agency that emitted the underlying event or None for a derived event, agencies the
# derived event names) -> whether the viewer may see an alert resting on it.
AlertFilter = Callable[[str | None, frozenset[str]], bool]


def today_in_berlin(now: datetime) -> date:
    return now.astimezone(BERLIN).date()


def alerts(subject: str, summary: PersonSummary, now: datetime, may_see: AlertFilter) -> list[Alert]:
    """The alerts due at `now` that `may_see` lets through, most urgent kind first."""
    found: list[Alert] = []
    today = today_in_berlin(now)
    closed = summary.case_closed_at is not None
    for gap in summary.gaps:
        if may_see(None, frozenset({gap["last_agency"]})):
            found.append(Alert("gap", subject, gap["since"], {"area": gap["area"], "last_agency": gap["last_agency"],
                                                              "reason": gap["reason"], "gap_id": gap["gap_id"]}))
    for handover in summary.overdue_handovers:
        if may_see(None, frozenset({handover["from_agency"], handover["to_agency"]})):
            found.append(Alert("handover_overdue", subject, handover["deadline"],
                               {"handover_kind": handover["kind"],
                                **{k: handover[k] for k in ("handover_id", "area", "from_agency", "to_agency",
                                                            "deadline")}}))
    for review in summary.reviews:
        if may_see(None, frozenset({review["agency"]})):
            found.append(Alert("review_due", subject, review["due"], {"area": review["area"],
                                                                      "agency": review["agency"],
                                                                      "held_since": review["held_since"]}))
    agreement = summary.agreement
    if agreement is not None and not closed and may_see(agreement["agency"], frozenset()):
        for goal in agreement["goals"]:
            if date.fromisoformat(goal["due"]) < today:
                found.append(Alert("goal_overdue", subject, goal["due"],
                                   {"plan_id": agreement["plan_id"], "goal_id": goal["goal_id"],
                                    "goal_kind": goal["kind"], "target": goal["target"], "due": goal["due"],
                                    "agency": agreement["agency"]}))
    last = _last_measure(summary.measures)
    if last is not None and not closed and may_see(last["agency"], frozenset()):
        ends = _measure_end(last)
        employed_after = summary.employment_since is not None and (
            today_in_berlin(parse_rfc3339(summary.employment_since)) >= date.fromisoformat(last["starts"]))
        if ends is not None and ends <= today + timedelta(days=MEASURE_FOLLOW_UP_DAYS) and not employed_after:
            found.append(Alert("measure_without_follow_up", subject, ends.isoformat(),
                               {"measure_id": last["measure_id"], "measure_kind": last["kind"],
                                "provider": last["provider"], "ends": ends.isoformat(), "agency": last["agency"],
                                "waiting_days": max(0, (today - ends).days)}))
    return sorted(found, key=lambda a: (a.rank, a.since))


def _measure_end(measure: Mapping[str, Any]) -> date | None:
    """The measure's last day: when it was completed, else its planned end; None while open-ended."""
    if measure["completed"] is not None:
        return today_in_berlin(parse_rfc3339(measure["completed"]))
    return date.fromisoformat(measure["ends"]) if measure["ends"] else None


def _last_measure(measures: list[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The measure that ends the chain: None when there is none or one runs without an end."""
    if not measures or any(_measure_end(m) is None for m in measures):
        return None
    return max(measures, key=lambda m: (_measure_end(m), m["starts"]))
