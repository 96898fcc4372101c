"""`kim demo`: publish a realistic synthetic district through the gateway (§7)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from kim.demo.district import DISTRICT, district_span, generate_district
from kim.demo.publish import DemoError, DemoSummary, counts_per_type, publish_events
from kim.settings import KimSettings


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `kim demo`."""
    parser.add_argument("--persons", type=_positive_int, default=1300,
                        help="persons cared for in the district (default: 1300, Landkreis Biberach's size)")
    parser.add_argument("--years", type=_positive_float, default=1.0,
                        help="length of the history in years, rounded to whole months (default: 1); "
                             "it ends on 1 January 2026")
    parser.add_argument("--seed", type=int, default=7,
                        help="the same seed gives the same events with the same ids (default: 7)")
    parser.add_argument("--gateway", default="http://127.0.0.1:8080", help="the gateway's base URL")
    parser.add_argument("--dry-run", action="store_true", help="print the counts per event type, publish nothing")
    parser.add_argument("--out", type=Path, metavar="FILE", help="also write the events to FILE as a JSON array")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def token_secret(settings: KimSettings) -> str:
    if settings.auth_hs256_secret:
        return settings.auth_hs256_secret
    if settings.oidc_issuer:
        raise DemoError("the demo signs development tokens (HS256), but the services take tokens of "
                        f"{settings.oidc_issuer}; set KIM_AUTH_HS256_SECRET for a demo installation")
    from kim.up import development_secret

    return development_secret(settings)


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C or SIGTERM ends the run after the batch under way, with a summary."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    previous = {signum: signal.signal(signum, request_stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _table(per_type: dict[str, int]) -> str:
    return "\n".join(f"  {name:<28} {count:>7,}" for name, count in per_type.items())


def _header(persons: int, years: float, seed: int, events: list[dict[str, Any]]) -> str:
    first, last = district_span(years)
    return (f"{DISTRICT}, seed {seed}: {persons:,} persons from {first} to {last}, "
            f"{len(events):,} events")


def _report(summary: DemoSummary) -> str:
    state = "interrupted" if summary.stopped else "published"
    return (f"{state} in {summary.seconds:.1f} s: {summary.accepted:,} accepted, "
            f"{summary.duplicates:,} duplicates (already published)")


def run(args: argparse.Namespace, settings: KimSettings) -> int:
    """Run `kim demo` with parsed `args`; the exit status."""
    stop = threading.Event()
    with _stop_on_signals(stop):
        return publish_district(settings, stop, persons=args.persons, years=args.years, seed=args.seed,
                                gateway=args.gateway, out=args.out, dry_run=args.dry_run,
                                progress=not args.no_progress)


def publish_district(settings: KimSettings, stop: threading.Event, *, persons: int = 1300, years: float = 1.0,
                     seed: int = 7, gateway: str = "http://127.0.0.1:8080", out: Path | None = None,
                     dry_run: bool = False, progress: bool = True) -> int:
    """Generate the district and publish it; `stop` ends the publishing between batches.
    Also what `kim up --demo` runs once the stack is ready."""
    events = generate_district(persons, years, seed)
    if out:
        out.write_bytes(orjson.dumps(events, option=orjson.OPT_INDENT_2))
    print(_header(persons, years, seed, events))
    if dry_run:
        print(_table(counts_per_type(events)))
        print("dry run: nothing published")
        return 0
    try:
        summary = publish_events(events, gateway, token_secret(settings), seed=seed,
                                 progress=progress and sys.stderr.isatty(), stop_event=stop)
    except DemoError as exc:
        print(f"kim demo: {exc}", file=sys.stderr)
        return 1
    print(_table(summary.per_type))
    print(_report(summary))
    if summary.stopped:
        print("run the same command again to publish the rest; what was published comes back as duplicates",
              file=sys.stderr)
        return 130
    return 0
