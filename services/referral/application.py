"""Use cases of the referral service: apply consumed events, let deadlines pass, answer queries."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from kim.auth import Principal
from kim.messaging import ConsumedEvent
from kim.storage import Database, Transaction
from services.referral.domain import PersonState, compute, derived_events, retractions
from services.referral.projections import RELEVANT_EVENTS, ROW_EVENT_NAME, ROW_SUBJECT, FactRow, ReferralStore
from services.referral.rules import RulesConfig

Clock = Callable[[], datetime]
# Turns a derived event into the envelope bytes published on kim.referral.events.
DerivedEncoder = Callable[..., bytes]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


# ---- who may see what (§6) ----------------------------------------------------------

@dataclass(frozen=True)
class Scope:
    """What a caller may see of responsibility, gaps and handovers."""

    everything: bool = False
    involved_agency: str | None = None  # persons this agency holds, held or receives
    own_handovers_of: str | None = None  # handovers this agency sends or receives


def scope_of(principal: Principal) -> Scope | None:
    """None: the caller may not see any of it."""
    if principal.has_any("auditor") or (principal.has_any("case_manager")
                                        and principal.agency == "integration_center"):
        return Scope(everything=True)
    if principal.has_any("case_manager"):
        return Scope(involved_agency=principal.agency)
    if principal.has_any("agency_system"):
        return Scope(involved_agency=principal.agency, own_handovers_of=principal.agency)
    return None


# ---- the projection ----------------------------------------------------------------

class Referral:
    """Facts are stored by the consumer's handler; persons are recomputed apart from it,
    in chunks. A chunk is read and computed outside the write lock, so that processes
    computing the persons of different partitions work side by side; its rows are
    written only for persons that got no facts meanwhile (the others stay due)."""

    def __init__(self, db: Database, rules: RulesConfig, encode_derived: DerivedEncoder,
                 clock: Clock = utc_now, chunk: int = 500) -> None:
        self._db = db
        self._rules = rules
        self._encode = encode_derived
        self._clock = clock
        self._chunk = chunk
        # One recomputation at a time in this process: two would compute the same persons.
        self._recompute_lock = threading.Lock()

    @property
    def db(self) -> Database:
        return self._db

    def apply(self, tx: Transaction, events: list[ConsumedEvent[FactRow]]) -> None:
        """Handler of the tracked consumer: runs in its transaction."""
        relevant = [e for e in events if e.event[ROW_EVENT_NAME] in RELEVANT_EVENTS]
        if not relevant:
            return
        ReferralStore.add_facts(tx, [e.event for e in relevant])
        ReferralStore.mark_stale(tx, {e.event[ROW_SUBJECT]: e.partition for e in relevant})

    def recompute_due(self, partitions: Sequence[int] | None) -> int:
        """Recompute one chunk of the persons (of `partitions`; None: all) with new facts
        or a passed deadline; returns how many were due, so callers repeat until none is.
        Persons whose facts changed meanwhile are not stored and stay due."""
        with self._recompute_lock:
            now = self._clock()
            with self._db.transaction(readonly=True) as tx:
                due = ReferralStore.due_persons(tx, now, partitions, self._chunk)
                if not due:
                    return 0
                facts = ReferralStore.facts_of(tx, list(due))
                published = ReferralStore.outbox_ids(tx, list(due))
                opened = ReferralStore.opened_gaps(tx, list(due))
            states = {s: compute(facts[s], self._rules, now) for s in due}
            derived = [d for s, state in states.items() for d in derived_events(state, s) if d.event_id not in published]
            closed = {d.event_id for d in derived} | published
            for subject, gaps in opened.items():
                derived += retractions(states[subject], subject, gaps,
                                       {gap_id for gap_id in gaps
                                        if f"JurisdictionGapClosed:{subject}:{gap_id}" in closed})
            envelopes = [(d, self._encode(d, now)) for d in derived]
            with self._db.transaction() as tx:
                kept = ReferralStore.unchanged(tx, due)
                ReferralStore.replace_persons(tx, {s: state for s, state in states.items() if s in kept}, now,
                                              [s for s, computed_before in kept.items() if computed_before])
                ReferralStore.add_to_outbox(tx, [(d, envelope) for d, envelope in envelopes if d.subject in kept])
            return len(due)

    def catch_up_ended(self) -> None:
        """A catch-up has just stored its facts: computing them comes next, by lookups per person
        (on PostgreSQL without fresh statistics a scan of all facts per chunk: 92 ms each, measured)."""
        with self._db.transaction() as tx:
            tx.refresh_statistics("referral_facts", "referral_persons", "referral_outbox")

    def settled(self, partitions: Sequence[int]) -> bool:
        """No person of these partitions waits for a recomputation."""
        with self._db.transaction(readonly=True) as tx:
            return not ReferralStore.any_stale(tx, partitions)

    # ---- queries -------------------------------------------------------------------

    def responsibility(self, subject: str, scope: Scope, as_of: datetime | None,
                       known_at: datetime | None) -> PersonState | None:
        """None when the caller may not see this person."""
        with self._db.transaction(readonly=True) as tx:
            if not scope.everything and not ReferralStore.involved(tx, subject, scope.involved_agency):
                return None
            facts = ReferralStore.facts_of(tx, [subject])[subject]
        return compute(facts, self._rules, self._clock(), as_of=as_of, known_at=known_at)

    def gaps(self, status: str, scope: Scope, subjects: Sequence[str] | None = None) -> list[dict]:
        with self._db.transaction(readonly=True) as tx:
            return ReferralStore.gaps(tx, status, None if scope.everything else scope.involved_agency, subjects)

    def handovers(self, status: str | None, scope: Scope, subjects: Sequence[str] | None = None) -> list[dict]:
        with self._db.transaction(readonly=True) as tx:
            if scope.everything:
                return ReferralStore.handovers(tx, status, None, None, subjects)
            if scope.own_handovers_of is not None:
                return ReferralStore.handovers(tx, status, scope.own_handovers_of, None, subjects)
            return ReferralStore.handovers(tx, status, None, scope.involved_agency, subjects)
