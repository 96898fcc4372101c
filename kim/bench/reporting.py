"""Events/s the reporting service keeps up with: a fresh service catching up with a filled history.

A scratch broker's agency topics are filled with copies of the demo district
(pre-encoded, produced directly); then the reporting service is started as
`kim up` starts it and timed until `/readyz` says it has consumed everything
that was there and computed every figure. Target (issue 5): at least 20,000
events/s. `--faust-stream N` also times faust's usual per-event stream
(an agent iterating `stream.take`) over the first N events, the common design
that manages a few hundred to a few thousand events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from kim.settings import KimSettings

TARGET_RATE = 20_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=300_000, help="events in the history (default 300,000)")
    parser.add_argument("--faust-stream", type=int, default=0, metavar="N",
                        help="also time a plain faust agent over N events (default: not)")


def _cpu_seconds(pid: int) -> float | None:
    """CPU time a process has used so far (Linux), to tell its own cost from a busy machine's."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _wait(service, path: str, timeout_s: float = 3600) -> float:
    """Seconds until `path` answers 200."""
    import httpx

    started = time.monotonic()
    # One client for all polls: a new one per poll costs ~15 ms of CPU, taken from the service measured.
    with httpx.Client(timeout=2) as client:
        while True:
            if service.process.poll() is not None:
                raise RuntimeError(f"{service.name} exited:\n{service.log.read_text()[-3000:]}")
            try:
                if client.get(service.url + path).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"{service.name}{path} not answering within {timeout_s} s")
            time.sleep(0.1)


async def _faust_stream(bootstrap: str, count: int, datadir: str) -> float:
    """events/s of a faust agent that takes events in batches from its stream and only decodes them."""
    import uuid

    import faust

    from contracts import decode
    from kim.topics import AGENCY_TOPICS

    app = faust.App(f"kim-bench-{uuid.uuid4().hex[:6]}", broker=f"kafka://{bootstrap}", web_enabled=False,
                    datadir=datadir, store="memory://", value_serializer="raw", consumer_auto_offset_reset="earliest")
    seen, started, done = 0, 0.0, asyncio.Event()

    @app.agent(app.topic(*AGENCY_TOPICS, value_type=bytes))
    async def consume(stream):  # the usual design: one coroutine step per event
        nonlocal seen, started
        async for values in stream.take(1000, within=0.5):
            started = started or time.perf_counter()
            for value in values:
                decode(value)
            seen += len(values)
            if seen >= count:
                done.set()

    await app.start()
    try:
        await asyncio.wait_for(done.wait(), 3600)
    finally:
        await app.stop()
    return seen / (time.perf_counter() - started)


def run(args: argparse.Namespace, settings: KimSettings) -> int:
    from kim.bench._support import Service, kafka, row, scratch_dir
    from kim.bench.replay import district_events, fill

    # Always a scratch broker: the service reads the kim.* topics, which must hold the benchmark's events only.
    scratch = settings.model_copy(update={"kafka_bootstrap": None})
    with scratch_dir() as data_dir, kafka(scratch, data_dir) as bootstrap:
        started = time.perf_counter()
        filled = asyncio.run(fill(bootstrap, "", district_events(args.events)))
        fill_s = time.perf_counter() - started
        service = Service("reporting", bootstrap, data_dir)
        try:
            up_s = _wait(service, "/healthz")
            cpu_up = _cpu_seconds(service.process.pid)
            ready_s = up_s + _wait(service, "/readyz")
            cpu_ready = _cpu_seconds(service.process.pid)
        finally:
            service.stop()
        stream_rate = (asyncio.run(_faust_stream(bootstrap, args.faust_stream, str(data_dir / "faust")))
                       if args.faust_stream else None)
    print(f"kim bench reporting: {filled:,} events on the agency topics (filled in {fill_s:.1f} s)")
    print(row("start-up (faust, table recovery)", f"{up_s:.1f} s"))
    print(row("consumed, validated, figures computed", f"{ready_s - up_s:.1f} s"))
    print(row("reporting service keeps up with", f"{filled / (ready_s - up_s):,.0f} ev/s",
              f"target >= {TARGET_RATE:,}"))
    print(row("including start-up", f"{filled / ready_s:,.0f} ev/s"))
    if cpu_up is not None and cpu_ready is not None:
        print(row("events per CPU-second of the service", f"{filled / (cpu_ready - cpu_up):,.0f} ev/s",
                  "(its rate on a core of its own)"))
    if stream_rate is not None:
        print(row("plain faust agent (stream.take, decode only)", f"{stream_rate:,.0f} ev/s"))
    return 0
