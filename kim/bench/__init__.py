"""`kim bench NAME`: benchmarks that print numbers (targets are in the issues, not in tests).

Every module of this package is one benchmark, named after the module, with
`add_arguments(parser)`, `run(args, settings) -> int` and a docstring whose
first line is its help.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import signal
import sys

from kim.settings import KimSettings


def _benchmarks() -> dict[str, str]:
    return {m.name: f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, module_name in sorted(_benchmarks().items()):
        module = importlib.import_module(module_name)
        bench = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        bench.set_defaults(bench_module=module)
        module.add_arguments(bench)


def run(args: argparse.Namespace, settings: KimSettings) -> int:
    # A benchmark stopped with `kill` stops its scratch broker and services (their `finally` blocks run);
    # by default SIGTERM ends Python without them, and the broker runs in a session of its own.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    return args.bench_module.run(args, settings)
