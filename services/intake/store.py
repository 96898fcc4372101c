"""Intake's tables beside the event store: person keys, duplicate index, access log.

The key table is what crypto-shredding deletes from; the duplicate index holds
keyed hashes only; the access log is append-only — the database itself refuses
to update or delete its rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson

from contracts import rfc3339
from kim.storage import Dialect, Transaction

_APPEND_ONLY = "the access log is append-only"

_TABLES = (
    """CREATE TABLE IF NOT EXISTS intake_person_keys (
        subject TEXT PRIMARY KEY,
        wrapped_key TEXT NOT NULL,
        created_at TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS intake_duplicate_index (
        blind_key TEXT NOT NULL,
        subject TEXT NOT NULL,
        PRIMARY KEY (blind_key, subject))""",
    "CREATE INDEX IF NOT EXISTS intake_duplicate_index_subject ON intake_duplicate_index (subject)",
    """CREATE TABLE IF NOT EXISTS intake_key_check (
        id INTEGER PRIMARY KEY,
        check_value TEXT NOT NULL)""",
)
_ACCESS_LOG_COLUMNS = """
        at TEXT NOT NULL,
        reader_sub TEXT NOT NULL,
        reader_agency TEXT NOT NULL,
        roles TEXT NOT NULL,
        subject TEXT NOT NULL,
        action TEXT NOT NULL,
        purpose TEXT,
        consent_purposes TEXT NOT NULL)"""


def schema(dialect: Dialect) -> tuple[str, ...]:
    if dialect == "postgresql":
        return _TABLES + (
            "CREATE TABLE IF NOT EXISTS intake_access_log (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            + _ACCESS_LOG_COLUMNS,
            "CREATE INDEX IF NOT EXISTS intake_access_log_subject ON intake_access_log (subject)",
            "CREATE OR REPLACE FUNCTION intake_access_log_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{_APPEND_ONLY}'; END $$",
            "CREATE OR REPLACE TRIGGER intake_access_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE "
            "ON intake_access_log FOR EACH STATEMENT EXECUTE FUNCTION intake_access_log_append_only()",
        )
    return _TABLES + (
        "CREATE TABLE IF NOT EXISTS intake_access_log (seq INTEGER PRIMARY KEY AUTOINCREMENT," + _ACCESS_LOG_COLUMNS,
        "CREATE INDEX IF NOT EXISTS intake_access_log_subject ON intake_access_log (subject)",
        "CREATE TRIGGER IF NOT EXISTS intake_access_log_no_update BEFORE UPDATE ON intake_access_log "
        f"BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END",
        "CREATE TRIGGER IF NOT EXISTS intake_access_log_no_delete BEFORE DELETE ON intake_access_log "
        f"BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY}'); END",
    )


@dataclass(frozen=True)
class AccessEntry:
    """One read (or erasure) of a person's data: who, as what, when, why."""

    at: datetime
    reader_sub: str
    reader_agency: str
    roles: tuple[str, ...]
    subject: str
    action: str
    purpose: str | None
    consent_purposes: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"at": rfc3339(self.at), "reader_sub": self.reader_sub, "reader_agency": self.reader_agency,
                "roles": list(self.roles), "subject": self.subject, "action": self.action,
                "purpose": self.purpose, "consent_purposes": list(self.consent_purposes)}


def _marks(items: Sequence[object]) -> str:
    return ", ".join("?" for _ in items)


class IntakeStore:
    """SQL of intake's own tables; every method runs inside a caller's transaction."""

    @staticmethod
    def check_master_key(tx: Transaction, check_value: str) -> bool:
        """Remember the master key's check value; False if another key wrote this store."""
        tx.execute("INSERT INTO intake_key_check (id, check_value) VALUES (1, ?) ON CONFLICT (id) DO NOTHING",
                   [check_value])
        tx.execute("SELECT check_value FROM intake_key_check WHERE id = 1")
        return tx.fetchone()[0] == check_value

    # -- person keys ------------------------------------------------------------------

    @staticmethod
    def store_key(tx: Transaction, subject: str, wrapped_key: str, now: datetime) -> None:
        tx.execute("INSERT INTO intake_person_keys (subject, wrapped_key, created_at) VALUES (?, ?, ?)",
                   [subject, wrapped_key, rfc3339(now)])

    @staticmethod
    def wrapped_key(tx: Transaction, subject: str) -> str | None:
        tx.execute("SELECT wrapped_key FROM intake_person_keys WHERE subject = ?", [subject])
        row = tx.fetchone()
        return row[0] if row else None

    @staticmethod
    def destroy_key(tx: Transaction, subject: str) -> None:
        """Delete the person's key and duplicate keys: their personal data can no longer be read."""
        if tx.dialect == "sqlite":
            # Overwrite the freed pages too, so the file keeps no copy of the key.
            tx.execute("PRAGMA secure_delete = ON")
        tx.execute("DELETE FROM intake_person_keys WHERE subject = ?", [subject])
        tx.execute("DELETE FROM intake_duplicate_index WHERE subject = ?", [subject])

    # -- duplicate index ------------------------------------------------------------------

    @staticmethod
    def index(tx: Transaction, subject: str, blind_keys: Iterable[str]) -> None:
        tx.executemany("INSERT INTO intake_duplicate_index (blind_key, subject) VALUES (?, ?) "
                       "ON CONFLICT (blind_key, subject) DO NOTHING", [(k, subject) for k in sorted(blind_keys)])

    @staticmethod
    def matching(tx: Transaction, blind_keys: Iterable[str], except_subject: str | None = None) -> list[str]:
        """Subjects indexed under any of these keys, oldest first."""
        keys = sorted(blind_keys)
        if not keys:
            return []
        tx.execute(f"SELECT DISTINCT subject FROM intake_duplicate_index WHERE blind_key IN ({_marks(keys)}) "
                   "ORDER BY subject", keys)
        return [s for (s,) in tx.fetchall() if s != except_subject]

    @staticmethod
    def blind_keys_of(tx: Transaction, subject: str) -> list[str]:
        tx.execute("SELECT blind_key FROM intake_duplicate_index WHERE subject = ?", [subject])
        return [k for (k,) in tx.fetchall()]

    # -- access log -------------------------------------------------------------------------

    @staticmethod
    def append_access(tx: Transaction, entry: AccessEntry) -> None:
        tx.execute(
            "INSERT INTO intake_access_log (at, reader_sub, reader_agency, roles, subject, action, purpose, "
            "consent_purposes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [rfc3339(entry.at), entry.reader_sub, entry.reader_agency, orjson.dumps(entry.roles).decode(),
             entry.subject, entry.action, entry.purpose, orjson.dumps(entry.consent_purposes).decode()],
        )

    @staticmethod
    def access_log(tx: Transaction, subject: str | None) -> list[AccessEntry]:
        sql = ("SELECT at, reader_sub, reader_agency, roles, subject, action, purpose, consent_purposes "
               "FROM intake_access_log")
        params: list[object] = []
        if subject is not None:
            sql += " WHERE subject = ?"
            params.append(subject)
        tx.execute(sql + " ORDER BY seq", params)
        entries = [AccessEntry(datetime.fromisoformat(at.replace("Z", "+00:00")), sub, agency,
                               tuple(orjson.loads(roles)), subj, action, purpose, tuple(orjson.loads(purposes)))
                   for at, sub, agency, roles, subj, action, purpose, purposes in tx.fetchall()]
        # Appended in order of `seq`; several processes may interleave, so sort by time (stable).
        return sorted(entries, key=lambda e: e.at)
