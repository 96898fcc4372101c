"""The three-broker mode used by fault tests: losing one broker loses no acknowledged record."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from kim.infra.kafka import KafkaCluster, create_topics


@pytest.mark.slow
def test_cluster_keeps_acknowledged_records_when_a_broker_dies():
    data_dir = Path(tempfile.mkdtemp(prefix="kim-test-cluster-"))
    cluster = KafkaCluster(data_dir).start()
    try:
        create_topics(cluster.bootstrap, ["kim.job_center.events"], partitions=3, replication_factor=3)
        producer = KafkaProducer(bootstrap_servers=cluster.bootstrap, acks="all", enable_idempotence=True,
                                 retries=20, request_timeout_ms=10000)
        for i in range(100):
            producer.send("kim.job_center.events", key=f"S{i % 7}".encode(), value=str(i).encode())
        producer.flush(timeout=60)

        cluster.nodes[0].kill()
        for i in range(100, 200):
            producer.send("kim.job_center.events", key=f"S{i % 7}".encode(), value=str(i).encode())
        producer.flush(timeout=60)
        producer.close()

        consumer = KafkaConsumer(bootstrap_servers=cluster.nodes[1].bootstrap, consumer_timeout_ms=5000,
                                 auto_offset_reset="earliest")
        consumer.assign([TopicPartition("kim.job_center.events", p) for p in range(3)])
        values = sorted(int(r.value) for r in consumer)
        consumer.close()
        assert values == list(range(200))
    finally:
        cluster.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
