"""Publishing a district through the gateway, the way the agencies' systems would.

Each agency sends its own events, in the order it recorded them (a little shuffled,
as real systems are), in batches under a token of its own. Ids are stable, so
publishing the same district again gives duplicates, not new events.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx
import orjson

from contracts import CATALOGUE, parse_rfc3339
from kim.auth import issue_dev_token
from kim.demo.district import generate_district

BATCH_SIZE = 500
SHUFFLE_WINDOW = 5
MAX_ATTEMPTS = 8
MAX_WAIT_S = 60.0  # longest Retry-After honoured
RECONNECT_WAIT_S = 8.0  # longest pause between attempts to reach the gateway (~40 s in all)
BATCH_MEDIA_TYPE = "application/cloudevents-batch+json"


class DemoError(RuntimeError):
    """Publishing cannot go on; the message says why in plain words."""


@dataclass
class DemoSummary:
    """What a demo run generated and what the gateway made of it."""

    persons: int
    events: int
    accepted: int = 0
    duplicates: int = 0
    per_type: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    stopped: bool = False  # interrupted before every batch was sent

    def to_dict(self) -> dict[str, Any]:
        return {"persons": self.persons, "events": self.events, "accepted": self.accepted,
                "duplicates": self.duplicates, "per_type": self.per_type, "seconds": round(self.seconds, 3),
                "stopped": self.stopped}


def agency_of(envelope: dict[str, Any]) -> str:
    """The agency id in `source` (`urn:kim:<agency>:<office>`)."""
    return str(envelope["source"]).split(":")[2]


def counts_per_type(events: list[dict[str, Any]]) -> dict[str, int]:
    """Events per EventName, in the order of the catalogue."""
    counts = Counter(str(event["type"]).split(".")[2] for event in events)
    return {model.event_name: counts[model.event_name] for model in CATALOGUE if counts[model.event_name]}


def batches(events: list[dict[str, Any]], seed: int) -> list[tuple[str, list[dict[str, Any]]]]:
    """(agency, events) batches: each agency's events in recording order, a little shuffled,
    at most BATCH_SIZE each; the batches of all agencies interleaved by recording time."""
    by_agency: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_agency.setdefault(agency_of(event), []).append(event)
    rng = random.Random(seed)
    result: list[tuple[str, list[dict[str, Any]]]] = []
    for agency in sorted(by_agency):
        queue = sorted(by_agency[agency], key=lambda e: (parse_rfc3339(e["recordedtime"]), e["id"]))
        for index in range(0, len(queue), SHUFFLE_WINDOW):
            window = queue[index:index + SHUFFLE_WINDOW]
            rng.shuffle(window)
            queue[index:index + SHUFFLE_WINDOW] = window
        result.extend((agency, queue[index:index + BATCH_SIZE]) for index in range(0, len(queue), BATCH_SIZE))
    result.sort(key=lambda item: (min(parse_rfc3339(e["recordedtime"]) for e in item[1]), item[0]))
    return result


class _ProgressBar:
    """A one-line text bar on stderr, redrawn in place."""

    WIDTH = 24  # the whole line stays within 80 columns

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.stream = total, stream

    def draw(self, done: int, accepted: int, duplicates: int) -> None:
        filled = self.WIDTH * done // self.total if self.total else self.WIDTH
        self.stream.write(f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done}/{self.total} events, "
                          f"{accepted} new, {duplicates} duplicates")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(MAX_WAIT_S, max(0.0, float(response.headers.get("retry-after", "1"))))
    except ValueError:  # an HTTP date: not worth parsing for a demo
        return 5.0


def _refusal(response: httpx.Response, agency: str, size: int) -> str:
    try:
        body = response.json()
    except ValueError:
        body = {"detail": response.text[:300]}
    detail = body.get("detail") if isinstance(body, dict) else None
    text = f"the gateway refused a batch of {size} {agency} events ({response.status_code}): {detail or body}"
    errors = body.get("errors") if isinstance(body, dict) else None
    if errors:
        text += "; " + "; ".join(f"{e.get('id')} {e.get('path')}: {e.get('rule')}" for e in errors[:5])
    if response.status_code == 401:
        text += " (are the demo's secret and the gateway's KIM_AUTH_HS256_SECRET the same?)"
    return text


def _wait(stop_event: threading.Event | None, seconds: float) -> bool:
    """Wait, unless asked to stop; True when asked to stop."""
    if stop_event is None:
        time.sleep(seconds)
        return False
    return stop_event.wait(seconds)


def _send(client: httpx.Client, url: str, secret: str, agency: str, batch: list[dict[str, Any]],
          stop_event: threading.Event | None) -> dict[str, Any] | None:
    """POST one batch, retrying while Kafka or the gateway is unavailable; None when stopped."""
    body = orjson.dumps(batch)
    attempt = 0
    while True:
        attempt += 1
        # A fresh token per request, so a long wait for Kafka cannot outlive it.
        token = issue_dev_token(secret, sub=f"kim-demo-{agency}", agency=agency, roles=["agency_system"], ttl_s=600)
        headers = {"content-type": BATCH_MEDIA_TYPE, "authorization": f"Bearer {token}"}
        try:
            response = client.post(url, content=body, headers=headers)
        except httpx.TransportError as exc:
            problem, delay = f"cannot reach the gateway at {url} ({exc})", min(RECONNECT_WAIT_S, 2.0 ** (attempt - 1))
        else:
            if response.status_code == 202:
                answer: dict[str, Any] = response.json()
                return answer
            if response.status_code != 503:
                raise DemoError(_refusal(response, agency, len(batch)))
            problem, delay = "the gateway answers 503: Kafka cannot take events now", _retry_after(response)
        if attempt == MAX_ATTEMPTS:
            raise DemoError(f"{problem}; gave up after {MAX_ATTEMPTS} attempts")
        if _wait(stop_event, delay):
            return None


def publish_events(events: list[dict[str, Any]], gateway_url: str, secret: str, *, seed: int = 0,
                   progress: bool = True, stop_event: threading.Event | None = None,
                   transport: httpx.BaseTransport | None = None) -> DemoSummary:
    """Send `events` through the gateway at `gateway_url`, each agency with its own token.

    Raises DemoError when the gateway refuses a batch or stays unavailable; stops
    between batches when `stop_event` is set (the summary then says `stopped`).
    """
    started = time.monotonic()
    summary = DemoSummary(persons=len({event["subject"] for event in events}), events=len(events),
                          per_type=counts_per_type(events))
    url = gateway_url.rstrip("/") + "/v1/events"
    bar = _ProgressBar(len(events), sys.stderr) if progress else None
    sent = 0
    try:
        with httpx.Client(timeout=60.0, transport=transport) as client:
            for agency, batch in batches(events, seed):
                answer = None if stop_event is not None and stop_event.is_set() else _send(
                    client, url, secret, agency, batch, stop_event)
                if answer is None:
                    summary.stopped = True
                    break
                summary.accepted += int(answer.get("accepted", 0))
                summary.duplicates += int(answer.get("duplicates", 0))
                sent += len(batch)
                if bar:
                    bar.draw(sent, summary.accepted, summary.duplicates)
    finally:
        if bar:
            bar.close()
        summary.seconds = time.monotonic() - started
    return summary


def run_demo(gateway_url: str, secret: str, persons: int, years: float, seed: int, progress: bool = True,
             stop_event: threading.Event | None = None) -> DemoSummary:
    """Generate the district of `persons` over `years` from `seed` and publish it through the gateway."""
    started = time.monotonic()
    events = generate_district(persons, years, seed)
    summary = publish_events(events, gateway_url, secret, seed=seed, progress=progress, stop_event=stop_event)
    summary.seconds = time.monotonic() - started
    return summary
