"""The project's own Apache Kafka 3.9 broker in KRaft mode, without Docker.

The jars are resolved once from Maven Central with `deploy/kafka/pom.xml` into a
cache folder; a broker is then `java -cp 'libs/*' kafka.Kafka server.properties`
after `kafka.tools.StorageTool format`. A single node acts as broker and
controller; `KafkaCluster` runs three such nodes for fault tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
KAFKA_VERSION = "3.9.1"
READY_TIMEOUT_S = 60.0


# What Kafka's own start scripts give the broker's JVM (KAFKA_JVM_PERFORMANCE_OPTS): among others,
# collection pauses aimed at 20 ms rather than G1's default 200 ms. And 8 MB heap regions: with the
# 1 MB regions of a 1 GB heap, every produce request over 512 KB was a "humongous" allocation, and
# those started a concurrent collection cycle every ~80 ms while batches arrived.
# Only the first, quick JIT compiler (C1): the built-in broker shares the machine with the services, and
# C2's compiler threads were still taking half of the broker's CPU minutes after its start (7-10 of its
# 19 us per event the gateway published, where the request handlers took 7-9 us). With C1 alone the
# broker took 6-8 us per event, and its request handlers no more than before.
JVM_PERFORMANCE_OPTIONS = ("-server", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
                           "-XX:+ExplicitGCInvokesConcurrent", "-XX:MaxInlineLevel=15", "-Djava.awt.headless=true",
                           "-XX:G1HeapRegionSize=8M", "-XX:TieredStopAtLevel=1")


class KafkaLaunchError(RuntimeError):
    """The broker could not be prepared or started; the message says what to do."""


def default_jars_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "kim" / f"kafka-{KAFKA_VERSION}" / "libs"


def _require_tool(tool: str, advice: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise KafkaLaunchError(f"`{tool}` was not found on PATH. {advice}")
    return path


def java_executable() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    return _require_tool(
        "java",
        "The built-in Kafka broker needs Java 17 or newer: install it, e.g. "
        "`apt-get install openjdk-17-jre-headless`, or set KIM_KAFKA_BOOTSTRAP to an existing Kafka cluster.",
    )


def ensure_jars(jars_dir: Path | None = None) -> Path:
    """Fetch the broker's jars from Maven Central unless they are cached already."""
    jars_dir = jars_dir or default_jars_dir()
    marker = jars_dir / ".complete"
    if marker.exists():
        return jars_dir
    mvn = _require_tool(
        "mvn",
        "The built-in Kafka broker's jars are fetched once with Maven: install it, e.g. "
        "`apt-get install maven`, or set KIM_KAFKA_BOOTSTRAP to an existing Kafka cluster.",
    )
    java_executable()
    if not POM.exists():
        raise KafkaLaunchError(f"{POM} is missing; run kim from a clone of the repository")
    jars_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
         f"-DoutputDirectory={jars_dir}", "-DincludeScope=runtime"],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise KafkaLaunchError(
            "Maven could not fetch the Kafka jars from Maven Central:\n" + (result.stdout + result.stderr)[-4000:]
        )
    marker.write_text(KAFKA_VERSION + "\n")
    return jars_dir


def port_is_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def metadata_answers(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """True when every broker of `bootstrap` answers a metadata request listing at
    least one registered broker.

    A raw Metadata v0 request rather than a client library: libraries back off
    for seconds after a refused connection, which would slow every start.
    """
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            if _metadata_broker_count(host or "localhost", int(port), timeout_s) < 1:
                return False
        except (OSError, struct.error, ValueError):
            return False
    return True


def _metadata_broker_count(host: str, port: int, timeout_s: float) -> int:
    client_id = b"kim-probe"
    # api_key 3 (Metadata), version 0, correlation id 1, client id, empty topic array = all topics
    body = struct.pack(">hhih", 3, 0, 1, len(client_id)) + client_id + struct.pack(">i", 0)
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        header = _recv_exact(sock, 4)
        (size,) = struct.unpack(">i", header)
        payload = _recv_exact(sock, size)
    correlation_id, broker_count = struct.unpack(">ii", payload[:8])
    return broker_count if correlation_id == 1 else 0


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise OSError("connection closed by the broker")
        chunks += chunk
    return bytes(chunks)


LOG4J = """\
log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.BrokerServer=INFO
log4j.logger.kafka.server.ControllerServer=INFO
"""


@dataclass
class BrokerNode:
    """One KRaft node (broker + controller) with its own ports and log dir."""

    data_dir: Path
    node_id: int = 1
    port: int = 9092
    controller_port: int = 9093
    voters: str = ""  # "1@localhost:9093,2@…"; empty: this node alone
    heap: str = "512m"
    replication_factor: int = 1
    jars_dir: Path | None = None
    process: subprocess.Popen | None = field(default=None, init=False, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"localhost:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "broker.pid"

    def properties(self) -> str:
        voters = self.voters or f"{self.node_id}@localhost:{self.controller_port}"
        rf = self.replication_factor
        return "\n".join([
            "process.roles=broker,controller",
            f"node.id={self.node_id}",
            f"controller.quorum.voters={voters}",
            f"listeners=PLAINTEXT://localhost:{self.port},CONTROLLER://localhost:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://localhost:{self.port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={self.data_dir / 'data'}",
            f"offsets.topic.replication.factor={rf}",
            f"transaction.state.log.replication.factor={rf}",
            f"transaction.state.log.min.isr={min(rf, 2)}",
            f"default.replication.factor={rf}",
            f"min.insync.replicas={min(rf, 2)}",
            # A fresh group waits this long for more members before its first assignment (Kafka's default:
            # 3 s), so that members started together (a service and its helper) each get their share at
            # once instead of one consuming everything until the next rebalance.
            "group.initial.rebalance.delay.ms=300",
            # Topics are created explicitly with the configured partition count.
            "auto.create.topics.enable=false",
            "log.retention.hours=-1",
            "",
        ])

    def prepare(self, cluster_id: str) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "server.properties").write_text(self.properties())
        (self.data_dir / "log4j.properties").write_text(LOG4J)
        if (self.data_dir / "data" / "meta.properties").exists():
            return
        result = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "-t", cluster_id,
                       "-c", str(self.data_dir / "server.properties"), heap="256m"),
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise KafkaLaunchError(f"formatting the broker storage failed:\n{result.stdout}{result.stderr}")

    def _java(self, main: str, *args: str, heap: str) -> list[str]:
        jars = self.jars_dir or default_jars_dir()
        return [java_executable(), f"-Xmx{heap}", *JVM_PERFORMANCE_OPTIONS,
                f"-Dlog4j.configuration=file:{self.data_dir / 'log4j.properties'}", "-cp", str(jars / "*"), main, *args]

    def start(self) -> None:
        for port in (self.port, self.controller_port):
            if port_is_open("localhost", port):
                raise KafkaLaunchError(
                    f"port {port} is already in use; stop what listens there (`kim kafka stop`?) "
                    "or choose other ports"
                )
        log = open(self.log_file, "ab")
        self.process = subprocess.Popen(
            self._java("kafka.Kafka", str(self.data_dir / "server.properties"), heap=self.heap),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        self.pid_file.write_text(f"{self.process.pid}\n")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.pid_file.unlink(missing_ok=True)
        self.process = None

    def kill(self) -> None:
        """SIGKILL, for fault tests."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def _wait_ready(nodes: list[BrokerNode], bootstrap: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        dead = [n for n in nodes if not n.running()]
        if dead:
            tail = dead[0].log_file.read_text(errors="replace")[-3000:]
            raise KafkaLaunchError(f"the Kafka broker (node {dead[0].node_id}) exited during start-up:\n{tail}")
        if metadata_answers(bootstrap, timeout_s=2.0):
            return
        time.sleep(0.2)
    raise KafkaLaunchError(f"the Kafka broker did not answer metadata requests within {timeout_s:.0f} s; "
                           f"see {nodes[0].log_file}")


class KafkaBroker:
    """A single-node broker (broker + controller)."""

    def __init__(self, data_dir: Path, port: int = 9092, controller_port: int | None = None,
                 heap: str = "512m", jars_dir: Path | None = None) -> None:
        self.node = BrokerNode(data_dir=data_dir, port=port, controller_port=controller_port or port + 1,
                               heap=heap, jars_dir=jars_dir)

    @property
    def bootstrap(self) -> str:
        return self.node.bootstrap

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> "KafkaBroker":
        self.node.jars_dir = ensure_jars(self.node.jars_dir)
        self.node.prepare(_cluster_id(self.node.data_dir))
        self.node.start()
        try:
            _wait_ready([self.node], self.bootstrap, timeout_s)
        except BaseException:
            self.node.stop()
            raise
        return self

    def stop(self) -> None:
        self.node.stop()

    def __enter__(self) -> "KafkaBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class KafkaCluster:
    """Three KRaft nodes, each broker and controller, on their own ports and log dirs."""

    def __init__(self, data_dir: Path, size: int = 3, base_port: int | None = None,
                 heap: str = "384m", jars_dir: Path | None = None) -> None:
        ports = [(base_port + 2 * i, base_port + 2 * i + 1) if base_port else (free_port(), free_port())
                 for i in range(size)]
        voters = ",".join(f"{i + 1}@localhost:{cport}" for i, (_, cport) in enumerate(ports))
        self.nodes = [
            BrokerNode(data_dir=data_dir / f"node{i + 1}", node_id=i + 1, port=port, controller_port=cport,
                       voters=voters, heap=heap, replication_factor=min(3, size), jars_dir=jars_dir)
            for i, (port, cport) in enumerate(ports)
        ]
        self.data_dir = data_dir

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes)

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> "KafkaCluster":
        jars = ensure_jars(self.nodes[0].jars_dir)
        cluster_id = _cluster_id(self.data_dir)
        for node in self.nodes:
            node.jars_dir = jars
            node.prepare(cluster_id)
        for node in self.nodes:
            node.start()
        try:
            _wait_ready(self.nodes, self.bootstrap, timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        # Signal every node first: stopping them one by one loses the controller
        # quorum midway and the remaining nodes then wait out their shutdown timeouts.
        for node in self.nodes:
            if node.running():
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> "KafkaCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _cluster_id(data_dir: Path) -> str:
    """A stable cluster id per data dir, so a restart reuses the formatted storage."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "cluster.id"
    if not path.exists():
        # KRaft cluster ids are 16 random bytes in URL-safe base64 without padding; like
        # Kafka's own Uuid, never one starting with "-", which the tools read as an option.
        import base64

        cluster_id = "-"
        while cluster_id.startswith("-"):
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        path.write_text(cluster_id + "\n")
    return path.read_text().strip()


def create_topics(bootstrap: str, topics: list[str] | tuple[str, ...], partitions: int,
                  replication_factor: int = 1, timeout_s: float = 30.0) -> list[str]:
    """Create missing topics; returns the ones created. An existing topic with
    another partition count is an error, since co-partitioning relies on it."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import NodeNotReadyError, TopicAlreadyExistsError, UnknownBrokerIdError

    def connect() -> KafkaAdminClient:
        return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))

    admin = connect()
    deadline = time.monotonic() + timeout_s
    try:
        existing = set(admin.list_topics())
        missing = [t for t in topics if t not in existing]
        while missing:
            try:
                admin.create_topics(
                    [NewTopic(name=t, num_partitions=partitions, replication_factor=replication_factor)
                     for t in missing],
                    timeout_ms=int(timeout_s * 1000),
                )
                break
            except TopicAlreadyExistsError:
                break  # another process created them meanwhile
            except (UnknownBrokerIdError, NodeNotReadyError):
                # A cluster just started may name its controller before its metadata lists it. A new
                # client reads the metadata afresh (the old one kept asking with what it had cached).
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
                admin.close()
                admin = connect()
        # New topics show up in the metadata a moment after creation.
        while True:
            described = admin.describe_topics(list(topics))
            wrong = {d["name"]: len(d["partitions"]) for d in described if len(d["partitions"]) != partitions}
            if not wrong or time.monotonic() > deadline or any(wrong[t] for t in wrong if t not in missing):
                break
            time.sleep(0.1)
        if wrong:
            raise KafkaLaunchError(
                f"topics {sorted(wrong)} have partition counts {wrong}, expected {partitions} for all "
                "(set KIM_PARTITIONS to the existing count)"
            )
        return missing
    finally:
        admin.close()
