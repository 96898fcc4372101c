"""What every service process shares: health endpoints and the start-up sequence."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar

import anyio
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from kim.collector import collect_rarely
from kim.settings import KimSettings

if TYPE_CHECKING:
    from kim.messaging import EventProducer, RelayGroup, TrackedConsumer

SERVICE_PORTS = {"gateway": 8080, "intake": 8081, "caseplan": 8082, "referral": 8083, "reporting": 8084}

@asynccontextmanager
async def consuming_and_relaying(consumer: TrackedConsumer, relays: RelayGroup,
                                 producer: EventProducer) -> AsyncIterator[None]:
    """A service's consumer and outbox relays run while the block runs; then they stop, and the producer."""
    tasks = [asyncio.create_task(consumer.run(), name=f"{consumer.name}-consumer"), *relays.start()]
    try:
        yield
    finally:
        consumer.stop()
        relays.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await producer.stop()


# A readiness check returns None when fine, else the problem in plain words.
ReadinessCheck = Callable[[], Awaitable[str | None]]


def kafka_reachable(bootstrap: str) -> ReadinessCheck:
    from kim.infra.kafka import metadata_answers

    async def check() -> str | None:
        if await anyio.to_thread.run_sync(metadata_answers, bootstrap):
            return None
        return f"Kafka at {bootstrap} does not answer"

    return check


def consumer_caught_up(app: FastAPI, what: str) -> ReadinessCheck:
    """Ready once `app.state.consumer` (a TrackedConsumer) has consumed up to the end
    offsets that existed when it got its partitions."""

    async def check() -> str | None:
        consumer = getattr(app.state, "consumer", None)
        if consumer is None or not consumer.caught_up():
            return f"still consuming {what}"
        return None

    return check


def add_health_routes(app: FastAPI, service: str, checks: list[ReadinessCheck]) -> None:
    @app.get("/healthz", tags=["operations"], summary="Liveness")
    async def healthz() -> dict:
        return {"status": "ok", "service": service}

    @app.get("/readyz", tags=["operations"], summary="Readiness: connected and caught up")
    async def readyz() -> JSONResponse:
        problems = [p for p in [await check() for check in checks] if p]
        if problems:
            return JSONResponse({"status": "not ready", "service": service, "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready", "service": service})


S = TypeVar("S", bound=KimSettings)


def load_settings(settings_cls: type[S]) -> S:
    """Validate the configuration at start-up; stop with the offending variables named."""
    try:
        return settings_cls()
    except ValidationError as exc:
        prefix = settings_cls.model_config.get("env_prefix", "")
        lines = [f"  {prefix}{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()]
        sys.exit("invalid configuration:\n" + "\n".join(lines))


def run_service(service: str, create_app: Callable[[S], FastAPI], settings_cls: type[S]) -> None:
    """Entry point of `python -m services.<service>`."""
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(prog=f"python -m services.{service}")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=SERVICE_PORTS[service])
    args = parser.parse_args()
    settings = load_settings(settings_cls)
    app = create_app(settings)
    collect_rarely()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
