"""What the benchmarks share: a scratch broker, service processes, a lean HTTP client."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from kim.settings import KimSettings

T = TypeVar("T")

BENCH_SECRET = "benchmark-secret-of-thirty-two-bytes!"


@contextmanager
def scratch_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="kim-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def kafka(settings: KimSettings, data_dir: Path) -> Iterator[str]:
    """KIM_KAFKA_BOOTSTRAP if set, else a scratch broker of our own; the kim.* topics exist."""
    from kim.infra.kafka import KafkaBroker, create_topics, free_port
    from kim.topics import ALL_TOPICS

    if settings.kafka_bootstrap:
        create_topics(settings.kafka_bootstrap, ALL_TOPICS, settings.partitions)
        yield settings.kafka_bootstrap
        return
    broker = KafkaBroker(data_dir / "kafka", port=free_port(), controller_port=free_port(), heap="1g",
                         jars_dir=settings.kafka_jars_dir)
    broker.start()
    try:
        create_topics(broker.bootstrap, ALL_TOPICS, settings.partitions)
        yield broker.bootstrap
    finally:
        broker.stop()


class Service:
    """A service as `kim up` runs it, on a free port."""

    def __init__(self, name: str, bootstrap: str, data_dir: Path, **env: str) -> None:
        from kim.infra.kafka import free_port

        self.name = name
        self.port = free_port()
        environment = {k: v for k, v in os.environ.items() if not k.startswith("KIM_")}
        environment.update(KIM_KAFKA_BOOTSTRAP=bootstrap, KIM_DATA_DIR=str(data_dir / name),
                           KIM_AUTH_HS256_SECRET=BENCH_SECRET, **env)
        self.log = data_dir / f"{name}.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen([sys.executable, "-m", f"services.{name}", "--port", str(self.port)],
                                            env=environment, stdout=out, stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 600.0, poll_s: float = 0.1) -> float:
        """Seconds until /readyz answered 200."""
        import httpx

        started = time.monotonic()
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"{self.name} not ready within {timeout_s} s")
            time.sleep(poll_s)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()


def run_client(coroutine: Coroutine[Any, Any, T]) -> T:
    """Runs an HTTP load generator on uvloop, the event loop the services run on: the client's own
    overhead and jitter count in every latency it measures (~2 ms of p99 on asyncio's loop)."""
    import uvloop

    return uvloop.run(coroutine)


def token(agency: str, roles: list[str]) -> str:
    from kim.auth import issue_dev_token

    return issue_dev_token(BENCH_SECRET, sub="bench", agency=agency, roles=roles, ttl_s=24 * 3600)


class HttpConnection:
    """One keep-alive HTTP/1.1 connection; far cheaper per request than a full client,
    so that the load generator does not eat the CPU the server needs."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self._writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await self._writer.drain()
        status_line = await self._reader.readline()
        length = 0
        while True:
            line = await self._reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        payload = await self._reader.readexactly(length) if length else b""
        return int(status_line.split()[1]), payload

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def renumber(events: list[dict], copy: int) -> list[dict]:
    """The same history for other persons: new subjects and ids per copy."""
    out = []
    for event in events:
        clone = dict(event)
        clone["subject"] = f"{event['subject']}-{copy}"
        clone["id"] = f"{event['id']}-{copy}"
        out.append(clone)
    return out


def row(label: str, value: str, target: str = "") -> str:
    return f"  {label:<48} {value:>16}   {target}"
