"""Fault injection: relay and consumer killed with SIGKILL again and again."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from tests.integration._procs.ledger import Entry, Ledger
from tests.integration._procs.support import read_topic, unique_topic, wait_until

from kim.infra.kafka import create_topics
from kim.messaging import derive_event_id
from kim.storage import eventsourcing_env

TOTAL = 10_000
EVENTS_PER_ENTRY = 5
ENTRIES_PER_SAVE = 20  # one transaction records 100 events
MAX_BACKLOG = 1_500  # recorded but not yet applied; keeps both processes busy
KILLS_EACH = 6
SELF_CRASHES = 3
SEED = 20_240_611
RELAY_NAME = "ledger-relay"

REPO_ROOT = Path(__file__).resolve().parents[2]


def scalar(dsn: str, table: str, query: str) -> int:
    """``query``'s single value, 0 while ``table`` does not exist yet."""
    with psycopg.connect(dsn) as conn:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [table]).fetchone()[0]
        return (conn.execute(query).fetchone()[0] or 0) if exists else 0


def applied_count(dsn: str) -> int:
    return scalar(dsn, "applied", "SELECT count(*) FROM applied")


def relayed_count(dsn: str) -> int:
    return scalar(dsn, "kim_relay_positions", "SELECT max(notification_id) FROM kim_relay_positions")


class Process:
    """A restartable subprocess running one of the ``_procs`` modules."""

    def __init__(self, module: str, args: Callable[[], list[str]]) -> None:
        self.module = module
        self.args = args  # called for each incarnation
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), self.env.get("PYTHONPATH", "")) if p
        )
        self.kills = 0
        self.self_crashes = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", f"tests.integration._procs.{self.module}", *self.args()]
        return subprocess.Popen(argv, env=self.env)

    def kill_and_restart(self) -> None:
        self.revive_if_crashed()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.kills += 1
        self.proc = self._spawn()

    def revive_if_crashed(self) -> None:
        """Restart after a planned self-SIGKILL; any other exit is a failure."""
        code = self.proc.poll()
        if code == -signal.SIGKILL:
            self.self_crashes += 1
            self.proc = self._spawn()
        else:
            assert code is None, f"{self.module} exited on its own with {code}"

    def terminate(self) -> int:
        self.revive_if_crashed()
        self.proc.terminate()
        return self.proc.wait(timeout=20)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_relay_and_consumer_survive_repeated_sigkill(kafka_bootstrap, fresh_database_url):
    started = time.monotonic()
    dsn = fresh_database_url
    topic = unique_topic("kim.test.ledger")
    deadletter = unique_topic("kim.test.deadletter")
    create_topics(kafka_bootstrap, [topic, deadletter], partitions=3)
    rng = random.Random(SEED)

    app = Ledger(env=eventsourcing_env(dsn))
    recorded = 0
    writer_error: list[BaseException] = []
    stop_writer = threading.Event()

    def write() -> None:
        # Records in steps, never more than MAX_BACKLOG ahead of the
        # projection, so kills land while both processes are working.
        nonlocal recorded
        try:
            while recorded < TOTAL and not stop_writer.is_set():
                wait_until(lambda: applied_count(dsn) >= recorded - MAX_BACKLOG, timeout=60)
                entries = []
                for number in range(ENTRIES_PER_SAVE):
                    entry = Entry(recorded // EVENTS_PER_ENTRY + number)
                    for _ in range(EVENTS_PER_ENTRY - 1):
                        entry.bump()
                    entries.append(entry)
                app.save(*entries)
                recorded += ENTRIES_PER_SAVE * EVENTS_PER_ENTRY
        except BaseException as exc:
            writer_error.append(exc)

    def relay_args() -> list[str]:
        # Until SELF_CRASHES happened, each incarnation plans one crash
        # between ack and stored position after a random number of batches.
        planned = rng.randint(2, 12) if relay.self_crashes < SELF_CRASHES else 0
        return [dsn, kafka_bootstrap, topic, RELAY_NAME, str(planned)]

    writer = threading.Thread(target=write, daemon=True)
    relay = Process("relay_proc", relay_args)
    consumer = Process(
        "consumer_proc", lambda: [dsn, kafka_bootstrap, topic, deadletter, "ledger-count"]
    )

    def progress(count: Callable[[str], int], at_least: int) -> bool:
        relay.revive_if_crashed()
        consumer.revive_if_crashed()
        return count(dsn) >= at_least

    relay.start()
    consumer.start()
    writer.start()
    try:
        victims = [relay] * KILLS_EACH + [consumer] * KILLS_EACH
        rng.shuffle(victims)
        thresholds = sorted(rng.sample(range(300, TOTAL - 700), len(victims)))
        for threshold, victim in zip(thresholds, victims, strict=True):
            # Each victim dies once its own progress passes the threshold:
            # busy, at whatever point of its cycle the poll happens to see.
            count = relayed_count if victim is relay else applied_count
            wait_until(lambda t=threshold, c=count: progress(c, t), timeout=60)
            victim.kill_and_restart()

        wait_until(lambda: progress(applied_count, TOTAL), timeout=90)
        writer.join(timeout=10)
        assert not writer_error, writer_error
        assert recorded == TOTAL
        assert relay.terminate() == 0
        assert consumer.terminate() == 0
    finally:
        stop_writer.set()
        for process in (relay, consumer):
            if process.proc is not None and process.proc.poll() is None:
                process.proc.kill()
                process.proc.wait()

    expected = {
        derive_event_id(RELAY_NAME, n.originator_id, n.originator_version)
        for n in app.recorder.select_notifications(start=None, limit=TOTAL + 1)
    }
    app.close()
    with psycopg.connect(dsn) as conn:
        counts = dict(conn.execute("SELECT event_id, n FROM applied").fetchall())
    assert len(expected) == TOTAL
    assert set(counts) == expected
    assert {n for n in counts.values()} == {1}
    assert relay.kills >= 5 and consumer.kills >= 5
    assert relay.self_crashes >= SELF_CRASHES

    # Each planned crash republished its batch: the duplicates were dropped.
    published = len(asyncio.run(read_topic(kafka_bootstrap, topic)))
    assert published >= TOTAL + relay.self_crashes
    print(
        f"\nkill test: {relay.kills} relay kills (+{relay.self_crashes} after ack), "
        f"{consumer.kills} consumer kills, {published - TOTAL} republished duplicates "
        f"dropped, {time.monotonic() - started:.1f}s"
    )
