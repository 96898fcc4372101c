"""The reporting service's helper process: it validates every consumed event, and keeps and computes
half of the persons, so that the service's two costliest steps use a second CPU.

The helper sees every event the service keeps (it validates them first, and is handed the restored
table), so its half of the persons' logs equals the service's. It answers a recomputation with what
changed in the tally of its persons; the service adds that to its own tally.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from pathlib import Path

from kim.helper import helper_process
from services.referral.rules import load_rules
from services.reporting.application import HelperGone, Recomputed, Reporting
from services.reporting.messaging import Invalid, contract_problems, kept_records, records_of_envelopes

log = logging.getLogger(__name__)

_held: Reporting | None = None  # in the helper process: its half of the persons


def holds(subject: str) -> bool:
    """The helper's half: a hash that is the same in every process (unlike `hash`)."""
    return zlib.crc32(subject.encode()) & 1 == 1


def _start(rules_file: Path | None) -> None:
    global _held
    _held = Reporting(load_rules(rules_file))


def _validate_and_keep(values: Sequence[bytes]) -> list[Invalid]:
    assert _held is not None
    invalid = contract_problems(values)
    _held.add((s, r, None) for _, s, r in kept_records(values, invalid) if holds(s))
    return invalid


def _keep_restored(values: Sequence[bytes]) -> None:
    assert _held is not None
    _held.add((s, r, None) for value in values for s, r in records_of_envelopes(value) if holds(s))


def _recompute(subjects: list[str], now: datetime) -> Recomputed:
    assert _held is not None
    return _held.recompute(subjects, now)


class HelperProcess:
    """The service's side of the helper. Once the process is gone, everything is done in the service."""

    def __init__(self, rules_file: Path | None, on_gone: Callable[[], None]) -> None:
        self._pool = helper_process(_start, (rules_file,))
        self._on_gone = on_gone

    @property
    def pid(self) -> int | None:
        """The helper's process id; None when there is none (a single CPU, or it died)."""
        processes = list(getattr(self._pool, "_processes", None) or {})
        return processes[0] if processes else None

    def holds(self, subject: str) -> bool:
        return self._pool is not None and holds(subject)

    async def validated(self, values: list[bytes]) -> list[Invalid]:
        """The invalid events among `values`; the helper keeps the valid ones of its persons."""
        if self._pool is not None and values:
            try:
                return await asyncio.get_running_loop().run_in_executor(self._pool, _validate_and_keep, values)
            except BrokenProcessPool:
                self._gone()
        return contract_problems(values)

    async def restored(self, values: list[bytes]) -> None:
        """Hands the helper the events restored from the table (values of `envelopes_value`)."""
        if self._pool is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(self._pool, _keep_restored, values)
            except BrokenProcessPool:
                self._gone()

    def recompute(self, subjects: list[str], now: datetime) -> Callable[[], Recomputed]:
        if self._pool is None:
            raise HelperGone()
        try:
            future: Future[Recomputed] = self._pool.submit(_recompute, subjects, now)
        except BrokenProcessPool:
            self._gone()
            raise HelperGone() from None

        def result() -> Recomputed:
            try:
                return future.result()
            except BrokenProcessPool:
                self._gone()
                raise HelperGone() from None

        return result

    def _gone(self) -> None:
        if self._pool is not None:
            log.warning("the helper process is gone; the service does all the work itself")
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            self._on_gone()

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
