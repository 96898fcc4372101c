"""The gateway's group commit and token memory, with the store and Kafka faked."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

import jwt
import orjson
import pytest

from kim.auth import Principal, issue_dev_token, principal_from_claims
from kim.messaging import PublishFailed
from services.gateway.api import VerifiedTokens
from services.gateway.application import AcceptEvents, Outcome
from services.gateway.domain import Publishable, assess, split_fresh

EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "examples" / "PersonRegistered.json"


def events(*ids: str) -> list[Publishable]:
    raw = orjson.loads(EXAMPLE.read_bytes())
    assessment = assess([dict(raw, id=i) for i in ids], raw["source"].split(":")[2])
    assert not assessment.invalid and not assessment.forbidden
    return assessment.events


class Store:
    in_process = False  # in a worker thread, so that a recording can be held

    def __init__(self) -> None:
        self.keys: set[tuple[str, str]] = set()
        self.held: set[str] = set()  # ids whose recording waits for `release`
        self.release = threading.Event()
        self.holding = threading.Event()  # set once a held recording waits
        self.recordings: list[list[str]] = []

    def may_know(self, keys: Sequence[tuple[str, str]]) -> bool:
        return not self.keys.isdisjoint(keys)

    def known(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        return self.keys.intersection(keys)

    def record(self, published: Sequence[Publishable]) -> None:
        if self.held.intersection(e.event.id for e in published):
            self.holding.set()
            assert self.release.wait(10)
        self.keys.update(e.key for e in published)
        self.recordings.append([e.event.id for e in published])


class Kafka:
    def __init__(self) -> None:
        self.published: list[list[str]] = []
        self.down = False
        self.changed = asyncio.Event()

    async def publish(self, published: Sequence[Publishable]) -> None:
        if self.down:
            raise PublishFailed("down")
        self.published.append([e.event.id for e in published])
        self.changed.set()

    async def until_published(self, *ids: str) -> None:
        while not set(ids) <= {id for group in self.published for id in group}:
            self.changed.clear()
            await self.changed.wait()


def test_repeats_in_a_group_and_later_are_duplicates() -> None:
    async def scenario() -> tuple[list[Outcome], Kafka]:
        kafka = Kafka()
        accept = AcceptEvents(Store(), [kafka])
        outcomes = list(await asyncio.gather(accept(events("a", "b")), accept(events("b", "c"))))
        outcomes.append(await accept(events("a", "d")))
        await accept.close()
        return outcomes, kafka

    outcomes, kafka = asyncio.run(scenario())
    assert outcomes == [Outcome(2, 0), Outcome(1, 1), Outcome(1, 1)]
    assert sorted(id for group in kafka.published for id in group) == ["a", "b", "c", "d"]


def test_events_published_but_not_yet_recorded_are_duplicates_for_the_next_group() -> None:
    async def scenario() -> tuple[Outcome, Outcome, Kafka]:
        store, kafka = Store(), Kafka()
        accept = AcceptEvents(store, [kafka])
        store.held = {"a"}
        first = asyncio.create_task(accept(events("a")))
        assert await asyncio.to_thread(store.holding.wait, 10)
        second = asyncio.create_task(accept(events("a", "b")))  # while "a" is being recorded
        await asyncio.wait_for(kafka.until_published("b"), 10)
        assert not first.done()  # answered only once recorded
        store.release.set()
        outcomes = await asyncio.gather(first, second)
        await accept.close()
        return *outcomes, kafka

    first, second, kafka = asyncio.run(scenario())
    assert (first, second) == (Outcome(1, 0), Outcome(1, 1))
    assert kafka.published == [["a"], ["b"]]


def test_groups_published_during_a_recording_are_recorded_together_next() -> None:
    async def scenario() -> tuple[list[Outcome], Store]:
        store, kafka = Store(), Kafka()
        accept = AcceptEvents(store, [kafka])
        store.held = {"a"}
        first = asyncio.create_task(accept(events("a")))
        assert await asyncio.to_thread(store.holding.wait, 10)
        later = [asyncio.create_task(accept(events("b"))), asyncio.create_task(accept(events("c", "d")))]
        await asyncio.wait_for(kafka.until_published("b", "c", "d"), 10)
        store.release.set()
        outcomes = await asyncio.gather(first, *later)
        await accept.close()
        return outcomes, store

    outcomes, store = asyncio.run(scenario())
    assert outcomes == [Outcome(1, 0), Outcome(1, 0), Outcome(2, 0)]
    assert store.recordings == [["a"], ["b", "c", "d"]]


def test_a_failed_publish_fails_the_group_and_records_nothing() -> None:
    async def scenario() -> tuple[Outcome, Store]:
        store, kafka = Store(), Kafka()
        accept = AcceptEvents(store, [kafka])
        kafka.down = True
        with pytest.raises(PublishFailed):
            await accept(events("a"))
        kafka.down = False
        outcome = await accept(events("a"))
        await accept.close()
        return outcome, store

    outcome, store = asyncio.run(scenario())
    assert outcome == Outcome(1, 0)
    assert {id for _, id in store.keys} == {"a"}


@pytest.mark.parametrize("first_fails", [False, True])
def test_a_repeat_of_an_event_in_another_transaction_waits_for_its_outcome(first_fails: bool) -> None:
    class HeldKafka(Kafka):
        """Holds the first transaction open while a second publisher is free, then ends it."""

        def __init__(self) -> None:
            super().__init__()
            self.entered, self.release = asyncio.Event(), asyncio.Event()

        async def publish(self, published: Sequence[Publishable]) -> None:
            if not self.entered.is_set():
                self.entered.set()
                await self.release.wait()
                if first_fails:
                    raise PublishFailed("the broker went away")
            await super().publish(published)

    async def scenario() -> tuple[Outcome, Kafka]:
        kafka = HeldKafka()
        accept = AcceptEvents(Store(), [kafka, kafka])
        first = asyncio.create_task(accept(events("a")))
        await kafka.entered.wait()
        repeat = asyncio.create_task(accept(events("a", "b")))  # "a" is in the open transaction
        await asyncio.sleep(0)  # lets the repeat reach the group commit (no timing involved)
        assert not repeat.done()
        kafka.release.set()
        if first_fails:
            with pytest.raises(PublishFailed):
                await first
        else:
            assert await first == Outcome(1, 0)
        outcome = await repeat
        await accept.close()
        return outcome, kafka

    outcome, kafka = asyncio.run(scenario())
    if first_fails:  # "a" was not published: the repeat publishes it
        assert (outcome, kafka.published) == (Outcome(2, 0), [["a", "b"]])
    else:  # published once, and the repeat is a duplicate
        assert (outcome, kafka.published) == (Outcome(1, 1), [["a"], ["b"]])


@pytest.mark.parametrize(("groups_per_publisher", "overlap_events", "second"), [
    (1, 0, ("b",)), (2, 0, ("b",)), (2, 2, ("b",)), (2, 2, ("b", "c"))])
def test_a_publisher_is_handed_its_next_group_while_its_transaction_runs(
        groups_per_publisher: int, overlap_events: int, second: tuple[str, ...]) -> None:
    class SlowKafka(Kafka):
        def __init__(self) -> None:
            super().__init__()
            self.started: list[list[str]] = []
            self.release = asyncio.Event()

        async def publish(self, published: Sequence[Publishable]) -> None:
            self.started.append([e.event.id for e in published])
            self.changed.set()
            await self.release.wait()
            await super().publish(published)

    async def scenario() -> list[list[str]]:
        kafka = SlowKafka()
        accept = AcceptEvents(Store(), [kafka], groups_per_publisher=groups_per_publisher,
                              overlap_events=overlap_events)
        first = asyncio.create_task(accept(events("a")))
        while not kafka.started:
            kafka.changed.clear()
            await kafka.changed.wait()
        later = asyncio.create_task(accept(events(*second)))
        for _ in range(10):  # the group commit's steps (no timing involved)
            await asyncio.sleep(0)
        handed_over = list(kafka.started)
        kafka.release.set()
        assert (await first, await later) == (Outcome(1, 0), Outcome(len(second), 0))
        await accept.close()
        return handed_over

    # a second group is handed over only when the publisher may have two, and enough events wait
    overlaps = groups_per_publisher == 2 and len(second) >= overlap_events
    assert asyncio.run(scenario()) == ([["a"], list(second)] if overlaps else [["a"]])


def test_split_fresh_counts_per_request() -> None:
    a, b, c = events("a", "b", "c")
    fresh, accepted = split_fresh([[a, b], [b, c], [a]], {c.key})
    assert fresh == [a, b]
    assert accepted == [2, 0, 0]


def test_verified_tokens_are_remembered_until_they_expire() -> None:
    secret = "secret-of-thirty-two-bytes-at-least"
    tokens = VerifiedTokens(limit=2)
    headers = {ttl: "Bearer " + issue_dev_token(secret, sub="s", agency="job_center", roles=["agency_system"],
                                                ttl_s=ttl) for ttl in (60, -1)}
    for header in headers.values():
        tokens.remember(header, principal_from_claims(jwt.decode(header[7:], secret, algorithms=["HS256"],
                                                                 options={"verify_exp": False})))
    assert tokens.get(headers[60]) == Principal("s", "job_center", frozenset({"agency_system"}))
    assert tokens.get(headers[-1]) is None
    assert tokens.get("Bearer unknown") is None


def test_each_event_goes_to_the_topic_of_its_agency_whatever_the_office() -> None:
    raw = orjson.loads(EXAMPLE.read_bytes())
    agency = raw["source"].split(":")[2]
    (event,) = assess([dict(raw, source=f"urn:kim:{agency}:nordhorn")], agency).events
    assert event.topic == event.event.topic == f"kim.{agency}.events"
