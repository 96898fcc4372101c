"""`kim up`: the whole stack on this machine, and `kim kafka …` for the broker alone."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from kim.infra.kafka import KafkaBroker, KafkaLaunchError, create_topics, metadata_answers, port_is_open
from kim.service import SERVICE_PORTS
from kim.settings import KimSettings
from kim.topics import ALL_TOPICS

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


class UpError(RuntimeError):
    """`kim up` cannot go on; the message says why in plain words."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _alive(pid) else None


def _terminate(process: subprocess.Popen, timeout_s: float = STOP_TIMEOUT_S) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def development_secret(settings: KimSettings) -> str:
    """The token secret `kim up` uses when no issuer is configured, kept in the data dir
    so that `kim token` and the demo can sign tokens the services accept."""
    import secrets

    path = settings.data_dir / "dev-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


# ---- the broker alone -------------------------------------------------------------

def _broker(settings: KimSettings) -> KafkaBroker:
    return KafkaBroker(settings.data_dir / "kafka", port=9092, controller_port=9093,
                       heap=settings.kafka_heap, jars_dir=settings.kafka_jars_dir)


def kafka_start(settings: KimSettings) -> int:
    broker = _broker(settings)
    pid = _read_pid(broker.node.pid_file)
    if pid:
        print(f"the Kafka broker already runs (pid {pid}) on {broker.bootstrap}")
        return 0
    broker.start()  # detached: it outlives this command until `kim kafka stop`
    print(f"Kafka broker started on {broker.bootstrap} (pid {broker.node.process.pid}, "
          f"data and log in {broker.node.data_dir})")
    return 0


def kafka_stop(settings: KimSettings) -> int:
    pid_file = _broker(settings).node.pid_file
    pid = _read_pid(pid_file)
    if not pid:
        print("no Kafka broker started by kim is running")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    print(f"Kafka broker (pid {pid}) stopped")
    return 0


def kafka_status(settings: KimSettings) -> int:
    broker = _broker(settings)
    bootstrap = settings.kafka_bootstrap or broker.bootstrap
    pid = _read_pid(broker.node.pid_file)
    answers = metadata_answers(bootstrap)
    origin = f"pid {pid}" if pid else ("KIM_KAFKA_BOOTSTRAP" if settings.kafka_bootstrap else "not started by kim")
    print(f"Kafka at {bootstrap}: {'answers' if answers else 'does not answer'} ({origin})")
    return 0 if answers else 1


# ---- the whole stack --------------------------------------------------------------

@dataclass
class ServiceProcess:
    name: str
    port: int
    process: subprocess.Popen
    log: Path

    def log_tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


class Stack:
    def __init__(self, settings: KimSettings) -> None:
        self.settings = settings
        self.broker: KafkaBroker | None = None
        self.services: list[ServiceProcess] = []
        self.bootstrap = settings.kafka_bootstrap or "localhost:9092"

    def start(self) -> None:
        busy = [f"{port} ({name})" for name, port in SERVICE_PORTS.items() if port_is_open("127.0.0.1", port)]
        if busy:
            raise UpError(f"port {', '.join(busy)} already in use by another program; stop it first")
        if self.settings.kafka_bootstrap:
            if not metadata_answers(self.bootstrap):
                raise UpError(f"KIM_KAFKA_BOOTSTRAP={self.bootstrap} does not answer")
            print(f"Kafka      {self.bootstrap} (KIM_KAFKA_BOOTSTRAP)")
        elif _read_pid(_broker(self.settings).node.pid_file) and metadata_answers(self.bootstrap):
            print(f"Kafka      {self.bootstrap} (started earlier by `kim kafka start`, left running)")
        else:
            started = time.monotonic()
            self.broker = _broker(self.settings)
            self.broker.start()
            print(f"Kafka      {self.bootstrap} (KRaft, ready in {time.monotonic() - started:.1f} s)")
        created = create_topics(self.bootstrap, ALL_TOPICS, self.settings.partitions,
                                self.settings.replication_factor)
        if created:
            print(f"topics     created {len(created)} with {self.settings.partitions} partitions each")
        self._start_services()

    def _start_services(self) -> None:
        log_dir = self.settings.data_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "KIM_KAFKA_BOOTSTRAP": self.bootstrap, "KIM_DATA_DIR": str(self.settings.data_dir)}
        if not (self.settings.oidc_issuer or self.settings.auth_hs256_secret):
            env["KIM_AUTH_HS256_SECRET"] = development_secret(self.settings)
            print("auth       development tokens (no KIM_OIDC_ISSUER): "
                  "kim token --agency job_center --roles agency_system")
        for name, port in SERVICE_PORTS.items():
            log = log_dir / f"{name}.log"
            with open(log, "ab") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", f"services.{name}", "--port", str(port)],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                    # Own session: Ctrl-C reaches only `kim up`, which stops the services before the broker.
                    start_new_session=True,
                )
            self.services.append(ServiceProcess(name, port, process, log))
        self._wait_ready()
        for s in self.services:
            print(f"{s.name:<10} http://127.0.0.1:{s.port}  (docs /docs, log {s.log})")

    def _wait_ready(self) -> None:
        pending = {s.name: s for s in self.services}
        deadline = time.monotonic() + READY_TIMEOUT_S
        with httpx.Client(timeout=2.0) as client:
            while pending:
                for name, service in list(pending.items()):
                    if service.process.poll() is not None:
                        raise UpError(f"the {name} service exited during start-up:\n{service.log_tail()}")
                    try:
                        if client.get(f"http://127.0.0.1:{service.port}/readyz").status_code == 200:
                            del pending[name]
                    except httpx.HTTPError:
                        pass
                if pending and time.monotonic() > deadline:
                    raise UpError(f"not ready within {READY_TIMEOUT_S:.0f} s: {', '.join(pending)}")
                time.sleep(0.2)

    def dead_service(self) -> ServiceProcess | None:
        return next((s for s in self.services if s.process.poll() is not None), None)

    def stop(self) -> None:
        for s in self.services:
            if s.process.poll() is None:
                s.process.send_signal(signal.SIGTERM)
        for s in self.services:
            _terminate(s.process)
        self.services.clear()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None


def up(settings: KimSettings, after_ready: Callable[[threading.Event], None] | None = None) -> int:
    """Run the stack until Ctrl-C, SIGINT or SIGTERM; `after_ready(stopping)` runs once all are ready
    and should return soon after `stopping` is set."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lock_path = settings.data_dir / "up.lock"
    lock = open(lock_path, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "unknown"
        print(f"kim up is already running (pid {holder}) with data in {settings.data_dir}; "
              f"stop it with Ctrl-C in its terminal or `kill {holder}`", file=sys.stderr)
        return 1
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()

    stopping = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        stopping.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)

    stack = Stack(settings)
    status = 0
    try:
        stack.start()
        print("ready. Ctrl-C stops everything.", flush=True)
        if after_ready is not None and not stopping.is_set():
            after_ready(stopping)
        while not stopping.wait(0.5):
            dead = stack.dead_service()
            if dead:
                print(f"the {dead.name} service stopped unexpectedly:\n{dead.log_tail()}", file=sys.stderr)
                status = 1
                break
    except (UpError, KafkaLaunchError) as exc:
        print(f"kim up: {exc}", file=sys.stderr)
        status = 1
    finally:
        print("stopping …", flush=True)
        stack.stop()
        lock.close()
        lock_path.unlink(missing_ok=True)
        print("stopped.", flush=True)
    return status
