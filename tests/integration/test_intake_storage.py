"""Intake's stores without Kafka: no plaintext at rest, crypto-shredding, the
append-only access log and the shared consent projection, on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import json
import secrets
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from contracts import decode
from kim.auth import Principal
from kim.consent import CONSENT_SCHEMA, record_consent_events, registered_by, visibility
from kim.storage import Database, eventsourcing_env
from services.intake import store
from services.intake.application import Intake, PersonEvents
from services.intake.crypto import KeyRing
from services.intake.domain import PersonalData, PersonErased, Registration

EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "examples"
CASE_MANAGER = Principal("cm-1", "integration_center", frozenset({"case_manager"}))
ADMIN = Principal("admin-1", "integration_center", frozenset({"admin"}))
CANARY = PersonalData("Zyxwarthine", "Quonderbeckova", date(1983, 11, 27), phone="+49 7351 990011",
                      email="quonder@example.org", address="Kanarienweg 7, 88400 Biberach",
                      notes="Kanarienvogel-Notiz", language="Tigrinya")
NEEDLES = ["Zyxwarthine", "Quonderbeckova", "1983-11-27", "Kanarienweg", "Kanarienvogel", "quonder@example.org"]


def open_intake(url: str) -> tuple[Intake, PersonEvents, Database]:
    db = Database.from_url(url)
    db.ensure_schema(CONSENT_SCHEMA + store.schema(db.dialect))
    events = PersonEvents(env=eventsourcing_env(url))
    return Intake(events, db, KeyRing(secrets.token_bytes(32))), events, db


def register_canary(intake: Intake) -> str:
    return intake.register(CASE_MANAGER, CANARY, Registration("Biberach", 1983, date(2024, 2, 1), "ER"), None).subject


def hits_in_files(directory: Path) -> list[str]:
    found = []
    for path in directory.rglob("*"):
        if path.is_file():
            raw = path.read_bytes()
            found += [f"{path.name}: {n}" for n in NEEDLES if n.encode() in raw or n.encode("utf-16-le") in raw]
    return found


def hits_in_postgres(url: str) -> list[str]:
    """Every row of every table as text (bytea shows as hex, so look for that too)."""
    found = []
    with psycopg.connect(url) as conn:
        tables = [t for (t,) in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")]
        for table in tables:
            for (row,) in conn.execute(f'SELECT t::text FROM "{table}" t'):
                found += [f"{table}: {n}" for n in NEEDLES if n in row or n.encode().hex() in row]
    return found


def test_sqlite_files_hold_no_plaintext_and_nothing_readable_after_erasure(tmp_path):
    intake, events, db = open_intake(f"sqlite:///{tmp_path / 'intake.sqlite3'}")
    subject = register_canary(intake)
    assert intake.read(CASE_MANAGER, subject, "check")["family_name"] == "Quonderbeckova"
    assert hits_in_files(tmp_path) == []
    intake.erase(ADMIN, subject)
    with pytest.raises(PersonErased):
        intake.read(CASE_MANAGER, subject, None)
    events.close()
    db.close()
    assert hits_in_files(tmp_path) == []
    # a restarted service (no cache) knows the erasure too
    intake, events, db = open_intake(f"sqlite:///{tmp_path / 'intake.sqlite3'}")
    with pytest.raises(PersonErased):
        intake.read(CASE_MANAGER, subject, None)
    with db.transaction(readonly=True) as tx:
        assert store.IntakeStore.wrapped_key(tx, subject) is None
        assert store.IntakeStore.blind_keys_of(tx, subject) == []
    events.close()
    db.close()


def test_postgres_tables_hold_no_plaintext_and_the_key_row_is_gone_after_erasure(fresh_database_url):
    intake, events, db = open_intake(fresh_database_url)
    subject = register_canary(intake)
    intake.read(CASE_MANAGER, subject, "check")
    assert hits_in_postgres(fresh_database_url) == []
    intake.erase(ADMIN, subject)
    assert hits_in_postgres(fresh_database_url) == []
    with psycopg.connect(fresh_database_url) as conn:
        assert conn.execute("SELECT count(*) FROM intake_person_keys WHERE subject = %s", [subject]).fetchone() == (0,)
        # the pseudonymous events stay: registration and erasure
        topics = [t for (t,) in conn.execute("SELECT topic FROM intake_events ORDER BY notification_id")]
    assert [t.rsplit(".", 1)[1] for t in topics] == ["Registered", "Erased"]
    events.close()
    db.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_access_log_refuses_updates_and_deletes(backend, tmp_path, request):
    url = (f"sqlite:///{tmp_path / 'intake.sqlite3'}" if backend == "sqlite"
           else request.getfixturevalue("fresh_database_url"))
    intake, events, db = open_intake(url)
    subject = register_canary(intake)
    intake.read(CASE_MANAGER, subject, "first contact")
    for statement in ("UPDATE intake_access_log SET purpose = 'nothing'", "DELETE FROM intake_access_log"):
        with pytest.raises(Exception, match="append-only"):
            with db.transaction() as tx:
                tx.execute(statement)
    assert [(e.reader_sub, e.action, e.purpose) for e in intake.access_log(subject)] == [
        ("cm-1", "read", "first contact")]
    events.close()
    db.close()


def example(name: str, **changes) -> dict:
    event = json.loads((EXAMPLES / f"{name}.json").read_text())
    event.update(changes)
    return event


def test_the_consent_projection_applies_events_from_any_agency_and_ignores_repeats(fresh_database_url):
    db = Database.from_url(fresh_database_url)
    db.ensure_schema(CONSENT_SCHEMA)
    subject = "P-PROJECTION1"
    consent = example("ConsentRecorded", subject=subject)  # shares with job_center and employment_agency
    withdrawal = example("ConsentWithdrawn", subject=subject, id="withdrawal-1")  # employment_agency
    registration = example("PersonRegistered", subject=subject)
    late_registration = copy.deepcopy(registration)
    late_registration.update(id="second", source="urn:kim:job_center:x", time="2026-07-01T00:00:00Z")
    events = [decode(json.dumps(e)) for e in (late_registration, consent, withdrawal, registration)]
    with db.transaction() as tx:
        record_consent_events(tx, events)
        record_consent_events(tx, events)  # repeats change nothing
    after_withdrawal = datetime(2026, 9, 2, tzinfo=timezone.utc)
    with db.transaction(readonly=True) as tx:
        assert registered_by(tx, subject) == "integration_center", "the earliest registration counts"
        job_center = visibility(tx, subject, "job_center", after_withdrawal)
        employment = visibility(tx, subject, "employment_agency", after_withdrawal)
        before = visibility(tx, subject, "employment_agency", datetime(2026, 6, 2, tzinfo=timezone.utc))
        expired = visibility(tx, subject, "job_center", datetime(2028, 6, 2, tzinfo=timezone.utc))
    assert (job_center.shared, job_center.purposes) == (True, ("labour market integration",
                                                               "recognition of qualifications"))
    assert not employment.shared and before.shared
    assert not expired.shared, "valid_until 2028-06-01 has passed"
    db.close()


def test_reads_refused_for_want_of_consent_are_not_logged_and_change_nothing(tmp_path):
    intake, events, db = open_intake(f"sqlite:///{tmp_path / 'intake.sqlite3'}")
    subject = register_canary(intake)
    stranger = Principal("cm-9", "youth_office", frozenset({"case_manager"}))
    with pytest.raises(Exception, match="consent missing"):
        intake.read(stranger, subject, "curious")
    assert intake.access_log(subject) == []
    intake.record_consent(CASE_MANAGER, subject, ["youth_office"], ["youth welfare"],
                          date.today() + timedelta(days=30))
    assert intake.read(stranger, subject, "help")["given_name"] == "Zyxwarthine"
    assert [(e.reader_agency, e.consent_purposes) for e in intake.access_log(subject)] == [
        ("youth_office", ("youth welfare",))]
    events.close()
    db.close()
