"""The gateway's durable memory of accepted keys on a real PostgreSQL server."""

from __future__ import annotations

from types import SimpleNamespace

import services.gateway.store as gateway_store
from kim.storage import Database
from services.gateway.store import SqlAcceptedEvents

SOURCE = "urn:kim:job_center:nordhorn"


def accepted(*ids: str, source: str = SOURCE) -> list:
    return [SimpleNamespace(key=(source, i), event=SimpleNamespace(type="de.kim.GoalAchieved.v1", subject="P-1"))
            for i in ids]


def analysed_rows(db: Database) -> float:
    """The row count of the table as the planner's statistics have it (-1: never analysed)."""
    with db.transaction(readonly=True) as tx:
        tx.execute("SELECT reltuples FROM pg_class WHERE oid = 'gateway_accepted_events'::regclass")
        return tx.fetchone()[0]


def test_recorded_keys_are_known_also_after_a_restart_and_nothing_else_is(fresh_database_url):
    db = Database.from_url(fresh_database_url)
    store = SqlAcceptedEvents(db)
    assert store.in_process is False
    store.record(accepted("e1", "e2"))
    store.record(accepted("e2", "e2"))  # repeats, in the store and within the recording, change nothing
    store.record(accepted("e1", source="urn:kim:youth_office"))
    assert store.known([(SOURCE, "e1"), (SOURCE, "e3"), ("urn:kim:youth_office", "e1"),
                        ("urn:kim:youth_office", "e2")]) == {(SOURCE, "e1"), ("urn:kim:youth_office", "e1")}
    db.close()

    db = Database.from_url(fresh_database_url)
    restarted = SqlAcceptedEvents(db)
    assert restarted.known([(SOURCE, "e1"), (SOURCE, "e2"), (SOURCE, "e3")]) == {(SOURCE, "e1"), (SOURCE, "e2")}
    with db.transaction(readonly=True) as tx:
        assert tx.execute("SELECT count(*) FROM gateway_accepted_events").fetchone()[0] == 3
    db.close()


def test_the_planners_statistics_follow_the_table_as_it_grows(fresh_database_url, monkeypatch):
    monkeypatch.setattr(gateway_store, "_ANALYSE_AFTER", 100)
    db = Database.from_url(fresh_database_url)
    store = SqlAcceptedEvents(db)
    store.record(accepted(*(f"a{n}" for n in range(99))))
    assert analysed_rows(db) <= 0  # refreshed at the start, with an empty table
    store.record(accepted("a99"))
    assert analysed_rows(db) == 100
    store.record(accepted(*(f"b{n}" for n in range(99))))  # not yet as many again as at the last refresh
    assert analysed_rows(db) == 100
    store.record(accepted("b99"))
    assert analysed_rows(db) == 200
    assert store.known([(SOURCE, "a0"), (SOURCE, "b99"), (SOURCE, "c0")]) == {(SOURCE, "a0"), (SOURCE, "b99")}
    db.close()
