"""p50/p95/p99 from POST /v1/events returning to the gap being visible in GET /v1/gaps

Each measured event is a `CaseClosedByAgency` with reason `not_competent` for a
person whose area was opened beforehand, so each one opens a gap. Events are sent
one per request at `--rate` events/s; a poller asks the referral service for the
outstanding persons' open gaps every `--poll-ms` and stamps each gap when first seen.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import orjson

from kim.settings import KimSettings

AGENCY = "integration_center"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=500.0, help="events/s")
    parser.add_argument("--poll-ms", type=float, default=5.0)


def _event(subject: str, n: int, name: str, data: dict) -> dict:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"specversion": "1.0", "id": f"{subject}-{n}", "source": f"urn:kim:{AGENCY}:bench",
            "type": f"de.kim.{name}.v1", "subject": subject, "time": now, "recordedtime": now,
            "datacontenttype": "application/json", "data": data}


async def _measure(gateway_port: int, referral_port: int, subjects: list[str], rate: float,
                   poll_s: float, auditor: str, agency_system: str) -> list[float]:
    from urllib.parse import urlencode

    from kim.bench._support import HttpConnection

    posted: dict[str, float] = {}
    seen: dict[str, float] = {}
    headers = {"Authorization": f"Bearer {agency_system}", "Content-Type": "application/cloudevents+json"}
    pool: asyncio.Queue[HttpConnection] = asyncio.Queue()
    for _ in range(32):
        pool.put_nowait(HttpConnection(gateway_port))
    done_sending = asyncio.Event()

    async def send(subject: str) -> None:
        connection = await pool.get()
        body = orjson.dumps(_event(subject, 2, "CaseClosedByAgency", {"area": "labour_market",
                                                                         "reason": "not_competent"}))
        status, payload = await connection.request("POST", "/v1/events", body, headers)
        pool.put_nowait(connection)
        if status != 202:
            raise RuntimeError(f"gateway answered {status}: {payload[:300]!r}")
        posted[subject] = time.perf_counter()

    async def poll() -> None:
        connection = HttpConnection(referral_port)
        auth = {"Authorization": f"Bearer {auditor}"}
        while not (done_sending.is_set() and len(seen) == len(subjects)):
            waiting = [s for s in posted if s not in seen][:300]
            if waiting:
                query = urlencode([("status", "open")] + [("subject", s) for s in waiting])
                status, payload = await connection.request("GET", f"/v1/gaps?{query}", headers=auth)
                if status != 200:
                    raise RuntimeError(f"referral answered {status}: {payload[:300]!r}")
                now = time.perf_counter()
                for gap in orjson.loads(payload):
                    seen.setdefault(gap["subject"], now)
            await asyncio.sleep(poll_s)  # the poll interval of the measurement

    poller = asyncio.create_task(poll())
    started = time.perf_counter()
    tasks = []
    for n, subject in enumerate(subjects):
        delay = started + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing the load
        tasks.append(asyncio.create_task(send(subject)))
    await asyncio.gather(*tasks)
    done_sending.set()
    await asyncio.wait_for(poller, timeout=120)
    return [(seen[s] - posted[s]) * 1000 for s in subjects]


def run(args: argparse.Namespace, settings: KimSettings) -> int:
    import httpx

    from kim.bench._support import Service, kafka, percentile, row, run_client, scratch_dir, token
    from kim.collector import collect_rarely

    subjects = [f"P-lat-{uuid.uuid4().hex[:10]}" for _ in range(args.events)]
    agency_system = token(AGENCY, ["agency_system"])
    auditor = token(AGENCY, ["auditor"])
    with scratch_dir() as data_dir, kafka(settings, data_dir) as bootstrap:
        services = [Service("gateway", bootstrap, data_dir), Service("referral", bootstrap, data_dir)]
        gateway, referral = services
        try:
            for service in services:
                service.wait_ready(60)
            # every person's area is open before the measurement starts
            opens = [_event(s, 1, "CaseOpenedByAgency", {"area": "labour_market", "legal_domain": "NONE"})
                     for s in subjects]
            for start in range(0, len(opens), 500):
                response = httpx.post(gateway.url + "/v1/events", content=orjson.dumps(opens[start:start + 500]),
                                      headers={"Authorization": f"Bearer {agency_system}",
                                               "Content-Type": "application/cloudevents-batch+json"}, timeout=60)
                response.raise_for_status()
            with httpx.Client(base_url=referral.url, headers={"Authorization": f"Bearer {auditor}"}) as client:
                for subject in subjects:  # all opens applied
                    deadline = time.monotonic() + 120
                    while "labour_market" not in client.get(f"/v1/persons/{subject}/responsibility").json()["areas"]:
                        if time.monotonic() > deadline:
                            raise TimeoutError("the referral service did not apply the opening events")
                        time.sleep(0.05)
            collect_rarely()
            latencies = run_client(_measure(gateway.port, referral.port, subjects, args.rate,
                                             args.poll_ms / 1000, auditor, agency_system))
        finally:
            for service in services:
                service.stop()
    print(f"kim bench latency — {len(latencies)} gap-opening events at {args.rate:.0f} events/s, "
          f"polled every {args.poll_ms:g} ms")
    print(row("POST returned → gap in GET /v1/gaps, p50", f"{percentile(latencies, 50):.1f} ms"))
    print(row("p95", f"{percentile(latencies, 95):.1f} ms"))
    print(row("p99", f"{percentile(latencies, 99):.1f} ms", "target <= 100 ms"))
    print(row("max", f"{max(latencies):.1f} ms"))
    return 0
