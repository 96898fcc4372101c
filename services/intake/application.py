"""Use cases of the intake service: register, read, erase, consents, profiles, access log.

Persons are `Person` aggregates in an eventsourcing application whose events the
outbox relays publish; personal data are sealed with the person's own key
(`crypto`), and every read of them is written to the access log in the same
transaction that decides the read, so no read goes unrecorded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, JSONTranscoder, Transcoding

from contracts import rfc3339
from kim import consent
from kim.auth import Principal
from kim.consent import ConsentFact, Visibility
from kim.messaging import derive_event_id
from kim.storage import Database, Transaction
from services.intake.crypto import KeyRing, seal, unseal
from services.intake.domain import (
    IntakeError,
    NotAllowed,
    Person,
    PersonalData,
    PersonErased,
    ProfileKind,
    Registration,
    duplicate_keys,
    new_pseudonym,
    person_id,
)
from services.intake.store import AccessEntry, IntakeStore

Clock = Callable[[], datetime]

# The integration center runs KIM case management, so its admins may erase any person.
ERASING_AGENCY = "integration_center"


class UnknownPerson(IntakeError):
    pass


class NoPersonalData(UnknownPerson):
    """Known from an agency's own system: intake holds no personal data of the person."""


class ConsentMissing(NotAllowed):
    pass


class ConcurrentChange(IntakeError):
    pass


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def outbox_name(agency: str) -> str:
    """Name of the relay publishing intake's events of `agency`; namespace of their ids."""
    return f"intake.{agency}"


def intake_source(agency: str) -> str:
    return f"urn:kim:{agency}:intake"


def event_id(agency: str, aggregate_id: UUID, version: int) -> str:
    """The CloudEvent id the outbox relay gives an aggregate event (see `OutboxRelay`)."""
    return derive_event_id(outbox_name(agency), aggregate_id, version)


class _DateAsISO(Transcoding):
    type = date
    name = "date_iso"

    def encode(self, obj: date) -> str:
        return obj.isoformat()

    def decode(self, data: str) -> date:
        return date.fromisoformat(data)


class PersonEvents(Application[UUID]):
    """The event store of `Person` aggregates (tables `intake_events` in PostgreSQL)."""

    name = "Intake"

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(_DateAsISO())


@dataclass(frozen=True)
class RegisteredPerson:
    subject: str
    possible_duplicates: list[str]


def own_facts(person: Person) -> list[ConsentFact]:
    """The consent events recorded through intake, as the consumers will see them once published."""
    return [ConsentFact(intake_source(c.agency), event_id(c.agency, person.id, c.version), c.agency, c.kind,
                        c.time, c.time, c.shared_with, c.purposes, c.valid_until)
            for c in person.consents]


def merged(published: Sequence[ConsentFact], own: Sequence[ConsentFact]) -> list[ConsentFact]:
    """Published facts plus those of intake's own not yet consumed back from Kafka."""
    seen = {f.key for f in published}
    return sorted([*published, *(f for f in own if f.key not in seen)], key=lambda f: (f.time, f.source, f.id))


def consent_listing(facts: Sequence[ConsentFact], shown: Sequence[ConsentFact], now: datetime) -> list[dict]:
    """`shown` facts as the API lists them; whether a consent is in force depends on all `facts`."""
    listing = []
    for fact in shown:
        id_name = "consent_id" if fact.kind == "recorded" else "withdrawal_id"
        entry: dict[str, Any] = {id_name: fact.id, "kind": fact.kind, "source": fact.source,
                                 "recorded_by": fact.agency, "time": rfc3339(fact.time),
                                 "recorded_time": rfc3339(fact.recorded_time), "shared_with": list(fact.shared_with)}
        if fact.kind == "recorded":
            entry["purposes"] = list(fact.purposes)
            entry["valid_until"] = fact.valid_until.isoformat() if fact.valid_until else None
            entry["in_force_for"] = [a for a in fact.shared_with if fact in consent.in_force(facts, a, now)]
            entry["withdrawn_for"] = [a for a in fact.shared_with if any(
                w.kind == "withdrawn" and a in w.shared_with and fact.time < w.time <= now for w in facts)]
        listing.append(entry)
    return listing


class Intake:
    def __init__(self, events: PersonEvents, db: Database, keys: KeyRing, *, clock: Clock = utc_now,
                 on_saved: Callable[[], None] = lambda: None) -> None:
        self._events = events
        self._db = db
        self._keys = keys
        self._clock = clock
        self._on_saved = on_saved  # wakes the outbox relays

    # ---- registration ------------------------------------------------------------------

    def register(self, principal: Principal, data: PersonalData, registration: Registration,
                 registered_at: datetime | None) -> RegisteredPerson:
        now = self._clock()
        subject = new_pseudonym()
        data_key = self._keys.new_data_key()
        person = Person.register(subject, principal.agency, principal.sub, registered_at or now, registration,
                                 seal(data_key, subject, data.to_json()))
        blind_keys = {self._keys.blind_index(k)
                      for k in duplicate_keys(data.given_name, data.family_name, data.birth_date)}
        with self._db.transaction() as tx:
            duplicates = IntakeStore.matching(tx, blind_keys)
            IntakeStore.store_key(tx, subject, self._keys.wrap(subject, data_key), now)
            IntakeStore.index(tx, subject, blind_keys)
        try:
            self._events.save(person)
        except BaseException:
            with self._db.transaction() as tx:  # leave nothing of a registration that failed
                IntakeStore.destroy_key(tx, subject)
            raise
        self._on_saved()
        return RegisteredPerson(subject, duplicates)

    # ---- personal data ---------------------------------------------------------------------

    def read(self, principal: Principal, subject: str, purpose: str | None) -> dict[str, Any]:
        """The person's personal data; the read is recorded, or nothing is returned."""
        person = self._person(subject)
        if not person.holds_personal_data:
            raise NoPersonalData(f"intake holds no personal data of {subject}: the person was registered "
                                 f"through the own system of {person.registered_by}")
        now = self._clock()
        with self._db.transaction() as tx:
            seen = self._visibility(tx, person, principal.agency, now)
            if not (principal.has_any("auditor") or seen.personal_data_visible_to(principal.agency)):
                raise ConsentMissing(
                    f"consent missing: {subject} was registered by {person.registered_by}, and no consent of the "
                    f"person shares their personal data with {principal.agency} now")
            wrapped = IntakeStore.wrapped_key(tx, subject)
            if person.erased or wrapped is None:
                raise PersonErased(f"the personal data of {subject} were erased")
            data = PersonalData.from_json(unseal(self._keys.unwrap(subject, wrapped), subject, person.sealed))
            duplicates = IntakeStore.matching(tx, IntakeStore.blind_keys_of(tx, subject), except_subject=subject)
            IntakeStore.append_access(tx, AccessEntry(now, principal.sub, principal.agency, tuple(sorted(
                principal.roles)), subject, "read", purpose, seen.purposes))
        registration = person.registration
        return {
            **data.more,
            "subject": subject,
            "given_name": data.given_name,
            "family_name": data.family_name,
            "birth_date": data.birth_date.isoformat(),
            "phone": data.phone,
            "email": data.email,
            "address": data.address,
            "notes": data.notes,
            "language": data.language,
            "municipality": registration.municipality,
            "arrival_date": registration.arrival_date.isoformat(),
            "country_of_origin": registration.country_of_origin,
            "registered_by": person.registered_by,
            "registered_at": rfc3339(person.registered_at),
            "erased": False,
            "possible_duplicates": duplicates,
            "consent_purposes": list(seen.purposes),
        }

    def erase(self, principal: Principal, subject: str) -> None:
        """Crypto-shredding: the key goes first, so a crash half-way leaves the data unreadable."""
        person = self._person(subject)
        if not person.holds_personal_data:
            raise NoPersonalData(f"intake holds no personal data of {subject}")
        if principal.agency not in (person.registered_by, ERASING_AGENCY):
            raise NotAllowed(f"only admins of {person.registered_by}, which registered {subject}, or of "
                             f"{ERASING_AGENCY} may erase the person")
        if person.erased:
            raise PersonErased(f"the personal data of {subject} were erased already")
        now = self._clock()
        with self._db.transaction() as tx:
            IntakeStore.destroy_key(tx, subject)
            IntakeStore.append_access(tx, AccessEntry(now, principal.sub, principal.agency, tuple(sorted(
                principal.roles)), subject, "erase", None, ()))
        person.erase(principal.sub, principal.agency, now)
        self._save(person)

    # ---- consents and profiles --------------------------------------------------------------

    def record_consent(self, principal: Principal, subject: str, shared_with: list[str], purposes: list[str],
                       valid_until: date | None) -> str:
        person = self._person_or_adopted(subject)
        person.record_consent(principal.agency, principal.sub, self._clock(), shared_with, purposes, valid_until)
        self._save(person)
        return event_id(principal.agency, person.id, person.version)

    def withdraw_consent(self, principal: Principal, subject: str, shared_with: list[str]) -> str:
        person = self._person_or_adopted(subject)
        person.withdraw_consent(principal.agency, principal.sub, self._clock(), shared_with)
        self._save(person)
        return event_id(principal.agency, person.id, person.version)

    def complete_profile(self, principal: Principal, subject: str, kind: ProfileKind,
                         profile: dict[str, Any]) -> str:
        person = self._person_or_adopted(subject)
        person.complete_profile(kind, principal.agency, principal.sub, self._clock(), profile)
        self._save(person)
        return event_id(principal.agency, person.id, person.version)

    def consents(self, principal: Principal, subject: str) -> list[dict]:
        """The person's consent events: all of them to whom may see the person, else the caller's own."""
        person = self._get(subject)
        now = self._clock()
        with self._db.transaction(readonly=True) as tx:
            registered_by = person.registered_by if person else consent.registered_by(tx, subject)
            facts = merged(consent.consent_facts(tx, subject), own_facts(person) if person else [])
        if registered_by is None and not facts:
            raise UnknownPerson(f"no person {subject} is registered")
        sees_all = principal.has_any("auditor") or consent.fold(
            registered_by, facts, principal.agency, now).personal_data_visible_to(principal.agency)
        shown = facts if sees_all else [f for f in facts if f.agency == principal.agency]
        if not sees_all and not shown:
            raise ConsentMissing(f"consent missing: no consent of {subject} shares the person with "
                                 f"{principal.agency} now")
        return consent_listing(facts, shown, now)

    # ---- access log ------------------------------------------------------------------------------

    def access_log(self, subject: str | None) -> list[AccessEntry]:
        with self._db.transaction(readonly=True) as tx:
            return IntakeStore.access_log(tx, subject)

    # ---- helpers ---------------------------------------------------------------------------------

    def _get(self, subject: str) -> Person | None:
        try:
            return self._events.repository.get(person_id(subject))
        except AggregateNotFoundError:
            return None

    def _person(self, subject: str) -> Person:
        person = self._get(subject)
        if person is None:
            raise UnknownPerson(f"no person {subject} is registered in intake")
        return person

    def _person_or_adopted(self, subject: str) -> Person:
        """A person registered elsewhere is adopted on the first consent or profile recorded here."""
        person = self._get(subject)
        if person is not None:
            return person
        with self._db.transaction(readonly=True) as tx:
            registered_by = consent.registered_by(tx, subject)
        if registered_by is None:
            raise UnknownPerson(f"no person {subject} is registered (or the registration has not arrived yet)")
        return Person.adopt(subject, registered_by)

    def _visibility(self, tx: Transaction, person: Person, agency: str, now: datetime) -> Visibility:
        facts = merged(consent.consent_facts(tx, person.subject), own_facts(person))
        return consent.fold(person.registered_by, facts, agency, now)

    def _save(self, person: Person) -> None:
        try:
            self._events.save(person)
        except IntegrityError:
            raise ConcurrentChange(f"{person.subject} was changed at the same time; try again") from None
        self._on_saved()
