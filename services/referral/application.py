"""Use cases of the referral service: apply consumed events, let deadlines pass, answer queries."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from contracts import ValidatedEvent
from kim.auth import Principal
from kim.messaging import ConsumedEvent
from kim.storage import Database, Transaction
from services.referral.domain import Fact, PersonState, compute, derived_events
from services.referral.projections import RELEVANT_EVENTS, ReferralStore
from services.referral.rules import RulesConfig

Clock = Callable[[], datetime]
# Turns a derived event into the envelope bytes published on kim.referral.events.
DerivedEncoder = Callable[..., bytes]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def fact_of(event: ValidatedEvent) -> Fact:
    envelope = event.envelope
    return Fact((envelope.source, envelope.id), envelope.subject, event.event_name, envelope.agency.value,
                envelope.effective_time, envelope.recorded_time, envelope.data)


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
    def __init__(self, db: Database, rules: RulesConfig, encode_derived: DerivedEncoder,
                 clock: Clock = utc_now) -> None:
        self._db = db
        self._rules = rules
        self._encode = encode_derived
        self._clock = clock
        # Consumer batches and deadline passes both recompute persons; one at a time,
        # so neither overwrites the other's newer result with an older one.
        self._recompute_lock = threading.Lock()

    @property
    def db(self) -> Database:
        return self._db

    def apply(self, tx: Transaction, events: list[ConsumedEvent[ValidatedEvent]]) -> None:
        """Handler of the tracked consumer: runs in its transaction."""
        facts = [fact_of(e.event) for e in events if e.event.event_name in RELEVANT_EVENTS]
        if not facts:
            return
        partitions = {e.event.subject: e.partition for e in events if e.event.event_name in RELEVANT_EVENTS}
        with self._recompute_lock:
            ReferralStore.add_facts(tx, facts)
            self._recompute(tx, list(partitions), partitions)

    def pass_deadlines(self, partitions: Sequence[int] | None) -> int:
        """Recompute the persons (of `partitions`; None: all) whose next deadline has passed; returns how many."""
        with self._recompute_lock, self._db.transaction() as tx:
            due = ReferralStore.due_persons(tx, self._clock(), partitions)
            if due:
                self._recompute(tx, due, ReferralStore.partitions_of(tx, due))
            return len(due)

    def _recompute(self, tx: Transaction, subjects: list[str], partitions: dict[str, int]) -> None:
        now = self._clock()
        facts = ReferralStore.facts_of(tx, subjects)
        states = {s: compute(facts[s], self._rules, now) for s in subjects}
        ReferralStore.replace_persons(tx, states, partitions, now)
        derived = [d for s, state in states.items() for d in derived_events(state, s)]
        ReferralStore.add_to_outbox(tx, [(d, self._encode(d, now)) for d in derived])

    # ---- queries -------------------------------------------------------------------

    def responsibility(self, subject: str, scope: Scope, as_of: datetime | None,
                       known_at: datetime | None) -> PersonState | None:
        """None when the caller may not see this person."""
        with self._db.transaction(readonly=True) as tx:
            if not scope.everything and not ReferralStore.involved(tx, subject, scope.involved_agency):
                return None
            facts = ReferralStore.facts_of(tx, [subject])[subject]
        return compute(facts, self._rules, self._clock(), as_of=as_of, known_at=known_at)

    def gaps(self, status: str, scope: Scope) -> list[dict]:
        with self._db.transaction(readonly=True) as tx:
            return ReferralStore.gaps(tx, status, None if scope.everything else scope.involved_agency)

    def handovers(self, status: str | None, scope: Scope) -> list[dict]:
        with self._db.transaction(readonly=True) as tx:
            if scope.everything:
                return ReferralStore.handovers(tx, status, None, None)
            if scope.own_handovers_of is not None:
                return ReferralStore.handovers(tx, status, scope.own_handovers_of, None)
            return ReferralStore.handovers(tx, status, None, scope.involved_agency)
