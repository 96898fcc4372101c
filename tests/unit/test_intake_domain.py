"""Intake's pure parts: pseudonyms, name keys, the Person aggregate, sealing, what goes on Kafka."""

from __future__ import annotations

import re
import secrets
from datetime import date, datetime, timezone

import orjson
import pytest

from contracts import validate
from kim.consent import ConsentFact
from kim.messaging import derive_event_id
from services.intake.application import consent_listing, merged, outbox_name, own_facts
from services.intake.crypto import KeyProblem, KeyRing, load_or_create_master_key, parse_master_key, seal, unseal
from services.intake.domain import (
    NotAllowed,
    Person,
    PersonalData,
    PersonErased,
    Registration,
    cologne_phonetic,
    duplicate_keys,
    fold_name,
    new_pseudonym,
)
from services.intake.messaging import envelope_mapper

BIRTH = date(1990, 3, 14)
NOW = datetime(2026, 6, 1, 9, 0, tzinfo=timezone.utc)


def test_pseudonyms_are_random_base32_and_fit_the_subject_rule():
    subjects = {new_pseudonym() for _ in range(200)}
    assert len(subjects) == 200
    assert all(re.fullmatch(r"P-[A-Z2-7]{10}", s) for s in subjects)


@pytest.mark.parametrize("word, code", [
    ("mullerludenscheidt", "65752682"),  # the reference example of Kölner Phonetik
    ("breschnew", "17863"),
    ("wikipedia", "3412"),
    ("christoph", "47823"),
    ("xaver", "4837"),
])
def test_cologne_phonetic_reference_codes(word, code):
    assert cologne_phonetic(word) == code


def test_folding_removes_case_accents_and_sharp_s():
    assert fold_name("Müller-Lüdenscheidt") == "muller-ludenscheidt"
    assert fold_name("STRAẞE") == "strasse"
    assert fold_name("Şahin Çelik") == "sahin celik"


@pytest.mark.parametrize("first, second", [
    (("Mohammed", "Al-Hassan"), ("Muhammad", "Alhassan")),
    (("Mohammed", "Al Hassan"), ("Mohamed", "Hassan")),
    (("Jürgen", "Müller"), ("Juergen", "Mueller")),
    (("Yusuf", "Ahmadi"), ("Youssef", "Ahmadi")),
    (("Fatima Zahra", "Haddad"), ("Fatma", "Hadad")),
    (("Hassan", "Mohammed"), ("Mohammed", "Hassan")),  # given and family name swapped
    (("Anna-Lena", "Schmidt"), ("Anna Lena", "Schmitt")),
])
def test_spelling_variants_of_one_person_share_a_duplicate_key(first, second):
    assert duplicate_keys(*first, BIRTH) & duplicate_keys(*second, BIRTH)


@pytest.mark.parametrize("first, second, second_birth", [
    (("Mohammed", "Al-Hassan"), ("Mohammed", "Al-Hassan"), date(1990, 3, 15)),
    (("Anna", "Schmidt"), ("Maria", "Schmidt"), BIRTH),
    (("Omar", "Khalil"), ("Omar", "Nasser"), BIRTH),
])
def test_different_persons_do_not_share_a_duplicate_key(first, second, second_birth):
    assert not duplicate_keys(*first, BIRTH) & duplicate_keys(*second, second_birth)


def test_names_in_other_scripts_are_compared_as_written():
    assert duplicate_keys("سارة", "أحمد", BIRTH) & duplicate_keys("سارة", "احمد", BIRTH)
    assert not duplicate_keys("سارة", "أحمد", BIRTH) & duplicate_keys("ليلى", "أحمد", BIRTH)


def test_blind_index_keys_match_only_under_the_same_master_key():
    key = sorted(duplicate_keys("Anna", "Schmidt", BIRTH))[0]
    ring = KeyRing(secrets.token_bytes(32))
    assert ring.blind_index(key) == ring.blind_index(key)
    assert "schmidt" not in ring.blind_index(key).lower()
    assert KeyRing(secrets.token_bytes(32)).blind_index(key) != ring.blind_index(key)


# ---- sealing -------------------------------------------------------------------------------

def test_sealed_personal_data_open_only_with_the_persons_key_and_for_that_person():
    ring = KeyRing(secrets.token_bytes(32))
    data_key = ring.new_data_key()
    data = PersonalData("Zyxwarth", "Quonderbeck", BIRTH, notes="Nachbarin hilft")
    sealed = seal(data_key, "P-AAAAAAAAAA", data.to_json())
    assert "Zyxwarth" not in sealed and "1990-03-14" not in sealed
    assert PersonalData.from_json(unseal(data_key, "P-AAAAAAAAAA", sealed)) == data
    with pytest.raises(KeyProblem):
        unseal(ring.new_data_key(), "P-AAAAAAAAAA", sealed)
    with pytest.raises(KeyProblem):
        unseal(data_key, "P-BBBBBBBBBB", sealed)  # moved to another person's record


def test_wrapped_data_keys_unwrap_with_the_master_key_only():
    master = secrets.token_bytes(32)
    data_key = KeyRing.new_data_key()
    wrapped = KeyRing(master).wrap("P-AAAAAAAAAA", data_key)
    assert KeyRing(master).unwrap("P-AAAAAAAAAA", wrapped) == data_key
    with pytest.raises(KeyProblem):
        KeyRing(secrets.token_bytes(32)).unwrap("P-AAAAAAAAAA", wrapped)


def test_master_key_must_be_32_bytes_of_base64_and_a_key_file_is_made_once(tmp_path):
    with pytest.raises(KeyProblem, match="KIM_INTAKE_MASTER_KEY must be 32 random bytes in base64"):
        parse_master_key("c2hvcnQ=", "KIM_INTAKE_MASTER_KEY")
    key_file = tmp_path / "keys" / "intake-master.key"
    first = load_or_create_master_key(None, key_file)
    assert load_or_create_master_key(None, key_file) == first
    assert key_file.stat().st_mode & 0o077 == 0, "the key file is private to its owner"


# ---- the aggregate and what is published ------------------------------------------------------

def registered(agency: str = "integration_center") -> Person:
    return Person.register("P-AAAAAAAAAA", agency, "cm-1", NOW, Registration("Biberach", 1990, date(2024, 5, 2), "SY"),
                           "v1.c2VhbGVk")


def envelopes(person: Person, agency: str) -> list[dict]:
    mapper = envelope_mapper(agency)
    out = []
    for event in person.collect_events():
        envelope = mapper(event, derive_event_id(outbox_name(agency), event.originator_id, event.originator_version))
        if envelope is not None:
            out.append(envelope)
    return out


def test_published_events_are_valid_catalogue_events_without_the_sealed_data():
    person = registered()
    person.record_consent("integration_center", "cm-1", NOW, ["job_center"], ["placement"], date(2027, 1, 1))
    person.complete_profile("ReAssessmentCompleted", "integration_center", "cm-1", NOW, {
        "language_levels": {"de": "B1"}, "qualifications": [], "work_experience_years": 2, "inclinations": [],
        "support_needs": []})
    person.withdraw_consent("integration_center", "cm-1", NOW, ["job_center"])
    person.erase("admin-1", "integration_center", NOW)
    published = envelopes(person, "integration_center")
    assert [e["type"] for e in published] == ["de.kim.PersonRegistered.v1", "de.kim.ConsentRecorded.v1",
                                              "de.kim.ReAssessmentCompleted.v1", "de.kim.ConsentWithdrawn.v1"]
    for envelope in published:
        assert not isinstance(validate(envelope), list), envelope
        assert envelope["source"] == "urn:kim:integration_center:intake"
        assert envelope["subject"] == "P-AAAAAAAAAA"
        assert b"c2VhbGVk" not in orjson.dumps(envelope) and b"cm-1" not in orjson.dumps(envelope)
    assert published[0]["data"] == {"municipality": "Biberach", "birth_year": 1990, "arrival_date": "2024-05-02",
                                    "country_of_origin": "SY"}
    assert published[0]["time"] == "2026-06-01T09:00:00Z"


def test_each_agencys_relay_publishes_only_that_agencys_events():
    person = registered("job_center")
    assert envelopes(person, "integration_center") == []
    person = registered("job_center")
    assert [e["source"] for e in envelopes(person, "job_center")] == ["urn:kim:job_center:intake"]


def test_only_case_agencies_register_and_nothing_is_recorded_for_an_erased_person():
    with pytest.raises(NotAllowed, match="only integration_center, job_center"):
        registered("employment_agency")
    person = registered()
    with pytest.raises(NotAllowed):
        person.record_consent("youth_office", "cm-2", NOW, ["job_center"], ["x"], None)
    person.erase("admin-1", "integration_center", NOW)
    assert person.erased and person.sealed is None
    with pytest.raises(PersonErased):
        person.record_consent("integration_center", "cm-1", NOW, ["job_center"], ["x"], None)
    with pytest.raises(PersonErased):
        person.erase("admin-1", "integration_center", NOW)


def test_own_consents_remember_the_version_that_names_their_published_id():
    person = registered()
    person.record_consent("integration_center", "cm-1", NOW, ["job_center"], ["placement"], None)
    person.withdraw_consent("integration_center", "cm-1", NOW, ["job_center"])
    assert [(c.version, c.kind) for c in person.consents] == [(2, "recorded"), (3, "withdrawn")]
    assert person.version == 3


def test_intakes_own_consents_count_at_once_and_merge_with_their_published_copies():
    person = registered()
    person.record_consent("integration_center", "cm-1", NOW, ["job_center", "youth_office"], ["placement"], None)
    later = NOW.replace(hour=10)
    person.withdraw_consent("integration_center", "cm-1", later, ["job_center"])
    own = own_facts(person)
    published_copy = ConsentFact(own[0].source, own[0].id, "integration_center", "recorded", NOW,
                                 NOW.replace(minute=1), ("job_center", "youth_office"), ("placement",))
    facts = merged([published_copy], own)
    assert [f.key for f in facts] == [own[0].key, own[1].key], "the published copy replaces the own one"
    listing = consent_listing(facts, facts, later.replace(hour=11))
    assert [(e["kind"], e.get("in_force_for"), e.get("withdrawn_for")) for e in listing] == [
        ("recorded", ["youth_office"], ["job_center"]), ("withdrawn", None, None)]
    assert listing[0]["consent_id"] == derive_event_id("intake.integration_center", person.id, 2)
    assert listing[1]["withdrawal_id"] == derive_event_id("intake.integration_center", person.id, 3)
    assert listing[0]["recorded_time"] == "2026-06-01T09:01:00Z"
