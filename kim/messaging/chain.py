"""Hash chains on the events KIM processes publish (interfaces.md §7, `kim audit verify`).

Every event a producer publishes on an event topic (`kim.<agency>.events`,
`kim.<service>.events`) carries four CloudEvents extension attributes:

- `chainproducer`: the producer's stable name, e.g. `kim-gateway-host1`;
- `chainseq`: 1, 2, 3, ... per producer, topic and partition;
- `chainprev`: the `chainhash` of that producer's previous event on the same
  topic-partition (`GENESIS`, 64 zeros, before the first);
- `chainhash`: SHA-256 (hex) of the canonical envelope, i.e. the envelope as
  JSON with sorted keys and no whitespace, without `chainhash` itself.

So every event names its predecessor: a verifier reading a partition from the
beginning finds any event that was altered, removed, reordered or inserted.
`ChainLinker` stamps (producers), `recover_heads` continues a chain after a
restart from the tail of the topic, `ChainVerifier` checks (auditors).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson
from aiokafka.partitioner import murmur2

log = logging.getLogger(__name__)

PRODUCER = "chainproducer"
SEQ = "chainseq"
PREV = "chainprev"
HASH = "chainhash"
CHAIN_ATTRIBUTES = (PRODUCER, SEQ, PREV, HASH)
GENESIS = "0" * 64

# How far back (in sequence numbers) the verifier remembers a chain's events
# to recognise late (reordered) ones; older ones are reported as out of order.
WINDOW = 100_000


def is_chained_topic(topic: str) -> bool:
    """Event topics (§5) carry chains; the dead-letter topic holds copies of
    rejected records and other topics are not events, so they stay unchained."""
    return topic.endswith(".events")


@lru_cache(maxsize=1 << 16)  # murmur2 is pure Python; a person's events share the key
def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives `key` (murmur2, as the Java client)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def canonical_bytes(envelope: Mapping[str, Any]) -> bytes:
    """What `chainhash` covers: the envelope without `chainhash`, sorted keys, no whitespace."""
    if HASH in envelope or not isinstance(envelope, dict):  # stamping hashes its dict before setting `chainhash`
        envelope = {k: v for k, v in envelope.items() if k != HASH}
    return orjson.dumps(envelope, option=orjson.OPT_SORT_KEYS)


def envelope_hash(envelope: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_bytes(envelope)).hexdigest()


@dataclass(frozen=True)
class ChainHead:
    """The last link of a chain on one topic-partition."""

    seq: int
    hash: str


START = ChainHead(0, GENESIS)


class ChainLinker:
    """Stamps envelopes with the next link of their chain; pure bookkeeping.

    Heads are kept per (chain, topic, partition). The producer loads a head
    from the topic before the first stamp (`set_head`) and forgets heads whose
    fate is unknown after a failed send, so that they are loaded again.
    """

    def __init__(self) -> None:
        self._heads: dict[tuple[str, str, int], ChainHead] = {}

    def has_head(self, chain: str, topic: str, partition: int) -> bool:
        return (chain, topic, partition) in self._heads

    def set_head(self, chain: str, topic: str, partition: int, head: ChainHead) -> None:
        self._heads[(chain, topic, partition)] = head

    def head(self, chain: str, topic: str, partition: int) -> ChainHead:
        return self._heads[(chain, topic, partition)]

    def forget(self, places: Iterable[tuple[str, str, int]]) -> None:
        for place in places:
            self._heads.pop(place, None)

    def stamp(self, chain: str, topic: str, partition: int, value: bytes) -> bytes:
        """The envelope `value` (JSON) with the chain's next link; advances the head."""
        envelope = orjson.loads(value)
        if not isinstance(envelope, dict):
            raise ValueError("only a JSON object (a CloudEvent) can be chained")
        previous = self._heads[(chain, topic, partition)]
        for name in CHAIN_ATTRIBUTES:  # a republished copy gets fresh links
            envelope.pop(name, None)
        envelope[PRODUCER] = chain
        envelope[SEQ] = previous.seq + 1
        envelope[PREV] = previous.hash
        canonical = canonical_bytes(envelope)
        digest = hashlib.sha256(canonical).hexdigest()
        self._heads[(chain, topic, partition)] = ChainHead(previous.seq + 1, digest)
        # The canonical form with `chainhash` added at its end: one serialisation instead of two.
        return b"%s,\"%s\":\"%s\"}" % (canonical[:-1], HASH.encode(), digest.encode())


def _link_of(value: bytes, chain: str) -> ChainHead | None:
    # Cheap test first: most records of a shared topic belong to other producers.
    if chain.encode() not in value:
        return None
    try:
        envelope = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(envelope, dict) or envelope.get(PRODUCER) != chain:
        return None
    seq, digest = envelope.get(SEQ), envelope.get(HASH)
    if isinstance(seq, int) and isinstance(digest, str):
        return ChainHead(seq, digest)
    return None


async def recover_heads(bootstrap_servers: str, chain: str, topic: str,
                        partitions: Sequence[int]) -> dict[int, ChainHead]:
    """The last link `chain` published on each partition of `topic` (`START` if none).

    Reads committed records backwards from the end in growing windows, so a
    producer that restarts continues its chains where the topic says they end,
    whatever happened to it before (an aborted transaction leaves no link).
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False,
                                isolation_level="read_committed", client_id=f"{chain}-chain-recovery")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        begins = await consumer.beginning_offsets(tps)
        heads: dict[int, ChainHead] = {}
        for tp in tps:
            heads[tp.partition] = await _last_link(consumer, tp, begins[tp], ends[tp], chain)
        return heads
    finally:
        await consumer.stop()


async def _last_link(consumer: Any, tp: Any, begin: int, end: int, chain: str) -> ChainHead:
    window = 64
    high = end
    while high > begin:
        low = max(begin, high - window)
        consumer.seek(tp, low)
        found: ChainHead | None = None
        while await consumer.position(tp) < high:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=10_000)
            for record in batch.get(tp, []):
                if record.offset < high and (link := _link_of(record.value or b"", chain)) is not None:
                    found = link
        if found is not None:
            return found
        high, window = low, window * 4
    return START


# --- verification ------------------------------------------------------------------


@dataclass(frozen=True)
class ChainProblem:
    """One event that breaks a chain, as `kim audit verify` reports it."""

    topic: str
    partition: int
    offset: int
    id: str | None
    problem: str

    def to_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset, "id": self.id,
                "problem": self.problem}


@dataclass
class _Chain:
    seen: dict[int, tuple[str, int]] = field(default_factory=dict)  # seq -> (chainhash, offset)
    claims: dict[int, tuple[str, int, str | None]] = field(default_factory=dict)  # seq -> (chainprev, offset, id)
    missing: dict[int, tuple[int, str | None]] = field(default_factory=dict)  # seq -> where the gap was noticed
    max_seq: int = 0


@dataclass(frozen=True)
class Link:
    """The chain attributes of one event and the hash its content actually has."""

    chain: str
    seq: int
    prev: str
    claimed: str
    actual: str


def link_of(envelope: Mapping[str, Any]) -> Link | None | str:
    """The event's link; None if it carries no chain attribute; a reason if they are malformed."""
    present = [name for name in CHAIN_ATTRIBUTES if name in envelope]
    if not present:
        return None
    chain, seq, prev, claimed = (envelope.get(name) for name in CHAIN_ATTRIBUTES)
    if len(present) < len(CHAIN_ATTRIBUTES):
        missing = ", ".join(name for name in CHAIN_ATTRIBUTES if name not in envelope)
        return f"incomplete chain attributes (missing {missing})"
    if not (isinstance(chain, str) and chain and isinstance(seq, int) and not isinstance(seq, bool) and seq >= 1
            and isinstance(prev, str) and isinstance(claimed, str)):
        return "malformed chain attributes"
    return Link(chain, seq, prev, claimed, envelope_hash(envelope))


class ChainVerifier:
    """Checks the chains of one topic-partition's events, fed in offset order."""

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition
        self.problems: list[ChainProblem] = []
        self._chains: dict[str, _Chain] = {}

    def _problem(self, offset: int, event_id: str | None, text: str) -> None:
        self.problems.append(ChainProblem(self.topic, self.partition, offset, event_id, text))

    def feed(self, offset: int, event_id: str | None, link: Link) -> None:
        """One chained event (its `Link`) at `offset`."""
        chain = self._chains.setdefault(link.chain, _Chain())
        name, s = link.chain, link.seq
        if link.actual != link.claimed:
            self._problem(offset, event_id,
                          f"altered: the content does not match its chainhash (chain {name}, chainseq {s})")
        if s in chain.seen:
            first_hash, first_offset = chain.seen[s]
            if first_hash == link.claimed:
                self._problem(offset, event_id, f"duplicate: repeats chainseq {s} of chain {name} "
                                                f"(first at offset {first_offset})")
            else:
                self._problem(offset, event_id, f"forged: a second event claims chainseq {s} of chain {name} "
                                                f"(the first is at offset {first_offset})")
            return
        if s <= chain.max_seq - WINDOW:
            self._problem(offset, event_id, f"out of order: chainseq {s} of chain {name} "
                                            f"after chainseq {chain.max_seq}")
            return
        chain.seen[s] = (link.claimed, offset)
        if s > chain.max_seq + 1:
            for gap in range(max(chain.max_seq + 1, s - WINDOW), s):
                chain.missing[gap] = (offset, event_id)
            if s - WINDOW > chain.max_seq + 1:
                self._problem(offset, event_id, f"missing: chainseq {chain.max_seq + 1}-{s - WINDOW - 1} of "
                                                f"chain {name} never appeared before this event")
        elif s < chain.max_seq:
            chain.missing.pop(s, None)
            self._problem(offset, event_id, f"out of order: chainseq {s} of chain {name} "
                                            f"after chainseq {chain.max_seq}")
        self._check_links(chain, name, s, link, offset, event_id)
        chain.claims[s] = (link.prev, offset, event_id)
        if s > chain.max_seq:
            chain.max_seq = s
            if s % 10_000 == 0:
                self._evict(chain)

    def _check_links(self, chain: _Chain, name: str, s: int, link: Link, offset: int,
                     event_id: str | None) -> None:
        if s == 1:
            if link.prev != GENESIS:
                self._problem(offset, event_id, f"forged: chainseq 1 of chain {name} does not start "
                                                "from the genesis hash")
        elif s - 1 in chain.seen:
            before_hash, before_offset = chain.seen[s - 1]
            if before_hash != link.prev:
                self._problem(offset, event_id, f"forged: chainprev does not match chainseq {s - 1} of chain "
                                                f"{name} at offset {before_offset} (one of the two was altered "
                                                "or inserted)")
        after = chain.claims.get(s + 1)
        if after is not None and after[0] != link.claimed:
            self._problem(after[1], after[2], f"forged: chainprev does not match chainseq {s} of chain {name} "
                                              f"at offset {offset} (one of the two was altered or inserted)")

    @staticmethod
    def _evict(chain: _Chain) -> None:
        # Bounded memory: links far behind the head cannot be linked to any more.
        horizon = chain.max_seq - WINDOW
        for table in (chain.seen, chain.claims):
            for seq in [q for q in table if q < horizon]:
                del table[seq]

    def finish(self) -> list[ChainProblem]:
        """All problems, including sequence numbers that never appeared; sorted by offset."""
        for name, chain in self._chains.items():
            runs: dict[tuple[int, str | None], list[int]] = {}
            for seq, noticed in sorted(chain.missing.items()):
                runs.setdefault(noticed, []).append(seq)
            for (offset, event_id), seqs in runs.items():
                for first, last in _runs(seqs):
                    span = f"chainseq {first}" if first == last else f"chainseq {first}-{last}"
                    self._problem(offset, event_id, f"missing: {span} of chain {name} never appeared "
                                                    "before this event")
            chain.missing.clear()
        return sorted(self.problems, key=lambda p: (p.offset, p.problem))


def _runs(numbers: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for n in numbers:
        if runs and runs[-1][1] == n - 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs
