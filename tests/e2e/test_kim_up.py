"""`kim up` and `kim kafka` as an operator runs them: real broker, real service processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from kim.infra.kafka import port_is_open
from kim.service import SERVICE_PORTS
from kim.topics import ALL_TOPICS
from tests.conftest import wait_until

pytestmark = pytest.mark.skipif(
    any(port_is_open("127.0.0.1", p) for p in (9092, 9093, *SERVICE_PORTS.values())),
    reason="the fixed ports of `kim up` are taken on this machine",
)


def _kim(*args: str, env: dict[str, str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kim.cli", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


@pytest.fixture
def kim_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIM_")}
    env["KIM_DATA_DIR"] = str(tmp_path / "kim-data")
    return env


def _read_until(process: subprocess.Popen, marker: str, lines: list[str]) -> None:
    for line in process.stdout:
        lines.append(line)
        if marker in line:
            return
    raise AssertionError("kim up ended before '" + marker + "':\n" + "".join(lines))


def test_up_serves_every_service_and_a_working_broker_then_stops_cleanly(kim_env):
    up = _kim("up", env=kim_env)
    lines: list[str] = []
    try:
        _read_until(up, "ready.", lines)
        for name, port in SERVICE_PORTS.items():
            response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
            assert response.status_code == 200, (name, response.text)
            assert f"{name:<10} http://127.0.0.1:{port}" in "".join(lines)

        # the broker takes and serves records on the spec's topics
        topic = "kim.job_center.events"
        key = f"S-{uuid.uuid4().hex[:8]}".encode()
        producer = KafkaProducer(bootstrap_servers="localhost:9092", acks="all")
        metadata = producer.send(topic, key=key, value=b'{"probe": true}').get(timeout=30)
        producer.close()
        consumer = KafkaConsumer(bootstrap_servers="localhost:9092", consumer_timeout_ms=10000)
        partition = TopicPartition(topic, metadata.partition)
        consumer.assign([partition])
        consumer.seek(partition, metadata.offset)
        record = next(iter(consumer))
        consumer.close()
        assert (record.key, record.value) == (key, b'{"probe": true}')
        admin = KafkaAdminClient(bootstrap_servers="localhost:9092")
        described = admin.describe_topics(list(ALL_TOPICS))
        admin.close()
        assert {d["name"]: len(d["partitions"]) for d in described} == {t: 6 for t in ALL_TOPICS}

        second = _kim("up", env=kim_env)
        out, _ = second.communicate(timeout=60)
        assert second.returncode == 1
        assert "already running" in out
    finally:
        up.send_signal(signal.SIGINT)
        rest, _ = up.communicate(timeout=60)
    assert up.returncode == 0, "".join(lines) + rest
    assert "stopped." in rest
    for port in (9092, *SERVICE_PORTS.values()):
        assert not port_is_open("127.0.0.1", port), f"port {port} still open after kim up stopped"


def test_kafka_start_status_stop_and_up_reuses_a_running_broker(kim_env):
    start = _kim("kafka", "start", env=kim_env)
    out, _ = start.communicate(timeout=120)
    assert start.returncode == 0, out
    try:
        status = _kim("kafka", "status", env=kim_env)
        out, _ = status.communicate(timeout=30)
        assert status.returncode == 0 and "answers" in out, out

        up = _kim("up", env=kim_env)
        lines: list[str] = []
        _read_until(up, "ready.", lines)
        assert "started earlier by `kim kafka start`" in "".join(lines)
        up.send_signal(signal.SIGTERM)
        up.communicate(timeout=60)
        assert up.returncode == 0
        assert port_is_open("127.0.0.1", 9092), "kim up stopped a broker it had not started"
    finally:
        stop = _kim("kafka", "stop", env=kim_env)
        out, _ = stop.communicate(timeout=90)
    assert stop.returncode == 0, out
    wait_until(lambda: not port_is_open("127.0.0.1", 9092), timeout=30, message="broker port closed")
    status = _kim("kafka", "status", env=kim_env)
    out, _ = status.communicate(timeout=30)
    assert status.returncode == 1 and "does not answer" in out
