"""Pure logic of kim.messaging and kim.storage (no broker, no server)."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, timezone
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from types import SimpleNamespace

import orjson
import pytest
from aiokafka import TopicPartition

from kim.messaging import (
    ConsumedEvent,
    InvalidEvent,
    decode_envelope,
    derive_event_id,
    encode_event,
    member_partitions,
)
from kim.messaging.consumer import SCHEMA, BatchApplier, PositionConflict, dead_letter_record, envelope_key
from kim.storage import (
    Database,
    _insert_from_json,
    eventsourcing_env,
    qmark_to_format,
    sortable,
    sqlite_path,
    upsert_sql,
)

ENVELOPE = {
    "specversion": "1.0",
    "id": "e-1",
    "source": "urn:kim:job_center:nordhorn",
    "type": "de.kim.GoalAchieved.v1",
    "subject": "p-42",
    "time": "2025-03-01T10:00:00Z",
    "recordedtime": "2025-03-02T08:00:00Z",
    "datacontenttype": "application/json",
    "data": {"plan_id": "pl-1", "goal_id": "g-1"},
}


# -- storage ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("qmark", "expected"),
    [
        ("SELECT a FROM t WHERE b = ? AND c = ?", "SELECT a FROM t WHERE b = %s AND c = %s"),
        ("SELECT '?' , \"x?\" FROM t WHERE b = ?", "SELECT '?' , \"x?\" FROM t WHERE b = %s"),
        ("SELECT a FROM t WHERE b LIKE '10%' AND c = ?", "SELECT a FROM t WHERE b LIKE '10%%' AND c = %s"),
        ("SELECT 'it''s ?' , ?", "SELECT 'it''s ?' , %s"),
    ],
)
def test_qmark_placeholders_become_psycopg_placeholders(qmark, expected):
    assert qmark_to_format(qmark) == expected


def test_instants_are_stored_as_fixed_width_utc_strings_that_sort_as_the_instants_do():
    berlin = timezone(timedelta(hours=2))
    instants = [datetime(2026, 8, 1, 9, 30, tzinfo=timezone.utc),
                datetime(2026, 8, 1, 11, 29, 59, 999999, tzinfo=berlin),  # 09:29:59.999999Z
                datetime(999, 1, 1, tzinfo=timezone.utc),
                datetime(2026, 8, 1, 9, 30, 0, 1, tzinfo=timezone.utc)]
    keys = [sortable(instant) for instant in instants]
    assert keys[0] == "2026-08-01T09:30:00.000000Z"
    assert keys[1] == "2026-08-01T09:29:59.999999Z"
    assert keys[2] == "0999-01-01T00:00:00.000000Z"
    assert {len(key) for key in keys} == {27}
    assert sorted(keys) == [sortable(instant) for instant in sorted(instants)]


def test_a_bulk_insert_on_postgresql_reads_its_rows_from_one_json_parameter():
    statement, columns = _insert_from_json(
        "INSERT INTO t (a, b, c) VALUES (?, ?, 1) ON CONFLICT (a) DO UPDATE SET b = excluded.b")
    assert statement == ("INSERT INTO t (a, b, c) SELECT a, b, 1 FROM json_populate_recordset(NULL::t, ?::json) "
                         "ON CONFLICT (a) DO UPDATE SET b = excluded.b")
    assert columns == ("a", "b")


@pytest.mark.parametrize("sql", ["UPDATE t SET a = ?", "INSERT INTO t (a, b) VALUES (?)",
                                 "INSERT INTO t (a) SELECT a FROM u"])
def test_a_bulk_insert_refuses_other_statements(sql):
    with pytest.raises(ValueError):
        _insert_from_json(sql)


def test_upsert_sql_updates_non_key_columns_by_default():
    assert upsert_sql("t", ["k", "a", "b"], ["k"]) == (
        "INSERT INTO t (k, a, b) VALUES (?, ?, ?) ON CONFLICT (k) "
        "DO UPDATE SET a = excluded.a, b = excluded.b"
    )
    assert upsert_sql("t", ["k", "a"], ["k"], update=[]).endswith("ON CONFLICT (k) DO NOTHING")


def test_database_urls_map_to_eventsourcing_settings():
    assert eventsourcing_env("postgresql://kim:s%40cret@db.local:6543/kim_events") == {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": "kim_events",
        "POSTGRES_HOST": "db.local",
        "POSTGRES_PORT": "6543",
        "POSTGRES_USER": "kim",
        "POSTGRES_PASSWORD": "s@cret",
    }
    assert eventsourcing_env("sqlite:////var/kim/referral.db") == {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": "/var/kim/referral.db",
    }
    assert sqlite_path("sqlite:///data/kim.db") == "data/kim.db"
    with pytest.raises(ValueError):
        sqlite_path("sqlite:///:memory:")
    with pytest.raises(ValueError):
        Database.from_url("mysql://x/y")


def test_sqlite_transaction_commits_or_rolls_back(tmp_path):
    db = Database.from_url(f"sqlite:///{tmp_path}/sub/kim.db")
    try:
        db.ensure_schema(["CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER)"])
        with db.transaction() as tx:
            tx.upsert("t", ["k"], [{"k": "a", "v": 1}, {"k": "b", "v": 2}])
        with pytest.raises(RuntimeError), db.transaction() as tx:
            tx.upsert("t", ["k"], [{"k": "a", "v": 10}])
            raise RuntimeError("abort")
        with db.transaction() as tx:
            tx.upsert("t", ["k"], [{"k": "b", "v": 20}])
        with db.transaction(readonly=True) as tx:
            assert tx.execute("SELECT k, v FROM t ORDER BY k").fetchall() == [("a", 1), ("b", 20)]
    finally:
        db.close()


def test_sqlite_writers_queue_one_behind_the_other_but_readers_and_failed_writers_hold_nothing(tmp_path):
    db = Database.from_url(f"sqlite:///{tmp_path}/kim.db")
    db.ensure_schema(["CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY)"])
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db.transaction() as tx:
            tx.execute("INSERT INTO t VALUES ('a')")
            holding.set()
            release.wait(10)

    def write(key: str) -> None:
        with db.transaction() as tx:
            tx.execute("INSERT INTO t VALUES (?)", [key])

    def fail() -> None:
        with db.transaction() as tx:
            tx.execute("INSERT INTO t VALUES ('x')")
            raise RuntimeError("abort")

    try:
        with ThreadPoolExecutor(3) as pool:
            held = pool.submit(hold)
            assert holding.wait(10)
            with db.transaction(readonly=True) as tx:  # a reader does not wait for the writer
                assert tx.execute("SELECT COUNT(*) FROM t").fetchone() == (0,)
            queued = pool.submit(write, "b")
            with pytest.raises(FutureTimeout):  # a second writer waits for the first
                queued.result(timeout=0.3)
            release.set()
            held.result(10)
            queued.result(10)
            with pytest.raises(RuntimeError):
                pool.submit(fail).result(10)
            pool.submit(write, "c").result(10)  # the failed writer let go of the lock
        with db.transaction(readonly=True) as tx:
            assert tx.execute("SELECT k FROM t ORDER BY k").fetchall() == [("a",), ("b",), ("c",)]
    finally:
        db.close()


# -- producer ---------------------------------------------------------------


def test_event_is_keyed_by_subject_and_carries_cloudevents_headers():
    record = encode_event(ENVELOPE)
    assert record.key == b"p-42"
    assert orjson.loads(record.value) == ENVELOPE
    assert record.headers == [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"e-1"),
        ("ce_source", b"urn:kim:job_center:nordhorn"),
        ("ce_type", b"de.kim.GoalAchieved.v1"),
        ("ce_subject", b"p-42"),
        ("ce_time", b"2025-03-01T10:00:00Z"),
        ("content-type", b"application/cloudevents+json"),
    ]


def test_absent_attributes_get_no_header_and_a_subject_is_required():
    envelope = {k: v for k, v in ENVELOPE.items() if k != "time"}
    assert "ce_time" not in dict(encode_event(envelope).headers)
    with pytest.raises(ValueError):
        encode_event({k: v for k, v in ENVELOPE.items() if k != "subject"})


# -- relay ------------------------------------------------------------------


def test_event_ids_are_deterministic_per_namespace_and_version():
    originator = uuid.UUID("0d9a3b4c-1111-4222-8333-944455556666")
    first = derive_event_id("referral", originator, 3)
    assert first == derive_event_id("referral", str(originator), 3)
    assert uuid.UUID(first).version == 5
    assert first != derive_event_id("referral", originator, 4)
    assert first != derive_event_id("intake", originator, 3)


# -- consumer ---------------------------------------------------------------


def test_members_own_disjoint_partition_numbers_covering_all():
    assert member_partitions(0, 3, 8) == [0, 3, 6]
    assert member_partitions(2, 3, 8) == [2, 5]
    for members in range(1, 7):
        owned = [p for m in range(members) for p in member_partitions(m, members, 12)]
        assert sorted(owned) == list(range(12))
    for member, members in [(3, 3), (-1, 2), (0, 0)]:
        with pytest.raises(ValueError):
            member_partitions(member, members, 4)


def test_default_decoder_requires_id_source_and_subject():
    assert decode_envelope(orjson.dumps(ENVELOPE)) == ENVELOPE
    for bad in [b"{not json", b"[1, 2]", b'{"id": "x", "source": "s"}', b'{"id": "", "source": "s", "subject": "p"}']:
        with pytest.raises(ValueError):  # orjson.JSONDecodeError and InvalidEvent both are
            decode_envelope(bad)
    with pytest.raises(InvalidEvent):
        decode_envelope(b'{"id": "x", "source": "s", "subject": 7}')


def test_dead_letter_keeps_the_original_and_says_where_and_why():
    original = SimpleNamespace(
        topic="kim.job_center.events", partition=2, offset=41,
        key=b"p-1", value=b"garbage", headers=[("ce_id", b"x")],
    )
    record = dead_letter_record(original, "JSONDecodeError: " + "x" * 5000, "referral")
    assert (record.key, record.value) == (b"p-1", b"garbage")
    headers = dict(record.headers)
    assert headers["ce_id"] == b"x"
    assert headers["kim_dlq_topic"] == b"kim.job_center.events"
    assert headers["kim_dlq_partition"] == b"2"
    assert headers["kim_dlq_offset"] == b"41"
    assert headers["kim_dlq_consumer"] == b"referral"
    assert len(headers["kim_dlq_reason"]) == 1000


def _event(offset: int, event_id: str, source: str = "urn:kim:job_center") -> tuple:
    envelope = dict(ENVELOPE, id=event_id, source=source)
    return ConsumedEvent("t", 0, offset, 0, b"p-42", envelope), (source, event_id)


def test_batch_commit_dedups_and_fences_a_competing_process(tmp_path):
    db = Database.from_url(f"sqlite:///{tmp_path}/kim.db")
    handled: list[str] = []

    def handler(tx, events):
        handled.extend(e.event["id"] for e in events)

    db.ensure_schema(SCHEMA)
    tp = TopicPartition("t", 0)
    applier = BatchApplier("proj", db, handler, decode_envelope, envelope_key)
    try:
        assert applier.commit([_event(0, "x"), _event(1, "y"), _event(2, "x")], {tp: (None, 3)}) == 2
        with pytest.raises(PositionConflict):  # a competitor that believes nothing was consumed yet
            applier.commit([_event(0, "x")], {tp: (None, 1)})
        with pytest.raises(PositionConflict):  # a stale belief of an existing row
            applier.commit([_event(1, "z")], {tp: (1, 2)})
        assert applier.commit([_event(3, "x"), _event(4, "x", "urn:kim:youth_office")], {tp: (3, 5)}) == 1
        assert handled == ["x", "y", "x"]
        with db.transaction(readonly=True) as tx:
            assert tx.execute("SELECT next_offset FROM kim_consumer_positions").fetchall() == [(5,)]
    finally:
        db.close()
