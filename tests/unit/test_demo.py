"""`kim demo`: the synthetic district (deterministic, valid, realistic) and its publishing."""

from __future__ import annotations

import argparse
import re
import threading
import time
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import jwt
import orjson
import pytest

from contracts import CATALOGUE, ValidatedEvent, authorisation_problems, parse_rfc3339, validate
from kim.demo import (
    DemoError,
    add_arguments,
    batches,
    generate_district,
    publish_events,
    run,
    run_demo,
)
from kim.demo.publish import BATCH_SIZE, MAX_ATTEMPTS, SHUFFLE_WINDOW
from kim.settings import KimSettings

BERLIN = ZoneInfo("Europe/Berlin")
SECRET = "demo-test-secret-of-at-least-32-bytes"
Event = dict[str, Any]


@pytest.fixture(scope="module")
def district() -> list[Event]:
    """The default district: 1,300 persons over one year, seed 7."""
    return generate_district(1300, 1.0, 7)


def name(event: Event) -> str:
    return str(event["type"]).split(".")[2]


def agency(event: Event) -> str:
    return str(event["source"]).split(":")[2]


def at(text: str) -> datetime:
    return parse_rfc3339(text)


def by_subject(events: list[Event]) -> dict[str, list[Event]]:
    persons: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        persons[event["subject"]].append(event)
    return persons


def legal_end(title_time: datetime) -> datetime:
    local = title_time.astimezone(BERLIN)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return datetime(year, month, 1, tzinfo=BERLIN).astimezone(timezone.utc)


# --- generation ------------------------------------------------------------------------------


def test_same_seed_gives_the_same_events_and_another_seed_others(district: list[Event]) -> None:
    assert generate_district(1300, 1.0, 7) == district
    other = generate_district(1300, 1.0, 8)
    assert other != district
    assert not {e["subject"] for e in other} & {e["subject"] for e in district}


def test_a_smaller_district_is_part_of_the_larger_one(district: list[Event]) -> None:
    # Re-publishing with fewer persons gives duplicates, never the same id with other content.
    larger = {(e["source"], e["id"]): e for e in district}
    smaller = generate_district(40, 1.0, 7)
    assert smaller and all(larger[(e["source"], e["id"])] == e for e in smaller)


def test_generation_is_fast() -> None:
    started = time.perf_counter()
    generate_district(1300, 1.0, 11)
    assert time.perf_counter() - started < 5


def test_every_event_is_valid_and_authorised_for_its_source(district: list[Event]) -> None:
    for event in district:
        result = validate(event)
        assert isinstance(result, ValidatedEvent), (event, result)
        assert result.agency is not None
        assert authorisation_problems(result, result.agency) == [], event
        assert re.fullmatch(r"urn:kim:[a-z_]+:[a-z-]+", event["source"])


def test_ids_are_unique_per_source(district: list[Event]) -> None:
    keys = Counter((e["source"], e["id"]) for e in district)
    assert max(keys.values()) == 1


def test_every_catalogue_type_appears(district: list[Event]) -> None:
    present = Counter(name(e) for e in district)
    assert {model.event_name for model in CATALOGUE} <= set(present)


def test_size_and_outcomes_match_the_glossary(district: list[Event]) -> None:
    # Landkreis Biberach in one year: ~1,300 persons, 240 into employment, 315 internships, 28 apprenticeships.
    assert len({e["subject"] for e in district}) == 1300
    started = Counter(e["data"]["kind"] for e in district if name(e) == "EmploymentStarted")
    assert 190 <= started["employment"] + started["minijob"] + started["self_employed"] <= 290
    assert 250 <= started["internship"] <= 380
    assert 15 <= started["apprenticeship"] <= 45
    internships = sum(1 for e in district if name(e) == "MeasureAssigned" and e["data"]["kind"] == "internship")
    assert 250 <= internships <= 380


def test_outcomes_scale_with_persons_and_years() -> None:
    small = Counter(e["data"]["kind"] for e in generate_district(650, 2.0, 7) if name(e) == "EmploymentStarted")
    assert 190 <= small["employment"] + small["minijob"] + small["self_employed"] <= 300


def test_no_personal_data_travels(district: list[Event]) -> None:
    forbidden = re.compile(r"name|birth_date|address|street|phone|mail|note", re.IGNORECASE)

    def keys(value: Any) -> set[str]:
        if isinstance(value, dict):
            return set(value) | {k for v in value.values() for k in keys(v)}
        if isinstance(value, list):
            return {k for v in value for k in keys(v)}
        return set()

    assert not {key for e in district for key in keys(e) if forbidden.search(key)}
    assert all(re.fullmatch(r"P-[0-9A-HJKMNP-TV-Z]{10}", e["subject"]) for e in district)


def test_times_are_in_the_past_and_recorded_late_realistically(district: list[Event]) -> None:
    now = datetime.now(timezone.utc)
    assert all(at(e["time"]) < now and at(e["recordedtime"]) < now for e in district)
    # Only an acceptance may be recorded before it takes effect (accepted in advance).
    early = Counter(name(e) for e in district if at(e["recordedtime"]) < at(e["time"]))
    assert set(early) == {"HandoverAccepted"} and early["HandoverAccepted"] >= 20
    everyday = [e for e in district if name(e) != "CaseOpenedByAgency"]  # openings include taken-over files
    delays = sorted(at(e["recordedtime"]) - at(e["time"]) for e in everyday)
    assert delays[len(delays) // 2] < timedelta(days=1)
    weeks_late = sum(1 for d in delays if d >= timedelta(days=21))
    assert 0.01 * len(everyday) <= weeks_late <= 0.08 * len(everyday)


def test_history_spans_the_requested_period() -> None:
    events = generate_district(200, 0.5, 3, start=date(2023, 4, 1))
    registered = [at(e["time"]) for e in events if name(e) == "PersonRegistered"]
    assert min(registered) >= datetime(2023, 4, 1, tzinfo=BERLIN)
    assert max(registered) < datetime(2023, 10, 1, tzinfo=BERLIN)


@pytest.mark.parametrize("persons, years", [(-1, 1.0), (10, 0.0)])
def test_rejects_impossible_sizes(persons: int, years: float) -> None:
    with pytest.raises(ValueError):
        generate_district(persons, years, 7)


def test_areas_are_acted_on_only_by_their_holder(district: list[Event]) -> None:
    """Replaying each person: offers and closures come from the holder, answers from the receiver."""
    for subject, events in by_subject(district).items():
        holders: dict[str, str | None] = {}
        offers: dict[str, Event] = {}
        for event in sorted(events, key=lambda e: (at(e["time"]), int(e["id"].rsplit("-", 1)[1]))):
            data, who = event["data"], agency(event)
            if name(event) == "CaseOpenedByAgency":
                holders[data["area"]] = who
            elif name(event) == "HandedOverToAgency":
                assert holders.get(data["area"]) == who, (subject, event)
                offers[data["handover_id"]] = event
            elif name(event) in ("HandoverAccepted", "HandoverRejected"):
                offer = offers[data["handover_id"]]
                assert offer["data"]["to_agency"] == who, (subject, event)
                if name(event) == "HandoverAccepted":
                    holders[offer["data"]["area"]] = who
            elif name(event) == "CaseClosedByAgency":
                assert holders.get(data["area"]) == who, (subject, event)
                holders[data["area"]] = None


def test_r1_handovers_are_mostly_on_time_some_late_some_forgotten(district: list[Event]) -> None:
    outcomes: Counter[str] = Counter()
    for events in by_subject(district).values():
        titles = [e for e in events if name(e) == "ResidenceTitleGranted" and e["data"]["category"] == "protection"]
        offers = [e for e in events if name(e) == "HandedOverToAgency" and e["data"]["area"] == "benefits"
                  and agency(e) == "social_welfare_office" and e["data"]["to_agency"] == "job_center"]
        if not titles or not offers:
            continue
        accepted = [at(e["time"]) for e in events if name(e) == "HandoverAccepted"
                    and e["data"]["handover_id"] in {o["data"]["handover_id"] for o in offers}]
        rejected = any(name(e) == "HandoverRejected" for e in events)
        deadline = legal_end(at(titles[0]["time"]))
        outcome = "forgotten" if not accepted else "on_time" if min(accepted) <= deadline else "late"
        outcomes[outcome] += 1
        outcomes["rejected"] += rejected
    total = outcomes["on_time"] + outcomes["late"] + outcomes["forgotten"]
    assert total >= 300
    assert outcomes["on_time"] >= 0.8 * total
    assert outcomes["late"] >= 5 and outcomes["forgotten"] >= 3 and outcomes["rejected"] >= 5
    assert outcomes["late"] + outcomes["forgotten"] <= 0.15 * total


def test_r2_handovers_follow_b1_mostly_within_20_days(district: list[Event]) -> None:
    outcomes: Counter[str] = Counter()
    for events in by_subject(district).values():
        for reached in (e for e in events if name(e) == "LanguageLevelReached" and e["data"]["level"] == "B1"):
            offers = {e["data"]["handover_id"] for e in events if name(e) == "HandedOverToAgency"
                      and e["data"]["area"] == "labour_market" and agency(e) == "integration_center"}
            if not offers:
                continue
            accepted = [at(e["time"]) for e in events
                        if name(e) == "HandoverAccepted" and e["data"]["handover_id"] in offers]
            deadline = at(reached["time"]) + timedelta(days=20)
            outcomes["forgotten" if not accepted else "on_time" if min(accepted) <= deadline else "late"] += 1
    total = sum(outcomes.values())
    assert total >= 100 and outcomes["on_time"] >= 0.7 * total
    assert outcomes["late"] >= 3 and outcomes["forgotten"] >= 3


def test_not_competent_closures_some_reopened_some_not(district: list[Event]) -> None:
    reopened = still_open = 0
    for events in by_subject(district).values():
        closures = [e for e in events if name(e) == "CaseClosedByAgency" and e["data"]["reason"] == "not_competent"]
        for closure in closures:
            later = [e for e in events if name(e) == "CaseOpenedByAgency"
                     and e["data"]["area"] == closure["data"]["area"] and at(e["time"]) > at(closure["time"])]
            reopened += bool(later)
            still_open += not later
    assert reopened >= 3 and still_open >= 1


def test_minors_have_the_youth_office(district: list[Event]) -> None:
    youth = {e["subject"] for e in district if name(e) == "CaseOpenedByAgency" and e["data"]["area"] == "youth"}
    assert len(youth) >= 40
    for e in district:
        if name(e) == "PersonRegistered" and e["subject"] in youth:
            assert at(e["time"]).year - e["data"]["birth_year"] <= 17


def test_naturalisation_precedes_the_case_closing(district: list[Event]) -> None:
    persons = by_subject(district)
    closed = [e for e in district if name(e) == "CaseClosed" and e["data"]["reason"] == "naturalised"]
    assert closed
    for event in closed:
        naturalised = [e for e in persons[event["subject"]] if name(e) == "NaturalisationCompleted"]
        assert naturalised and at(naturalised[0]["time"]) < at(event["time"])


def test_over_two_years_some_case_management_lasts_two_years() -> None:
    events = generate_district(300, 2.0, 7)
    end = datetime(2026, 1, 1, tzinfo=BERLIN)
    long_held = 0
    for person in by_subject(events).values():
        opened = [at(e["time"]) for e in person if name(e) == "CaseOpenedByAgency"
                  and e["data"]["area"] == "case_management"]
        ended = any(name(e) == "CaseClosed" or (name(e) == "CaseClosedByAgency"
                                                and e["data"]["area"] == "case_management") for e in person)
        long_held += bool(opened) and not ended and end - opened[0] >= timedelta(days=730)
    assert long_held >= 10


# --- publishing ----------------------------------------------------------------------------------


class FakeGateway:
    """The gateway's contract for agency systems, in memory: checks, deduplication, outages."""

    def __init__(self, outages: int = 0, status: int = 503) -> None:
        self.seen: set[tuple[str, str]] = set()
        self.requests: list[tuple[str, list[Event]]] = []
        self.outages, self.status = outages, status

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/events"
        assert request.headers["content-type"] == "application/cloudevents-batch+json"
        claims = jwt.decode(request.headers["authorization"].removeprefix("Bearer "), SECRET, algorithms=["HS256"])
        assert claims["roles"] == ["agency_system"]
        batch = orjson.loads(request.content)
        self.requests.append((claims["agency"], batch))
        if self.outages:
            self.outages -= 1
            return httpx.Response(self.status, headers={"Retry-After": "0"}, json={"error": "kafka_unavailable"})
        assert 1 <= len(batch) <= BATCH_SIZE
        for event in batch:
            result = validate(event)
            assert isinstance(result, ValidatedEvent)
            assert authorisation_problems(result, claims["agency"]) == []
        keys = [(e["source"], e["id"]) for e in batch]
        duplicates = sum(1 for key in keys if key in self.seen)
        self.seen.update(keys)
        return httpx.Response(202, json={"accepted": len(batch) - duplicates, "duplicates": duplicates})


@pytest.fixture(scope="module")
def small() -> list[Event]:
    return generate_district(120, 1.0, 5)


def publish(events: list[Event], gateway: FakeGateway, **options: Any) -> Any:
    options.setdefault("progress", False)
    return publish_events(events, "http://gateway.test", SECRET, seed=5, transport=httpx.MockTransport(gateway),
                          **options)


def test_publishing_twice_gives_duplicates_not_new_events(small: list[Event]) -> None:
    gateway = FakeGateway()
    first = publish(small, gateway)
    assert (first.accepted, first.duplicates, first.stopped) == (len(small), 0, False)
    assert first.persons == 120 and first.events == len(small)
    assert sum(first.per_type.values()) == len(small)
    assert first.to_dict()["per_type"]["PersonRegistered"] == 120
    again = publish(small, gateway)
    assert (again.accepted, again.duplicates) == (0, len(small))


def test_each_agency_sends_its_events_in_recording_order_a_little_shuffled(district: list[Event]) -> None:
    sent: dict[str, list[Event]] = defaultdict(list)
    for who, batch in batches(district, seed=7):
        assert len(batch) <= BATCH_SIZE and {agency(e) for e in batch} == {who}
        sent[who].extend(batch)
    assert sum(len(v) for v in sent.values()) == len(district)
    shuffled = False
    for events in sent.values():
        ordered = sorted(events, key=lambda e: (at(e["recordedtime"]), e["id"]))
        position = {id(e): i for i, e in enumerate(ordered)}
        assert max(abs(position[id(e)] - i) for i, e in enumerate(events)) < SHUFFLE_WINDOW
        shuffled = shuffled or events != ordered
    assert shuffled


def test_a_503_is_retried_after_retry_after(small: list[Event]) -> None:
    gateway = FakeGateway(outages=2)
    summary = publish(small, gateway)
    assert summary.accepted == len(small)
    assert gateway.requests[0][1] == gateway.requests[1][1] == gateway.requests[2][1]


def test_a_gateway_that_stays_unavailable_ends_the_run(small: list[Event]) -> None:
    gateway = FakeGateway(outages=1000)
    with pytest.raises(DemoError, match="503"):
        publish(small, gateway)
    assert len(gateway.requests) == MAX_ATTEMPTS


def test_a_refused_batch_ends_the_run_with_the_reason(small: list[Event]) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        error = {"index": 0, "id": "x", "path": "$.time", "rule": "must be a date"}
        return httpx.Response(422, json={"error": "invalid_events", "detail": "1 of 3 event(s) break the contract",
                                         "errors": [error]})

    with pytest.raises(DemoError, match=r"422.*\$\.time: must be a date"):
        publish_events(small, "http://gateway.test", SECRET, progress=False, transport=httpx.MockTransport(refuse))


def test_a_stop_request_ends_the_run_between_batches(small: list[Event]) -> None:
    stop = threading.Event()
    stop.set()
    gateway = FakeGateway()
    summary = publish(small, gateway, stop_event=stop)
    assert summary.stopped and summary.accepted == 0 and not gateway.requests
    summary = run_demo("http://127.0.0.1:9", SECRET, persons=10, years=1.0, seed=1, progress=False, stop_event=stop)
    assert summary.stopped and summary.persons == 10 and summary.events > 0


def test_progress_bar_on_stderr_only_when_asked(small: list[Event], capsys: pytest.CaptureFixture[str]) -> None:
    publish(small, FakeGateway(), progress=True)
    err = capsys.readouterr().err
    assert f"{len(small)}/{len(small)} events" in err and re.search(r"\[#+\]", err)
    publish(small, FakeGateway(), progress=False)
    assert capsys.readouterr().err == ""


# --- command line ---------------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kim demo")
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_command_line_defaults() -> None:
    args = parse()
    assert (args.persons, args.years, args.seed, args.gateway, args.dry_run, args.out) == (
        1300, 1.0, 7, "http://127.0.0.1:8080", False, None)


def test_dry_run_prints_counts_and_writes_the_events(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "events.json"
    assert run(parse("--persons", "30", "--seed", "3", "--dry-run", "--out", str(out)), KimSettings()) == 0
    assert orjson.loads(out.read_bytes()) == generate_district(30, 1.0, 3)
    printed = capsys.readouterr().out
    assert "PersonRegistered" in printed and "nothing published" in printed


@pytest.mark.parametrize("argv", [["--persons", "0"], ["--years", "0"], ["--years", "-1"]])
def test_command_line_rejects_impossible_sizes(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse(*argv)
