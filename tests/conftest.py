"""Shared fixtures: a real Kafka broker and a real PostgreSQL server per test run.

Both are started once per session by the project's own launchers. Set
KIM_TEST_KAFKA_BOOTSTRAP or KIM_TEST_DATABASE_URL to use servers that already run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.05,
               message: str = "condition") -> object:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} not reached within {timeout} s (last value: {result!r})")
        time.sleep(interval)  # poll interval, not synchronisation


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    if os.environ.get("KIM_TEST_KAFKA_BOOTSTRAP"):
        yield os.environ["KIM_TEST_KAFKA_BOOTSTRAP"]
        return
    from kim.infra.kafka import KafkaBroker, free_port

    data_dir = Path(tempfile.mkdtemp(prefix="kim-test-kafka-"))
    broker = KafkaBroker(data_dir, port=free_port(), controller_port=free_port(), heap="768m")
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[object]:
    from kim.infra.postgres import PostgresServer

    # Not under pytest's tmp dir: that is private to root, and the server runs as `postgres`.
    data_dir = Path(tempfile.mkdtemp(prefix="kim-test-pg-"))
    server = PostgresServer(data_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_dsn(request: pytest.FixtureRequest) -> str:
    if os.environ.get("KIM_TEST_DATABASE_URL"):
        return os.environ["KIM_TEST_DATABASE_URL"]
    return request.getfixturevalue("postgres_server").dsn


@pytest.fixture
def fresh_database_url(postgres_dsn: str) -> str:
    """URL of a newly created, empty PostgreSQL database."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:16]
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return postgres_dsn.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def topic_prefix() -> str:
    """A unique prefix, so tests sharing the session broker never see each other's topics."""
    return f"t{uuid.uuid4().hex[:10]}"
