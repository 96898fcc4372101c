"""The gateway's durable memory of accepted keys on SQLite: a log, with each key's row known in memory."""

from __future__ import annotations

from types import SimpleNamespace

from kim.storage import Database
from services.gateway.store import SqlAcceptedEvents

SOURCE = "urn:kim:job_center:nordhorn"


def accepted(*ids: str) -> list:
    return [SimpleNamespace(key=(SOURCE, i), event=SimpleNamespace(type="de.kim.GoalAchieved.v1", subject="P-1"))
            for i in ids]


def rows_in_memory_are_the_rows_in_the_table(db: Database, store: SqlAcceptedEvents) -> bool:
    """Each key's row as the store holds it in memory is its first row in the table."""
    with db.transaction(readonly=True) as tx:
        tx.execute("SELECT rowid, source, id FROM gateway_accepted_events ORDER BY rowid DESC")
        first = {hash((source, event_id)): rowid for rowid, source, event_id in tx.fetchall()}
    return store._rows == first


def test_recorded_keys_are_known_also_after_a_restart_and_nothing_else_is(tmp_path):
    url = f"sqlite:///{tmp_path}/gateway.sqlite3"
    db = Database.from_url(url)
    store = SqlAcceptedEvents(db)
    assert not store.may_know([(SOURCE, "e1")])
    store.record(accepted("e1", "e2"))
    store.record(accepted("e2"))  # a repeat recorded again changes nothing
    assert store.may_know([(SOURCE, "e9"), (SOURCE, "e2")])
    assert store.known([(SOURCE, "e1"), (SOURCE, "e3"), ("urn:kim:youth_office", "e1")]) == {(SOURCE, "e1")}
    store.record(accepted(*(f"m{n}" for n in range(250))))  # several statements
    assert rows_in_memory_are_the_rows_in_the_table(db, store)
    db.close()

    db = Database.from_url(url)
    restarted = SqlAcceptedEvents(db)
    assert restarted.known([(SOURCE, "e1"), (SOURCE, "e2"), (SOURCE, "e3")]) == {(SOURCE, "e1"), (SOURCE, "e2")}
    assert not restarted.may_know([(SOURCE, "e3")])
    db.close()


def test_a_key_whose_hash_points_at_another_keys_row_is_looked_up(tmp_path):
    db = Database.from_url(f"sqlite:///{tmp_path}/gateway.sqlite3")
    store = SqlAcceptedEvents(db)
    store.record(accepted("e1"))
    # As if e2 and e3 had e1's hash (a collision of 64-bit hashes): only the row read tells them apart.
    store._rows[hash((SOURCE, "e2"))] = store._rows[hash((SOURCE, "e3"))] = store._rows[hash((SOURCE, "e1"))]
    store.record(accepted("e2"))
    assert store.known([(SOURCE, "e1"), (SOURCE, "e2"), (SOURCE, "e3")]) == {(SOURCE, "e1"), (SOURCE, "e2")}
    db.close()


def test_a_store_made_with_the_key_keeps_working(tmp_path):
    db = Database.from_url(f"sqlite:///{tmp_path}/gateway.sqlite3")
    db.ensure_schema(["CREATE TABLE gateway_accepted_events (source TEXT NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL, "
                      "subject TEXT NOT NULL, accepted_at TEXT NOT NULL, PRIMARY KEY (source, id))"])
    store = SqlAcceptedEvents(db)
    store.record(accepted("e1"))
    store.record(accepted("e1", "e2"))  # the key would refuse e1 again without OR IGNORE
    store.record(accepted("e3", "e4"))
    store.record(accepted("e2", *(f"n{n}" for n in range(100))))  # a repeat in the first of two statements
    assert rows_in_memory_are_the_rows_in_the_table(db, store)
    assert SqlAcceptedEvents(db).known([(SOURCE, "e1"), (SOURCE, "e2")]) == {(SOURCE, "e1"), (SOURCE, "e2")}
    db.close()
