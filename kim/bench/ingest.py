"""events/s the gateway takes into Kafka (batches and single events) against a plain producer

After warming up the broker: (1) batches of `--batch` events over `--connections`
connections; (2) a plain producer (the client library's `send` per record, the
gateway's producer settings, idempotent, acks=all) sending the same kind of records
in the same batch sizes over as many senders; (3) the gateway's own producer path
alone, transactional, for reference; (4) single-event requests at full speed over
`--single-connections` connections (one per agency system sending one event at a
time); (5) single-event requests, open loop, at 70 % of the target's 1,500 req/s and
at 70 % of the rate measured in (4), for the latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from typing import TYPE_CHECKING

import orjson

from kim.collector import collect_rarely
from kim.settings import KimSettings

if TYPE_CHECKING:
    from kim.messaging import KafkaRecord

AGENCY = "integration_center"
TOPIC = f"kim.{AGENCY}.events"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=200_000, help="events for the batch phases")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--connections", type=int, default=16)
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
    collect_rarely()

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


def _record_batches(events: list[dict], batch: int) -> list[list[KafkaRecord]]:
    """The events as Kafka records in batches of `batch`, the first batch last (senders pop them)."""
    from kim.messaging import encode_event

    records = [encode_event(e) for e in events]
    return list(reversed([records[i:i + batch] for i in range(0, len(records), batch)]))


async def _plain_producer(bootstrap: str, events: list[dict], batch: int, connections: int) -> float:
    """Seconds a plain Kafka producer takes for these events: the client library's `send` per record
    with the gateway's producer settings (idempotent, acks=all, linger, batch size), `connections`
    senders each awaiting its batch's acknowledgements — no HTTP, validation, chain or transaction."""
    from aiokafka import AIOKafkaProducer

    from kim.messaging.producer import DEFAULT_BATCH_BYTES, DEFAULT_LINGER_MS

    queue = _record_batches(events, batch)
    collect_rarely()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all",
                                linger_ms=DEFAULT_LINGER_MS, max_batch_size=DEFAULT_BATCH_BYTES)
    await producer.start()
    try:
        async def worker() -> None:
            while queue:
                sent = [await producer.send(TOPIC, r.value, key=r.key, headers=r.headers) for r in queue.pop()]
                await asyncio.gather(*sent)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def _batch_path(bootstrap: str, events: list[dict], batch: int, connections: int) -> float:
    """Seconds the gateway's own producer path takes for these events without HTTP, validation or
    chain: records handed over a batch per partition, each call group-committed in a transaction."""
    import uuid

    from kim.messaging import EventProducer

    queue = _record_batches(events, batch)
    collect_rarely()
    transactional_id = f"kim-bench-plain-{uuid.uuid4().hex[:8]}"
    async with EventProducer(bootstrap, timeout=30, transactional_id=transactional_id, chain=False) as producer:
        async def worker() -> None:
            while queue:
                await producer.send_records(TOPIC, queue.pop())

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return time.perf_counter() - started


async def _singles(port: int, events: list[dict], headers: dict[str, str], seconds: float,
                   connections: int, rate: float | None) -> tuple[int, float, list[float]]:
    """Closed loop (rate None) or open loop at `rate` requests/s; (requests, seconds, latencies in ms)."""
    from kim.bench._support import HttpConnection

    bodies = iter(orjson.dumps(e) for e in events)
    collect_rarely()
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
    from kim.bench._support import Service, kafka, percentile, row, run_client, scratch_dir, token

    def fresh(count: int, tag: str) -> list[dict]:
        return _events(count, f"{tag}{time.time_ns()}")

    def bodies(events: list[dict]) -> list[bytes]:
        return [orjson.dumps(events[i:i + args.batch]) for i in range(0, len(events), args.batch)]

    with scratch_dir() as data_dir, kafka(settings, data_dir) as bootstrap:
        gateway = Service("gateway", bootstrap, data_dir)
        try:
            gateway.wait_ready(60)
            headers = {"Authorization": f"Bearer {token(AGENCY, ['agency_system'])}",
                       "Content-Type": "application/cloudevents-batch+json"}
            single_headers = {**headers, "Content-Type": "application/cloudevents+json"}
            # A fresh broker compiles its hot paths (JIT) for its first seconds of load, at a
            # cost of most of a core: whatever ran first would pay for it alone.
            warm_up = fresh(min(args.events, 50_000), "w")
            asyncio.run(_plain_producer(bootstrap, warm_up, args.batch, args.connections))
            run_client(_batches(gateway.port, bodies(warm_up), args.connections, headers))

            events = fresh(args.events, "b")
            gateway_rate = len(events) / run_client(_batches(gateway.port, bodies(events), args.connections,
                                                              headers))
            events = fresh(args.events, "p")
            plain_rate = len(events) / asyncio.run(_plain_producer(bootstrap, events, args.batch, args.connections))
            events = fresh(args.events, "t")
            path_rate = len(events) / asyncio.run(_batch_path(bootstrap, events, args.batch, args.connections))

            singles = int(args.seconds * 10_000)  # more than the gateway takes in that time
            n, seconds, closed = run_client(_singles(gateway.port, fresh(singles, "s"), single_headers,
                                                      args.seconds, args.single_connections, None))
            max_rate = n / seconds
            paced = {}
            for label, rate in (("70 % of the target's 1,500", 0.7 * 1500), ("70 % of the measured", 0.7 * max_rate)):
                sent, paced_s, latencies = run_client(_singles(gateway.port, fresh(singles, "o"), single_headers,
                                                                args.seconds, args.single_connections, rate))
                paced[label] = (rate, sent / paced_s, latencies)
        finally:
            gateway.stop()

    print(f"kim bench ingest — gateway with {args.connections} connections for batches, "
          f"{args.single_connections} for single events, broker on this machine (warmed up)")
    print(row(f"gateway, batches of {args.batch}", f"{gateway_rate:,.0f} ev/s", "target >= 20,000 ev/s"))
    print(row(f"plain producer, batches of {args.batch}", f"{plain_rate:,.0f} ev/s"))
    print(row("gateway / plain producer", f"{gateway_rate / plain_rate:.2f}", "target >= 0.50"))
    print(row("gateway's Kafka path alone (no HTTP, transactions)", f"{path_rate:,.0f} ev/s"))
    print(row("gateway, single-event requests (closed loop)", f"{max_rate:,.0f} req/s", "target >= 1,500 req/s"))
    print(row("  latency p50/p99 at full load (ms)", f"{percentile(closed, 50):.1f} / {percentile(closed, 99):.1f}"))
    for label, (rate, sent_rate, latencies) in paced.items():
        print(row(f"open loop at {label} = {rate:,.0f} req/s: sent", f"{sent_rate:,.0f} req/s"))
        print(row("  latency p50 / p95 (ms)",
                  f"{percentile(latencies, 50):.1f} / {percentile(latencies, 95):.1f}"))
        print(row("  latency p99 (ms)", f"{percentile(latencies, 99):.1f}", "target <= 25 ms"))
    return 0
