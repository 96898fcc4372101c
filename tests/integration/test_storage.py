"""The database port's bulk insert against real SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from kim.storage import Database

TABLE = """CREATE TABLE IF NOT EXISTS bulk (
    k TEXT PRIMARY KEY, n INTEGER NOT NULL, note TEXT, marker INTEGER NOT NULL)"""


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path):
    url = f"sqlite:///{tmp_path}/kim.db" if request.param == "sqlite" else request.getfixturevalue("fresh_database_url")
    db = Database.from_url(url)
    db.ensure_schema([TABLE])
    yield db
    db.close()


def rows_of(database: Database) -> list[tuple]:
    with database.transaction(readonly=True) as tx:
        return tx.execute("SELECT k, n, note, marker FROM bulk ORDER BY k").fetchall()


def test_insert_many_inserts_every_row_with_its_types_literals_and_nulls(database):
    rows = [(f"k{i:05d}", i, None if i % 3 else f"Ä'\"\\ {i}", ) for i in range(12_345)]
    with database.transaction() as tx:
        tx.insert_many("INSERT INTO bulk (k, n, note, marker) VALUES (?, ?, ?, 7)", rows)
        assert tx.rowcount == len(rows)
    assert rows_of(database) == [(k, n, note, 7) for k, n, note in rows]


def test_insert_many_keeps_the_statements_conflict_clause(database):
    with database.transaction() as tx:
        tx.insert_many("INSERT INTO bulk (k, n, note, marker) VALUES (?, ?, ?, 0)", [("a", 1, None), ("b", 2, None)])
    with database.transaction() as tx:
        # a repeat inside the rows and of a stored key: both left alone
        tx.insert_many("INSERT INTO bulk (k, n, note, marker) VALUES (?, ?, ?, 0) ON CONFLICT (k) DO NOTHING",
                       [("b", 20, "new"), ("c", 3, None), ("c", 30, None)])
        assert tx.rowcount == 1
        tx.insert_many("INSERT INTO bulk (k, n, note, marker) VALUES (?, ?, ?, 0) ON CONFLICT (k) "
                       "DO UPDATE SET n = bulk.n + excluded.n", [("a", 10, None), ("d", 4, None)])
    assert rows_of(database) == [("a", 11, None, 0), ("b", 2, None, 0), ("c", 3, None, 0), ("d", 4, None, 0)]


def test_insert_many_of_no_rows_changes_nothing(database):
    with database.transaction() as tx:
        tx.insert_many("INSERT INTO bulk (k, n, note, marker) VALUES (?, ?, ?, 0)", [])
    assert rows_of(database) == []


def test_refreshed_statistics_tell_postgresqls_planner_what_a_table_holds(database):
    with database.transaction() as tx:
        tx.insert_many("INSERT INTO bulk (k, n, note, marker) VALUES (?, ?, ?, 0)",
                       [(f"k{i}", i, None) for i in range(500)])
        tx.refresh_statistics("bulk")  # on SQLite nothing to do, and nothing fails
    if database.dialect == "postgresql":
        with database.transaction(readonly=True) as tx:
            tx.execute("SELECT reltuples FROM pg_class WHERE oid = 'bulk'::regclass")
            assert tx.fetchone()[0] == 500
    assert len(rows_of(database)) == 500
