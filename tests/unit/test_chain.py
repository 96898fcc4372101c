"""Hash chains: stamping links and finding every broken one."""

from __future__ import annotations

import orjson
import pytest

from contracts import decode
from kim.messaging.chain import (
    GENESIS,
    START,
    ChainLinker,
    ChainVerifier,
    envelope_hash,
    is_chained_topic,
    link_of,
    partition_for,
)

TOPIC = "kim.job_center.events"


def envelope(n: int, subject: str = "P-1") -> dict:
    return {"specversion": "1.0", "id": f"e{n}", "source": "urn:kim:job_center", "type": "de.kim.GoalAchieved.v1",
            "subject": subject, "time": "2025-01-02T03:04:05Z", "recordedtime": "2025-01-02T03:04:05Z",
            "datacontenttype": "application/json", "data": {"plan_id": "p", "goal_id": f"g{n}"}}


def stamped(count: int, chain: str = "kim-gateway-a") -> list[bytes]:
    linker = ChainLinker()
    linker.set_head(chain, TOPIC, 0, START)
    return [linker.stamp(chain, TOPIC, 0, orjson.dumps(envelope(n))) for n in range(count)]


def verify(values: list[bytes]) -> list[tuple[int, str]]:
    verifier = ChainVerifier(TOPIC, 0)
    for offset, value in enumerate(values):
        event = orjson.loads(value)
        link = link_of(event)
        assert link is not None and not isinstance(link, str)
        verifier.feed(offset, event["id"], link)
    return [(p.offset, p.problem.split(":")[0]) for p in verifier.finish()]


def test_links_name_their_predecessor_and_hash_the_canonical_envelope():
    values = [orjson.loads(v) for v in stamped(3)]
    assert [v["chainseq"] for v in values] == [1, 2, 3]
    assert values[0]["chainprev"] == GENESIS
    assert values[1]["chainprev"] == values[0]["chainhash"] == envelope_hash(values[0])
    assert values[2]["chainprev"] == values[1]["chainhash"]
    # Key order does not matter, only content: the hash is of sorted keys.
    assert envelope_hash(dict(reversed(list(values[2].items())))) == values[2]["chainhash"]


def test_stamped_events_stay_valid_cloudevents():
    event = decode(stamped(1)[0])
    assert event.envelope.extensions["chainproducer"] == "kim-gateway-a"
    assert event.envelope.extensions["chainseq"] == 1


def test_restamping_a_copy_gives_fresh_links():
    linker = ChainLinker()
    linker.set_head("relay", TOPIC, 0, START)
    first = linker.stamp("relay", TOPIC, 0, orjson.dumps(envelope(1)))
    again = orjson.loads(linker.stamp("relay", TOPIC, 0, first))
    assert again["chainseq"] == 2 and again["chainprev"] == orjson.loads(first)["chainhash"]


def test_an_intact_chain_has_no_problems():
    assert verify(stamped(50)) == []


def test_an_altered_event_is_found_at_its_offset():
    values = stamped(10)
    event = orjson.loads(values[4])
    event["data"]["goal_id"] = "forged"
    values[4] = orjson.dumps(event)
    assert verify(values) == [(4, "altered")]


def test_an_altered_and_rehashed_event_breaks_the_next_link():
    values = stamped(10)
    event = orjson.loads(values[4])
    event["data"]["goal_id"] = "forged"
    event["chainhash"] = envelope_hash(event)
    values[4] = orjson.dumps(event)
    assert verify(values) == [(5, "forged")]


def test_a_removed_event_is_missing_before_the_next_one():
    values = stamped(10)
    del values[3]
    problems = verify(values)
    assert problems == [(3, "missing")]


def test_swapped_events_are_out_of_order_not_missing():
    values = stamped(10)
    values[3], values[4] = values[4], values[3]
    assert verify(values) == [(4, "out of order")]


def test_a_repeated_event_is_a_duplicate_and_an_inserted_one_is_forged():
    values = stamped(5)
    assert verify(values + [values[2]]) == [(5, "duplicate")]
    intruder = orjson.loads(values[2])
    intruder["data"]["goal_id"] = "other"
    intruder["chainhash"] = envelope_hash(intruder)
    assert verify(values[:3] + [orjson.dumps(intruder)] + values[3:]) == [(3, "forged")]


def test_chains_of_different_producers_interleave():
    a, b = stamped(5, "kim-gateway-a"), stamped(5, "kim-referral")
    assert verify([v for pair in zip(a, b) for v in pair]) == []


def test_malformed_chain_attributes_are_reported_as_such():
    event = orjson.loads(stamped(1)[0])
    del event["chainprev"]
    assert "incomplete" in link_of(event)
    event["chainprev"], event["chainseq"] = GENESIS, "1"
    assert link_of(event) == "malformed chain attributes"
    assert link_of(envelope(1)) is None


@pytest.mark.parametrize("partitions", [1, 6, 7])
def test_partitioning_is_the_default_partitioner(partitions):
    from aiokafka.partitioner import DefaultPartitioner

    for key in (b"P-8J9TMWJG5A", b"a", b"person-7", "Ölmühle".encode()):
        assert partition_for(key, partitions) == DefaultPartitioner()(key, list(range(partitions)), [])


def test_only_event_topics_are_chained():
    assert is_chained_topic("kim.job_center.events")
    assert is_chained_topic("kim.referral.events")
    assert not is_chained_topic("kim.deadletter")
