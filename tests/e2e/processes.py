"""Services started as `kim up` starts them: their own process, answering on a free port."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from kim.infra.kafka import free_port
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def intake_process(env: dict[str, str], log: Path) -> Iterator[str]:
    """The intake service with `env`, its output appended to `log`; yields its base URL once ready."""
    port = free_port()
    with log.open("a") as out:
        process = subprocess.Popen([sys.executable, "-m", "services.intake", "--port", str(port)], cwd=ROOT,
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout=60, interval=0.2, message="intake ready")
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert process.wait(timeout=30) in (0, -signal.SIGTERM), log.read_text()
