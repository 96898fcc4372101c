"""`kim demo`: a realistic synthetic district, generated and published through the gateway.

- `generate_district(persons, years, seed, start=None)`: the events, deterministic.
- `run_demo(gateway_url, secret, persons, years, seed, progress=True, stop_event=None)`:
  generate and publish; returns a `DemoSummary`.
- `add_arguments(parser)` and `run(args, settings)`: the command line.
"""

from kim.demo.command import add_arguments, run
from kim.demo.district import DEFAULT_END, DISTRICT, district_span, generate_district
from kim.demo.publish import DemoError, DemoSummary, batches, counts_per_type, publish_events, run_demo

__all__ = [
    "DEFAULT_END",
    "DISTRICT",
    "DemoError",
    "DemoSummary",
    "add_arguments",
    "batches",
    "counts_per_type",
    "district_span",
    "generate_district",
    "publish_events",
    "run",
    "run_demo",
]
