"""The garbage collector's settings: `collect_rarely` in every service process (the benchmarks' own
producers, consumers and clients run with it too, so that they are compared on the same footing), and
`fewer_collections` where a process holds the whole history in memory (reporting, audit replay)."""

from __future__ import annotations

import gc


def collect_rarely() -> None:
    """Services call it once their start-up is done, benchmarks before each timed phase."""
    # What lives now (start-up's objects, a benchmark's prepared load) lives on: frozen out of collections.
    gc.freeze()
    # The collector's young generation runs once the tracked objects allocated exceed those freed by
    # this many. A consumer's poll holds hundreds of thousands of young objects at once (records, their
    # headers), all alive until the batch is committed: with a lower threshold the collector scanned
    # them again and again for nothing, 10-20 % of a catch-up's CPU (measured). Requests and batches
    # free what they allocate, so only objects that outlive them (or cyclic garbage) count towards it.
    # Never lower what a service chose for itself (the reporting service: rarer older generations).
    gc.set_threshold(*(max(mine, ours) for mine, ours in zip(gc.get_threshold(), (1_000_000, 10, 10))))


def fewer_collections() -> None:
    """Let the collector's older generations run far less often in this process.

    The figures hold millions of small objects (every person's events) that never
    form cycles; with the default thresholds the collector scans them again and
    again and costs as much as the work itself.
    """
    gc.set_threshold(100_000, 50, 1000)
