"""events/s the gateway takes into Kafka (batches and single events) against a plain producer

Phases: (1) batches of `--batch` events over `--connections` connections; (2) a
plain idempotent producer (acks=all) sending the same records in the same batch
sizes, and one that also sends each batch in a Kafka transaction as the gateway does; (3) single-event requests at full speed over `--single-connections`
connections (one per agency system sending one event at a time); (4) single-event
requests at 70 % of that rate, open loop, for the latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson

from kim.settings import KimSettings

AGENCY = "integration_center"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=200_000, help="events for the batch phases")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--single-connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=15.0, help="duration of each single-event phase")


def _events(count: int, tag: str) -> list[dict]:
    """Realistic events of one agency (the integration center's part of the demo district), renumbered."""
    from kim.bench._support import renumber
    from kim.demo import generate_district

    base = [e for e in generate_district(1300, 1.0, 7) if e["source"].split(":")[2] == AGENCY]
    out: list[dict] = []
    copy = 0
    while len(out) < count:
        out += renumber(base, copy)
        copy += 1
    for event in out:
        event["id"] = f"{tag}-{event['id']}"
    return out[:count]


async def _batches(port: int, bodies: list[bytes], connections: int, headers: dict[str, str]) -> float:
    from kim.bench._support import HttpConnection

    queue = list(reversed(bodies))

    async def worker() -> None:
        connection = HttpConnection(port)
        while queue:
            body = queue.pop()
            status, payload = await connection.request("POST", "/v1/events", body, headers)
            if status != 202:
                raise RuntimeError(f"gateway answered {status}: {payload[:300]!r}")
        await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return time.perf_counter() - started


async def _plain_producer(bootstrap: str, events: list[dict], batch: int, connections: int,
                          transactional: bool) -> float:
    """Seconds a producer takes for these events, sent as they are (no HTTP, validation or chain).
    Idempotent with acks=all always; `transactional`: each batch in a transaction, as the gateway sends."""
    import uuid

    from kim.messaging import EventProducer, encode_event

    records = [encode_event(e) for e in events]
    chunks = [records[i:i + batch] for i in range(0, len(records), batch)]
    queue = list(reversed(chunks))
    transactional_id = f"kim-bench-plain-{uuid.uuid4().hex[:8]}" if transactional else None
    async with EventProducer(bootstrap, timeout=30, transactional_id=transactional_id, chain=False) as producer:
        async def worker() -> None:
            while queue:
                await producer.send_records("kim.integration_center.events", queue.pop())

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return time.perf_counter() - started


async def _singles(port: int, events: list[dict], headers: dict[str, str], seconds: float,
                   connections: int, rate: float | None) -> tuple[int, float, list[float]]:
    """Closed loop (rate None) or open loop at `rate` requests/s; (requests, seconds, latencies in ms)."""
    from kim.bench._support import HttpConnection

    bodies = iter(orjson.dumps(e) for e in events)
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + seconds

    async def closed_worker() -> None:
        connection = HttpConnection(port)
        for body in bodies:
            if time.perf_counter() > deadline:
                break
            sent = time.perf_counter()
            status, payload = await connection.request("POST", "/v1/events", body, headers)
            if status != 202:
                raise RuntimeError(f"gateway answered {status}: {payload[:300]!r}")
            latencies.append((time.perf_counter() - sent) * 1000)
        await connection.close()

    if rate is None:
        await asyncio.gather(*(closed_worker() for _ in range(connections)))
        return len(latencies), time.perf_counter() - started, latencies

    # open loop: requests start on schedule whatever the answers do; a pool of connections
    pool = [HttpConnection(port) for _ in range(connections)]
    free: asyncio.Queue[HttpConnection] = asyncio.Queue()
    for connection in pool:
        free.put_nowait(connection)

    async def one(body: bytes, scheduled: float) -> None:
        connection = await free.get()
        status, payload = await connection.request("POST", "/v1/events", body, headers)
        free.put_nowait(connection)
        if status != 202:
            raise RuntimeError(f"gateway answered {status}: {payload[:300]!r}")
        # from the scheduled start, so that queueing in the client counts against the server
        latencies.append((time.perf_counter() - scheduled) * 1000)

    tasks = []
    n = 0
    while True:
        scheduled = started + n / rate
        if scheduled > deadline:
            break
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the open-loop load
        tasks.append(asyncio.create_task(one(next(bodies), scheduled)))
        n += 1
    await asyncio.gather(*tasks)
    for connection in pool:
        await connection.close()
    return n, time.perf_counter() - started, latencies


def run(args: argparse.Namespace, settings: KimSettings) -> int:
    from kim.bench._support import Service, kafka, percentile, row, scratch_dir, token

    with scratch_dir() as data_dir, kafka(settings, data_dir) as bootstrap:
        gateway = Service("gateway", bootstrap, data_dir)
        try:
            gateway.wait_ready(60)
            headers = {"Authorization": f"Bearer {token(AGENCY, ['agency_system'])}",
                       "Content-Type": "application/cloudevents-batch+json"}
            single_headers = {**headers, "Content-Type": "application/cloudevents+json"}
            events = _events(args.events, f"b{int(time.time())}")
            chunks = [events[i:i + args.batch] for i in range(0, len(events), args.batch)]
            warm_up, measured = chunks[:20], chunks[20:]
            asyncio.run(_batches(gateway.port, [orjson.dumps(c) for c in warm_up], args.connections, headers))
            gateway_s = asyncio.run(_batches(gateway.port, [orjson.dumps(c) for c in measured], args.connections,
                                             headers))
            gateway_events = sum(len(c) for c in measured)
            plain_events = _events(args.events, f"p{int(time.time())}")
            plain_s = asyncio.run(_plain_producer(bootstrap, plain_events, args.batch, args.connections, False))
            plain_tx_events = _events(args.events, f"t{int(time.time())}")
            plain_tx_s = asyncio.run(_plain_producer(bootstrap, plain_tx_events, args.batch, args.connections, True))

            singles = _events(200_000, f"s{int(time.time())}")
            n, seconds, closed = asyncio.run(_singles(gateway.port, singles, single_headers, args.seconds,
                                                      args.single_connections, None))
            max_rate = n / seconds
            paced = _events(200_000, f"o{int(time.time())}")
            m, paced_s, latencies = asyncio.run(_singles(gateway.port, paced, single_headers, args.seconds,
                                                         args.single_connections, 0.7 * max_rate))
        finally:
            gateway.stop()

    gateway_rate = gateway_events / gateway_s
    plain_rate = len(plain_events) / plain_s
    plain_tx_rate = len(plain_tx_events) / plain_tx_s
    print(f"kim bench ingest — gateway with {args.connections} connections for batches, "
          f"{args.single_connections} for single events, broker on this machine")
    print(row(f"gateway, batches of {args.batch}", f"{gateway_rate:,.0f} ev/s", "target >= 20,000 ev/s"))
    print(row(f"plain producer, batches of {args.batch}", f"{plain_rate:,.0f} ev/s"))
    print(row("gateway / plain producer", f"{gateway_rate / plain_rate:.2f}", "target >= 0.50"))
    print(row("plain producer, transactional as the gateway", f"{plain_tx_rate:,.0f} ev/s"))
    print(row("gateway / transactional plain producer", f"{gateway_rate / plain_tx_rate:.2f}", "target >= 0.50"))
    print(row("gateway, single-event requests (closed loop)", f"{max_rate:,.0f} req/s", "target >= 1,500 req/s"))
    print(row("  latency p50/p99 at full load (ms)", f"{percentile(closed, 50):.1f} / {percentile(closed, 99):.1f}"))
    print(row(f"open loop at 70 % = {0.7 * max_rate:,.0f} req/s: sent", f"{m / paced_s:,.0f} req/s"))
    print(row("  latency p50 (ms)", f"{percentile(latencies, 50):.1f}"))
    print(row("  latency p95 (ms)", f"{percentile(latencies, 95):.1f}"))
    print(row("  latency p99 (ms)", f"{percentile(latencies, 99):.1f}", "target <= 25 ms"))
    return 0
