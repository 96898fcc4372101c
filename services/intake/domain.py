"""The intake domain: the `Person` aggregate, pseudonyms and duplicate keys.

Pure: no web, Kafka or database code. Personal data (names, birth date,
contact, notes) reaches the aggregate only sealed — encrypted with the
person's own key by the application layer — so the event store never holds it
in plaintext, and destroying the key erases it everywhere (crypto-shredding).
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any, Literal
from uuid import UUID, uuid5

import orjson
from eventsourcing.domain import Aggregate, event

from contracts.events import CASE_AGENCIES

# Agencies that may register persons and publish consents and profiles (§3).
REGISTERING_AGENCIES = frozenset(a.value for a in CASE_AGENCIES)

ProfileKind = Literal["ProfileCompleted", "ReAssessmentCompleted"]


class IntakeError(Exception):
    """A request the domain refuses; the message says why in plain words."""


class NotAllowed(IntakeError):
    """The caller's agency may not do this."""


class PersonErased(IntakeError):
    """The person's personal data were erased."""


# ---- pseudonyms ------------------------------------------------------------------------

_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
# Fixed namespace of person aggregate ids (chosen once; never change it).
_PERSON_NAMESPACE = UUID("0b9c5d4e-3f1a-4c7e-9a61-52d8e0f4a7c3")


def new_pseudonym() -> str:
    """`P-` and 10 random base32 characters (50 bits): never derived from the person."""
    return "P-" + "".join(secrets.choice(_BASE32) for _ in range(10))


def person_id(subject: str) -> UUID:
    """The aggregate id of a pseudonym, so a subject can be registered only once."""
    return uuid5(_PERSON_NAMESPACE, subject)


# ---- personal data -------------------------------------------------------------------------

@dataclass(frozen=True)
class PersonalData:
    """What identifies a person; never leaves intake unencrypted except to authorised readers."""

    given_name: str
    family_name: str
    birth_date: date
    phone: str | None = None
    email: str | None = None
    address: str | None = None
    notes: str | None = None
    language: str | None = None
    more: dict[str, Any] = field(default_factory=dict)  # further fields the registering system sent

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> PersonalData:
        fields = orjson.loads(raw)
        fields["birth_date"] = date.fromisoformat(fields["birth_date"])
        return cls(**fields)


# ---- duplicate keys ----------------------------------------------------------------------

# Name particles written sometimes apart, sometimes not at all (Al-Hassan / Hassan).
PARTICLES = frozenset({
    "al", "el", "ul", "abu", "ibn", "bin", "ben", "bint", "von", "van", "der", "den", "de", "da", "di", "du",
    "del", "la", "le", "zu", "zum", "zur", "ter", "ten", "dos", "das",
})
_SPECIAL = str.maketrans({"æ": "ae", "ø": "o", "œ": "oe", "đ": "d", "ð": "d", "ł": "l", "ı": "i", "þ": "th"})


def fold_name(text: str) -> str:
    """Lower case without accents: `Müller` → `muller`, `Straße` → `strasse`."""
    decomposed = unicodedata.normalize("NFKD", text.casefold().translate(_SPECIAL))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def name_tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[\W_]+", fold_name(text)) if t]


_CODES = {**dict.fromkeys("aeijouy", "0"), "b": "1", **dict.fromkeys("fvw", "3"), **dict.fromkeys("gkq", "4"),
          "l": "5", "m": "6", "n": "6", "r": "7", "s": "8", "z": "8"}


def _cologne_code(prev: str, ch: str, nxt: str) -> str:
    if ch in _CODES:
        return _CODES[ch]
    if ch == "h":
        return ""
    if ch == "p":
        return "3" if nxt == "h" else "1"
    if ch in "dt":
        return "8" if nxt in ("c", "s", "z") else "2"
    if ch == "x":
        return "8" if prev in ("c", "k", "q") else "48"
    if ch == "c":
        if not prev:
            return "4" if nxt != "" and nxt in "ahkloqrux" else "8"
        return "4" if nxt != "" and nxt in "ahkoqux" and prev not in ("s", "z") else "8"
    return ""


def cologne_phonetic(word: str) -> str:
    """Kölner Phonetik of a folded word: spelling variants of German and
    transliterated names share a code (Mohammed/Muhammad, Müller/Mueller)."""
    letters = [ch for ch in word if "a" <= ch <= "z"]
    raw = "".join(_cologne_code(letters[i - 1] if i else "", ch, letters[i + 1] if i + 1 < len(letters) else "")
                  for i, ch in enumerate(letters))
    collapsed = "".join(d for i, d in enumerate(raw) if i == 0 or d != raw[i - 1])
    return collapsed[:1] + collapsed[1:].replace("0", "")


def _code(tokens: list[str]) -> str:
    fused = "".join(tokens)
    # Names in a script without Latin letters are compared as written.
    return cologne_phonetic(fused) or fused


def duplicate_keys(given_name: str, family_name: str, birth_date: date) -> frozenset[str]:
    """Keys two registrations of one person share despite spelling variants.

    A pair of name codes plus the birth date: given names fused or only the
    first one, family names fused with or without particles, in either order
    (given and family names are often swapped when transliterated).
    """
    given, family = name_tokens(given_name), name_tokens(family_name)
    given_variants = {_code(given), _code(given[:1])}
    family_variants = {_code(family), _code([t for t in family if t not in PARTICLES] or family)}
    return frozenset(
        "|".join([birth_date.isoformat(), *sorted((g, f))])
        for g in given_variants for f in family_variants
    )


# ---- the aggregate ---------------------------------------------------------------------

@dataclass(frozen=True)
class Registration:
    """The pseudonymous part of a registration: what `PersonRegistered` carries."""

    municipality: str
    birth_year: int
    arrival_date: date
    country_of_origin: str


@dataclass(frozen=True)
class OwnConsent:
    """A consent event recorded through intake; `version` identifies its aggregate event."""

    version: int
    kind: Literal["recorded", "withdrawn"]
    agency: str
    time: datetime
    shared_with: tuple[str, ...]
    purposes: tuple[str, ...] = ()
    valid_until: date | None = None


class Person(Aggregate):
    """A person known to intake: registered here (with sealed personal data), or
    registered through an agency's own system and adopted here when a case
    manager first records something about them (no personal data then)."""

    class Registered(Aggregate.Created):
        subject: str
        agency: str
        actor: str
        registered_at: datetime
        municipality: str
        birth_year: int
        arrival_date: date
        country_of_origin: str
        sealed: str

    class Adopted(Aggregate.Created):
        subject: str
        agency: str

    def __init__(self, subject: str, agency: str, actor: str | None = None, registered_at: datetime | None = None,
                 municipality: str | None = None, birth_year: int | None = None, arrival_date: date | None = None,
                 country_of_origin: str | None = None, sealed: str | None = None) -> None:
        self.subject = subject
        self.registered_by = agency
        self.registered_at = registered_at
        self.registration = None if municipality is None else Registration(
            municipality, birth_year, arrival_date, country_of_origin)
        self.sealed = sealed
        self.erased = False
        self.consents: list[OwnConsent] = []

    @classmethod
    def register(cls, subject: str, agency: str, actor: str, registered_at: datetime, registration: Registration,
                 sealed: str) -> Person:
        _check_agency(agency)
        return cls._create(cls.Registered, id=person_id(subject), subject=subject, agency=agency, actor=actor,
                           registered_at=registered_at, sealed=sealed, **registration.__dict__)

    @classmethod
    def adopt(cls, subject: str, registered_by: str) -> Person:
        return cls._create(cls.Adopted, id=person_id(subject), subject=subject, agency=registered_by)

    @property
    def holds_personal_data(self) -> bool:
        return self.registration is not None

    # ---- commands: check, then record -------------------------------------------------

    def record_consent(self, agency: str, actor: str, time: datetime, shared_with: list[str], purposes: list[str],
                       valid_until: date | None) -> None:
        self._check_active(agency)
        self._consent_recorded(self.subject, agency, actor, time, shared_with, purposes, valid_until)

    def withdraw_consent(self, agency: str, actor: str, time: datetime, shared_with: list[str]) -> None:
        self._check_active(agency)
        self._consent_withdrawn(self.subject, agency, actor, time, shared_with)

    def complete_profile(self, kind: ProfileKind, agency: str, actor: str, time: datetime,
                         profile: dict[str, Any]) -> None:
        self._check_active(agency)
        self._profile_recorded(self.subject, kind, agency, actor, time, profile)

    def erase(self, actor: str, agency: str, time: datetime) -> None:
        if self.erased:
            raise PersonErased(f"the personal data of {self.subject} were erased already")
        self._erased(self.subject, actor, agency, time)

    def _check_active(self, agency: str) -> None:
        _check_agency(agency)
        if self.erased:
            raise PersonErased(f"the personal data of {self.subject} were erased; nothing more is recorded")

    # ---- events -------------------------------------------------------------------------
    # Each carries the subject so that the outbox can publish it on its own.
    # While an event is applied, `self.version` is still the previous version.

    @event("ConsentRecorded")
    def _consent_recorded(self, subject: str, agency: str, actor: str, time: datetime, shared_with: list[str],
                          purposes: list[str], valid_until: date | None) -> None:
        self.consents.append(OwnConsent(self.version + 1, "recorded", agency, time, tuple(shared_with),
                                        tuple(purposes), valid_until))

    @event("ConsentWithdrawn")
    def _consent_withdrawn(self, subject: str, agency: str, actor: str, time: datetime, shared_with: list[str]) -> None:
        self.consents.append(OwnConsent(self.version + 1, "withdrawn", agency, time, tuple(shared_with)))

    @event("ProfileRecorded")
    def _profile_recorded(self, subject: str, kind: ProfileKind, agency: str, actor: str, time: datetime,
                          profile: dict[str, Any]) -> None:
        pass  # published only; intake keeps no profile state

    @event("Erased")
    def _erased(self, subject: str, actor: str, agency: str, time: datetime) -> None:
        self.sealed = None
        self.erased = True


def _check_agency(agency: str) -> None:
    if agency not in REGISTERING_AGENCIES:
        raise NotAllowed(f"agency {agency} may not register persons or record consents and profiles; "
                          f"only {', '.join(sorted(REGISTERING_AGENCIES))} may (interface §3)")
